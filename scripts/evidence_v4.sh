#!/usr/bin/env bash
# Evidence v4 (about 9.3 hours on 2 cores by benchmarks/results/evidence_v4_design/budget.md; resumable at run
# granularity, also from a fresh checkout: rerun to continue). Cell A first (it extends v3 pair A, whose records it
# carries), then cell B'. Both read the published ResNet-56, the same bytes on every machine. Run it alone, in the
# background:
#   nohup bash scripts/evidence_v4.sh > runs/evidence_v4.log 2>&1 &
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
export OMP_NUM_THREADS=2
.venv/bin/hkt compare -c configs/evidence_v4_resnet8.yaml
.venv/bin/hkt compare -c configs/evidence_v4_vit.yaml
