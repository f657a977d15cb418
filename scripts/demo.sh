#!/usr/bin/env bash
# The README's main command: set up, then run the offline Fashion-MNIST demo (ce vs kd vs hkt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT" && .venv/bin/hkt demo "$@"
