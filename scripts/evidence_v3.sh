#!/usr/bin/env bash
# Evidence v3 (about 12 hours on 2 cores in all; resumable at run granularity, also from a fresh checkout: rerun to
# continue). Pair B is complete: its summary is rebuilt from the committed records (its adapted parent is retrained
# per session and another CPU does not reproduce it, so a new pair-B run would stop at the prepare check). Pair A
# reads the published ResNet-56, the same on every machine. Run it alone, in the background:
#   nohup bash scripts/evidence_v3.sh > runs/evidence_v3.log 2>&1 &
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
export OMP_NUM_THREADS=2
.venv/bin/hkt compare -c configs/evidence_v3_vit.yaml --summarize-only
.venv/bin/hkt compare -c configs/evidence_v3_resnet8.yaml
