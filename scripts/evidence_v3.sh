#!/usr/bin/env bash
# Evidence v3 (about 12 hours on 2 cores; resumable at run granularity: rerun to continue). Pair B first: it owns the
# parent's prepare run, which pair A reads. Run it alone, in the background:
#   nohup bash scripts/evidence_v3.sh > runs/evidence_v3.log 2>&1 &
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
export OMP_NUM_THREADS=2
.venv/bin/hkt compare -c configs/evidence_v3_vit.yaml
.venv/bin/hkt compare -c configs/evidence_v3_resnet8.yaml
