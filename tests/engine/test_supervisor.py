import json
import time

import psutil

from engine.supervisor import run_child


def script(tmp_path, **kwargs):
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"events": str(tmp_path / "events.jsonl"), **kwargs}))
    return path


def run(tmp_path, on_progress=lambda s: True, **kwargs):
    timeout = kwargs.pop("timeout", None)
    return run_child(
        job_file=script(tmp_path, **kwargs),
        events_file=tmp_path / "events.jsonl",
        log_file=tmp_path / "child.log",
        on_progress=on_progress,
        interval=0.1,
        poll=0.05,
        timeout=timeout,
        module="tests.engine.scripted_child",
    )


def alive(pid: int) -> bool:
    try:  # a zombie is dead for our purposes
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_progress_is_reported_while_the_child_runs(tmp_path):
    seen = []
    result = run(tmp_path, on_progress=lambda s: seen.append(s.get("percent")) or True, steps=10, sleep=0.1)
    assert result.returncode == 0 and result.error is None and not result.stopped
    assert result.state["percent"] == 100.0 and result.state["losses"] == {"loss": 0.1}
    assert any(p is not None and 0 < p < 100 for p in seen), seen


def test_the_events_read_while_the_child_ran_are_kept_whole(tmp_path):
    from engine.events import read_events

    result = run(tmp_path, steps=7, sleep=0.03)
    assert result.returncode == 0
    kinds = [e["event"] for e in result.events]
    assert kinds == ["start"] + ["iter"] * 7  # each event once, in order: nothing read twice, nothing lost
    assert result.events == read_events(tmp_path / "events.jsonl")


def test_a_failing_child_reports_its_exception_line(tmp_path):
    result = run(tmp_path, steps=1, **{"raise": "corrupt image tile_7.jpg"})
    assert result.returncode == 1
    assert result.error == "RuntimeError: corrupt image tile_7.jpg"
    assert "Traceback" in result.log_tail


def test_stop_request_ends_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    result = run(
        tmp_path,
        on_progress=lambda s: (s.get("iter") or 0) < 2,
        steps=1000,
        sleep=0.05,
        ignore_term=True,
        grandchild_pid_file=str(pid_file),
    )
    assert result.stopped and result.returncode != 0 and result.error is None
    assert time.monotonic() - started < 15  # SIGTERM ignored: SIGKILL after the grace period
    assert not alive(int(pid_file.read_text()))


def test_timeout_stops_the_child(tmp_path):
    result = run(tmp_path, steps=1000, sleep=0.05, timeout=0.5)
    assert result.timed_out and result.returncode != 0


def test_the_supervisor_sleeps_between_ticks_and_wakes_when_the_child_exits(tmp_path, monkeypatch):
    from engine.supervisor import ExitWatch

    waits, original = [], ExitWatch.wait
    monkeypatch.setattr(ExitWatch, "wait", lambda self, timeout: waits.append(timeout) or original(self, timeout))
    started = time.monotonic()
    result = run_child(
        job_file=script(tmp_path, steps=5, sleep=0.1),
        events_file=tmp_path / "events.jsonl",
        log_file=tmp_path / "child.log",
        on_progress=lambda s: True,
        interval=30,
        poll=30,
        module="tests.engine.scripted_child",
    )
    assert result.returncode == 0 and result.state["percent"] == 100.0
    assert time.monotonic() - started < 15  # the exit ended the 30 s sleep
    assert len(waits) <= 2, waits  # no wake-ups in between (Popen.wait(timeout) would poll every 50 ms)


def test_the_child_gets_a_minimal_environment(tmp_path, monkeypatch):
    from engine.supervisor import child_environment

    monkeypatch.setenv("DJANGO_SECRET_KEY", "k" * 50)
    monkeypatch.setenv("POSTGRES_PASSWORD", "pw")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("SITE_LICENSE", "lic")
    env = child_environment()
    assert "DJANGO_SECRET_KEY" not in env and "POSTGRES_PASSWORD" not in env and "SITE_LICENSE" not in env
    assert env["OMP_NUM_THREADS"] == "2" and env["PATH"]
    assert child_environment(("SITE_LICENSE",))["SITE_LICENSE"] == "lic"
    # And that is what the child process really sees.
    dump = tmp_path / "env.json"
    result = run_child(
        job_file=script(tmp_path, steps=1, dump_env=str(dump)),
        events_file=tmp_path / "events.jsonl",
        log_file=tmp_path / "child.log",
        on_progress=lambda s: True,
        interval=0.1,
        poll=0.05,
        module="tests.engine.scripted_child",
    )
    assert result.returncode == 0, result.log_tail
    seen = json.loads(dump.read_text())
    assert "DJANGO_SECRET_KEY" not in seen and "POSTGRES_PASSWORD" not in seen and seen["OMP_NUM_THREADS"] == "2"


def test_the_child_runs_in_its_jobs_folder_not_the_codes(tmp_path):
    job = tmp_path / "run-7"
    job.mkdir()
    result = run(job, steps=1, dump_cwd=str(tmp_path / "cwd.txt"))
    assert result.returncode == 0, result.log_tail
    assert (tmp_path / "cwd.txt").read_text() == str(job)  # what it writes beside itself goes with the run
