#!/usr/bin/env bash
# The samplers paper's Iterative-Prompt comparison (alignment/configs/iterative_prompt.yaml): open_llama_3b_v2,
# 3 iterations of online DPO per sampler, one node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3 for training). Mix-P's
# on-policy pair is in the recipe (per_sampler:).
#   bash alignment/scripts/iterative_prompt.sh [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm]
#       [-- PIPELINE FLAGS]
# Options: --help. The shared runner: alignment/scripts/paper_recipe.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/paper_recipe.sh" iterative_prompt "$@"
