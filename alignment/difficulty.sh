#!/usr/bin/env bash
# Difficulty-based selection (Qi et al.): a selection model (DPO on every pair of Skywork-Reward-Preference-80K), the
# 10% of pairs with the smallest DPO implicit-reward gap, then DPO and a reward model trained on that 10%
# (alignment/configs/difficulty.yaml). DPO on one node of 8 x 80 GB GPUs (ZeRO-3); selection and reward model on one.
#   bash alignment/difficulty.sh [--dry-run] [--base M] [--selection-model P] [--seed N] [--out DIR]
#       [-- TRAIN_DPO FLAGS]
# Options: --help. The runner: alignment/pipeline/offline.py.
# Env: PYTHON (default: python on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.offline difficulty "$@"
