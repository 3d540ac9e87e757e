#!/usr/bin/env bash
# AE-DPO / US-DPO offline (Mehta et al.): SFT on the first pretrain_fraction 0.3 of an HH-style preference set, then
# DPO on the rest where every step trains on the 1/3 of a candidate batch with the largest active-exploration width
# (ae) or Monte Carlo dropout uncertainty (us) (alignment/configs/active.yaml). DPO on one node of 8 GPUs (ZeRO-3).
#   bash alignment/active.sh [--dry-run] [--method ae|us|random_subset|all] [--seed N] [--out DIR]
#       [--model M] [-- TRAIN_DPO FLAGS]
# Options: --help. The runner: alignment/pipeline/offline.py.
# Env: PYTHON (default: python on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.offline active "$@"
