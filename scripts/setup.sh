#!/usr/bin/env bash
# Set up a fresh machine: Fashion-MNIST (Debian package), a virtual environment with pinned PyTorch, hkt.
# Idempotent: a second run only checks. Source it to also get the offline data/weights defaults.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y dataset-fashion-mnist >/dev/null; }
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-ci.txt
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,timm,hf,postgres]"
