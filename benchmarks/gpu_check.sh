#!/usr/bin/env bash
# GPU check of the GPU recipes on one CUDA GPU (< 8 minutes on an H100 / H200); flags go to benchmarks/gpu_check.py
# (--help). Writes the table to stdout and gpu_check.json (or --out FILE) next to where it runs.
#   bash benchmarks/gpu_check.sh [--recipes sams,difficulty] [--dpo-steps 10] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
case " $* " in
  *" --out "*|*" --out="*) exec "$PYTHON" benchmarks/gpu_check.py "$@" ;;
  *) exec "$PYTHON" benchmarks/gpu_check.py --out gpu_check.json "$@" ;;
esac
