#!/bin/sh
# The image's sub-commands: web | worker | migrate | manage <command> [args] | health | <any program>.
# Secrets and the database come from the environment (DJANGO_SECRET_KEY, POSTGRES_*); see compose.yaml.
set -eu
cd /app
role_file=/tmp/dumpsite-role

case "${1:-web}" in
  web)
    shift 2>/dev/null || true
    echo web > "$role_file"
    # /metrics sums every gunicorn process's request and database metrics (prometheus_client's multiprocess mode).
    export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/dumpsite-metrics}"
    exec gunicorn -c python:dumpsite.gunicorn_conf dumpsite.wsgi --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_CONCURRENCY:-4}" \
      --timeout "${WEB_TIMEOUT:-120}" --access-logfile - "$@"
    ;;
  worker)
    shift
    echo worker > "$role_file"
    exec python manage.py worker "$@"
    ;;
  migrate)
    # Schema, role groups (data migrations) and the cache table; safe to run again (a one-shot service).
    python manage.py migrate --noinput
    exec python manage.py createcachetable
    ;;
  manage)
    shift
    exec python manage.py "$@"
    ;;
  health)
    # The check of the sub-command this container runs: the web answers its sign-in page; a worker's cluster has
    # heartbeated within the limit (DUMPSITE_HEARTBEAT_LIMIT).
    case "$(cat "$role_file" 2>/dev/null || echo none)" in
      web) exec python /app/docker/healthcheck.py ;;
      worker) exec python manage.py worker --check ;;
      *) exit 0 ;;
    esac
    ;;
  *)
    exec "$@"
    ;;
esac
