#!/usr/bin/env bash
# The README's test command: set up, then run the whole test suite (a few minutes on 2 CPU cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT" && .venv/bin/python -m pytest -q "$@"
