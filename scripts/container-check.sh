#!/usr/bin/env bash
# Build the image here with buildah and prove it works: migrations against this machine's PostgreSQL (a database
# of its own), the web process and a worker from the image, the API schema and the admin's sign-in page, a demo
# dataset trained for one epoch by the containerised worker to a registered model, and what the image must not
# hold (.env, var/, a compiler) or do (run as root). Cleans up after itself (containers, database, folders; the
# images stay as the build's cache) and prints each step's time. Not part of .ci/run: it takes long.
#   bash scripts/container-check.sh                    # reuses buildah's layers and pip's wheel cache
#   CHECK_NO_CACHE=1 bash scripts/container-check.sh   # a cold build: no layers, an empty pip cache (mmcv compiles)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=localhost/debian:bookworm-slim
IMAGE=localhost/dumpsite:check
ISO=(--isolation chroot)
WEB_PORT=${CHECK_WEB_PORT:-18765}
DB=dumpsite_container_check
ROLE=dumpsite_container_check
SCRATCH=$(mktemp -d /tmp/container-check.XXXXXX)
PIDS=()
started=$(date +%s)
last=$started

step() {
  local now; now=$(date +%s)
  printf '   (%d s)\n== %s\n' "$((now - last))" "$*"
  last=$now
}
fail() { echo "FAILED: $*" >&2; exit 1; }
psql_admin() { PGOPTIONS='-c client_min_messages=warning' runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
  for c in inspect web worker; do buildah rm "check-$c-$$" >/dev/null 2>&1; done
  psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null
  psql_admin -d postgres -c "DROP ROLE IF EXISTS $ROLE" 2>/dev/null
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "== Tools: buildah, podman (for importing the base), debootstrap"
need=""
for tool in buildah podman debootstrap; do command -v "$tool" >/dev/null || need="$need $tool"; done
if [ -n "$need" ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
fi

step "Base image $BASE"
if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "present"
else
  mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  debootstrap --variant=minbase bookworm "$SCRATCH/rootfs" "$mirror" >"$SCRATCH/debootstrap.log" 2>&1 \
    || { tail -20 "$SCRATCH/debootstrap.log"; fail "debootstrap"; }
  tar -C "$SCRATCH/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$SCRATCH/rootfs"
  echo "made from $mirror"
fi

step "Building $IMAGE (mmcv compiled in the builder stage; pip's wheel cache and this machine's pip set-up mounted)"
build_started=$(date +%s)
cache_args=(--layers)
pip_cache="$HOME/.cache/pip"
if [ "${CHECK_NO_CACHE:-0}" = 1 ]; then cache_args=(--no-cache); pip_cache="$SCRATCH/pip-cache"; fi
mkdir -p "$pip_cache"
pip_mounts=(-v "$pip_cache:/root/.cache/pip")
pip_args=(--build-arg TORCH_INDEX_URL=)
if [ -d /opt/wheels ]; then pip_mounts+=(-v /opt/wheels:/opt/wheels:ro); pip_args+=(--build-arg PIP_FIND_LINKS=/opt/wheels); fi
# This machine reaches PyPI through a proxy with its own certificate authority: the build trusts the host's bundle.
pip_mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
pip_args+=(--build-arg PIP_CERT=/run/host-ca.crt)
buildah bud "${ISO[@]}" --format docker "${cache_args[@]}" -f Dockerfile -t "$IMAGE" --build-arg BASE_IMAGE="$BASE" \
  --build-arg MAX_JOBS="$(nproc)" "${pip_args[@]}" "${pip_mounts[@]}" . >"$SCRATCH/build.log" 2>&1 \
  || { tail -40 "$SCRATCH/build.log"; fail "the image did not build"; }
build_s=$(( $(date +%s) - build_started ))
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
grep -E '^mmcv .* torch ' "$SCRATCH/build.log" | tail -1 || true
echo "built in ${build_s} s ($([ "${CHECK_NO_CACHE:-0}" = 1 ] && echo cold || echo with caches)); image size ${size}"

container() {  # a container of the image (its own rootfs), named check-$1-<pid>; cleanup removes it by that name
  buildah from --name "check-$1-$$" "$IMAGE"
}

step "What the image holds"
INSPECT=$(container inspect)
uid=$(buildah run "${ISO[@]}" "$INSPECT" -- id -u)
[ "$uid" != 0 ] || fail "the image runs as root"
echo "runs as uid $uid ($(buildah run "${ISO[@]}" "$INSPECT" -- id -un))"
buildah run "${ISO[@]}" "$INSPECT" -- sh -c 'test ! -e /app/.env && test ! -e /app/var && test ! -e /app/.venv' \
  || fail "the image holds .env, var/ or .venv"
echo "no .env, no var/, no .venv in /app"
compilers=$(buildah run "${ISO[@]}" "$INSPECT" -- sh -c 'for c in gcc cc g++ c++ clang make; do command -v $c; done; true')
[ -z "$compilers" ] || fail "the runtime stage holds a compiler: $compilers"
echo "no compiler in the runtime stage"
buildah run "${ISO[@]}" "$INSPECT" -- python -c "import mmcv, mmdet, torch; from mmcv.ops import nms; \
print('python imports: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"

step "A database of its own on this machine's PostgreSQL"
pg_isready -q -h 127.0.0.1 -p 5432 || fail "PostgreSQL is not running (bash scripts/setup.sh --setup-only starts it)"
PASSWORD=$(python3 -c "import secrets; print(secrets.token_urlsafe(18))")
psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql_admin -d postgres -c "DROP ROLE IF EXISTS $ROLE"
psql_admin -d postgres -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE $DB OWNER $ROLE"
psql_admin -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS postgis"
mkdir -p "$SCRATCH/media" "$SCRATCH/runs"
chown 10001:10001 "$SCRATCH/media" "$SCRATCH/runs"
ENV=(
  -e "DJANGO_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
  -e POSTGRES_HOST=127.0.0.1 -e POSTGRES_PORT=5432 -e "POSTGRES_DB=$DB" -e "POSTGRES_USER=$ROLE"
  -e "POSTGRES_PASSWORD=$PASSWORD" -e "PORT=$WEB_PORT" -e WEB_CONCURRENCY=2 -e DUMPSITE_MIN_FREE_BYTES=0
  -e DUMPSITE_HOST_ID=container-check
  # The host folders are mounted beside the image's declared volumes (/data/media, /data/runs), not over them:
  # buildah run mounts an image's VOLUME paths itself, and which of the two mounts wins on the same path varies.
  -e DUMPSITE_MEDIA_ROOT=/mnt/media -e DUMPSITE_WORK_ROOT=/mnt/runs
  -v "$SCRATCH/media:/mnt/media" -v "$SCRATCH/runs:/mnt/runs"
)
run_in() {  # run_in CONTAINER ARGS...: the image's entrypoint with ARGS, as the image's user
  local c=$1; shift
  buildah run "${ISO[@]}" "${ENV[@]}" "$c" -- /app/docker/entrypoint.sh "$@"
}

step "Migrations from the image (entrypoint: migrate)"
WEB=$(container web)
run_in "$WEB" migrate 2>&1 | tail -3

step "The web process (entrypoint: web, gunicorn on port $WEB_PORT)"
setsid buildah run "${ISO[@]}" "${ENV[@]}" "$WEB" -- /app/docker/entrypoint.sh web >"$SCRATCH/web.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do curl -s -o /dev/null "http://127.0.0.1:$WEB_PORT/admin/login/" && break; sleep 1; done
for path in /api/schema/ /admin/login/; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WEB_PORT$path")
  [ "$code" = 200 ] || { tail -30 "$SCRATCH/web.log"; fail "$path answered $code"; }
  echo "$path -> $code"
done
run_in "$WEB" health && echo "web health check: healthy"

step "A worker (entrypoint: worker)"
WORKER=$(container worker)
setsid buildah run "${ISO[@]}" "${ENV[@]}" "$WORKER" -- /app/docker/entrypoint.sh worker >"$SCRATCH/worker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do grep -q "running" "$SCRATCH/worker.log" 2>/dev/null && break; sleep 1; done
sleep "${CHECK_WORKER_SETTLE:-3}"  # the agent's first heartbeat
run_in "$WORKER" health || { tail -30 "$SCRATCH/worker.log"; fail "the worker is not healthy"; }
echo "worker health check: healthy"

step "A demo dataset, trained for 1 epoch by the containerised worker (entrypoint: manage ...)"
run_in "$WEB" manage shell -v 0 -c "from core.commands import ensure_operator; ensure_operator()"
run_in "$WEB" manage make_demo_dataset --name demo --images 40 --seed 1 2>"$SCRATCH/demo.err" \
  || { cat "$SCRATCH/demo.err"; fail "the demo dataset was not made"; }
run_in "$WEB" manage train --dataset demo --name "container check" --epochs 1 --wait >"$SCRATCH/train.out" 2>&1 \
  || { tr '\r' '\n' <"$SCRATCH/train.out" | tail -20; tail -40 "$SCRATCH/worker.log"; fail "the run did not succeed"; }
tr '\r' '\n' <"$SCRATCH/train.out" | grep -E "^(Queued|Run #)"
grep -q "Registered model" "$SCRATCH/train.out" || fail "no model was registered"
# The web and the worker shared the media and run folders: the worker's model files are on the host's folder.
models=$(find "$SCRATCH/media" -name '*.pth' | wc -l)
[ "$models" -ge 1 ] || fail "the registered model's checkpoint is not in the shared media folder"
echo "shared media folder holds $models checkpoint(s) and $(find "$SCRATCH/media" -name '*.jpg' | wc -l) images"

step "Done"
echo "container check passed in $(( $(date +%s) - started )) s (image build ${build_s} s, image size ${size})"
