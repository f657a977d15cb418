#!/usr/bin/env bash
# The README's test command: set up, start a throwaway PostgreSQL cluster (the many-workers test), then run the whole
# test suite (about 13 minutes on 2 CPU cores alone, plus the install).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
source "$ROOT/scripts/postgres.sh"
pg_start
trap pg_stop EXIT
cd "$ROOT" && .venv/bin/python -m pytest -q "$@"
