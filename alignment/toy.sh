#!/usr/bin/env bash
# The sampler comparison on the toy task, on a laptop CPU (about 8 minutes on 2 cores, 10 seeds): SFT policy and reward model,
# the iterative DPO pipeline (alignment/configs/toy.yaml) per sampler and seed, then a table and a reward-vs-KL figure.
#   bash alignment/toy.sh [--out DIR] [--dry-run]          (default DIR: runs/alignment/toy)
# Options and environment variables (SAMPLERS, SEEDS, JOBS, RECIPE, SFT_FLAGS, RM_FLAGS, PIPELINE_FLAGS): --help.
# The runner: alignment/pipeline/toy.py. Rerunning resumes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
exec "$PYTHON" -m alignment.pipeline.toy toy "$@"
