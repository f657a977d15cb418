# Offline defaults: point hkt at the local mirror in ../shared when it exists (real users download instead).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -d "$ROOT/../shared/data" ]; then export HKT_DATA_DIR="${HKT_DATA_DIR:-$ROOT/../shared/data}"; fi
if [ -d "$ROOT/../shared/weights" ]; then export HKT_WEIGHTS_DIR="${HKT_WEIGHTS_DIR:-$ROOT/../shared/weights}"; fi
export HKT_CACHE_DIR="${HKT_CACHE_DIR:-$ROOT/.cache}"
