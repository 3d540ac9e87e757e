#!/usr/bin/env bash
# The samplers paper's Safe-RLHF comparison (alignment/configs/safe_rlhf.yaml): alpaca-7b-reproduced, 3
# iterations of online DPO per sampler, one node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3 for training).
#   bash alignment/scripts/safe_rlhf.sh [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm]
#       [-- PIPELINE FLAGS]
# Options: --help. The shared runner: alignment/scripts/paper_recipe.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/paper_recipe.sh" safe_rlhf "$@"
