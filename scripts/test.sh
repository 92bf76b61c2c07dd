#!/usr/bin/env bash
# Run the whole test suite (real PostGIS, real django-q2 workers, real MMDetection training on the CPU).
# Makes sure the set-up is in place first (idempotent, quick when it is). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --setup-only
# Lint, import order and format first (ruff.toml): seconds, and a failure names the file and line.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Types (mypy.ini): Django's and DRF's plugins, every function of the engine and of the services annotated.
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
