#!/usr/bin/env bash
# SamS (Huang et al., NeurIPS 2025): offline DPO on an UltraFeedback-style preference set where a scheduler keeps
# half of every batch (alignment/configs/sams.yaml, the paper's per-model beta and lr), or its random_subset control.
# One node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3).
#   bash alignment/sams.sh [--dry-run] [--model llama3|mistral|gemma2] [--selector sams|random_subset|all]
#       [--seed N] [--out DIR] [-- TRAIN_DPO FLAGS]
# Options: --help. The runner: alignment/pipeline/offline.py.
# Env: PYTHON (default: python on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.offline sams "$@"
