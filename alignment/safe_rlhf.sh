#!/usr/bin/env bash
# The samplers paper's Safe-RLHF comparison (alignment/configs/safe_rlhf.yaml): alpaca-7b-reproduced, 3
# iterations of online DPO per sampler, one node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3 for training).
#   bash alignment/safe_rlhf.sh [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm]
#       [-- PIPELINE FLAGS]
# Options: --help. The runner: alignment/pipeline/paper.py.
# Env: PYTHON (default: python on PATH), BACKEND.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.paper safe_rlhf "$@"
