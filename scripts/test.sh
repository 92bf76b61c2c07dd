#!/usr/bin/env bash
# Run the whole test suite (real PostGIS, real django-q2 workers, real MMDetection training on the CPU).
# Makes sure the set-up is in place first (idempotent, quick when it is). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --setup-only
# The labelling tools' own readers (datumaro, the Label Studio SDK), test-only, in an environment of their own: they
# need NumPy 2 and the product pins NumPy 1 (requirements-formats.txt). Rebuilt only when that file changes.
# Kept outside the checkout like .venv (scripts/venvs.sh).
. scripts/venvs.sh
FORMATS=$(venv_link .venv-formats formats requirements-formats.txt)
want=$(sha256sum requirements-formats.txt | cut -d' ' -f1)
if [ "$(cat "$FORMATS/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  printf '\n== %s\n' "Installing the labelling tools' readers (test-only, .venv-formats)"
  "$FORMATS/bin/python" -m pip install -q --disable-pip-version-check -r requirements-formats.txt
  echo "$want" > "$FORMATS/.requirements.sha256"
fi
# Lint, import order and format first (ruff.toml): seconds, and a failure names the file and line.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Types (mypy.ini): Django's and DRF's plugins, every function of the engine and of the services annotated. Its
# cache is kept outside the checkout too, so a clean checkout checks what changed: 12 s instead of 65 here. One cache
# per environment: a cache written against other installed packages can crash mypy (seen when onnx came in).
export MYPY_CACHE_DIR=${DUMPSITE_MYPY_CACHE:-/var/cache/dumpsite/mypy/$(basename "$(readlink -f .venv)")}
.venv/bin/mypy
# Two test processes (tests/parallel.py): one's waits on workers, trainings and servers overlap the other's tests.
# Arguments after these win (`-n 0` runs in this process).
exec .venv/bin/python -m pytest -n "${DUMPSITE_TEST_PROCESSES:-2}" --dist worksteal "$@"
