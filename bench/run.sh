#!/usr/bin/env bash
# Run the benchmarks: `bash bench/run.sh` (all) or `bash bench/run.sh api_lists coco_export` (some).
# They use their own database (dumpsite_bench) and media tree under var/bench, never the real ones, and print a
# table of figures measured side by side with their baselines; the run is written to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . ./.env; set +a
export POSTGRES_DB=dumpsite_bench DUMPSITE_MEDIA_ROOT="$PWD/var/bench/media" DUMPSITE_WORK_ROOT="$PWD/var/bench/runs"
runuser -u postgres -- psql -X -q -tc "SELECT 1 FROM pg_database WHERE datname='dumpsite_bench'" | grep -q 1 \
  || runuser -u postgres -- psql -X -q -c "CREATE DATABASE dumpsite_bench OWNER $POSTGRES_USER"
.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python manage.py createcachetable  # the database cache (throttling, the workers' cluster state)
exec .venv/bin/python -m bench "$@"
