#!/usr/bin/env bash
# Which pairs of a noisy offline preference set should DPO train on? The toy comparison (CPU, ~10 minutes): one
# offline preference set with flipped labels, DPO on it per selection method and seed (alignment/configs/
# toy_selection.yaml), then a table and a reward-vs-KL figure.
#   bash alignment/toy_selection.sh [--out DIR] [--dry-run]          (default DIR: runs/alignment/toy_selection)
# Options and environment variables (METHODS, SEEDS, JOBS, FLIP, RATIO, NUM_PROMPTS, RECIPE, SFT_FLAGS, DATA_FLAGS,
# PIPELINE_FLAGS): --help. The runner: alignment/pipeline/toy.py. Rerunning resumes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.toy toy_selection "$@"
