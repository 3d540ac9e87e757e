#!/usr/bin/env bash
# Difficulty-based selection (Qi et al.): a selection model (DPO on every pair of Skywork-Reward-Preference-80K), the
# 10% of pairs with the smallest DPO implicit-reward gap, then DPO and a reward model trained on that 10%
# (alignment/configs/difficulty.yaml). DPO on one node of 8 x 80 GB GPUs (ZeRO-3); selection and reward model on one.
#   bash alignment/scripts/difficulty.sh [--dry-run] [--base M] [--selection-model P] [--seed N] [--out DIR]
#       [-- TRAIN_DPO FLAGS]
# Options: --help. Shared machinery: alignment/scripts/offline_recipe.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRIPT_NAME=difficulty.sh
source alignment/scripts/offline_recipe.sh

usage() {
    cat <<EOF
usage: alignment/scripts/difficulty.sh [--dry-run] [--base M] [--selection-model P] [--rm-model M] [--seed N]
                                       [--out DIR] [--config YAML] [--num-processes N] [--no-reward-model]
                                       [--fresh] [-- TRAIN_DPO FLAGS]

Difficulty-based preference data selection (Qi et al.), recipe alignment/configs/difficulty.yaml:
  1. python -m alignment.prepare_data (the recipe's data: section: Skywork/Skywork-Reward-Preference-80K-v0.2)
       --out DIR --name data
  2. accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.train_dpo --config YAML
       --policy BASE --preferences DIR/data --out DIR/seedN --name selection_model   (the selection model;
       skipped with --selection-model P)
  3. python -m alignment.select --method reward_gap --ratio 0.1 (the recipe's select: section)
       --policy DIR/seedN/selection_model --ref BASE --data DIR/data --out DIR/seedN --name select
  4. accelerate launch ... -m alignment.train_dpo --config YAML --policy BASE --preferences DIR/seedN/select
       --out DIR/seedN --name dpo_selected
  5. python -m alignment.reward_model (the recipe's reward_model: section)
       --data DIR/seedN/select/preferences.jsonl --out DIR/seedN --name rm_selected
Step 1 is shared by every seed. A finished stage is never rerun: run the same command again to resume.

  --dry-run            check every command with its own module's parser and checks and print it; run, load and
                       write nothing (no GPU, model or dataset needed)
  --base M             the model both DPO runs start from and the selection's reference (default: the recipe's
                       base:, meta-llama/Llama-3.1-8B-Instruct)
  --selection-model P  use this DPO-trained model to select (its reference must be --base) instead of step 2
  --rm-model M         the reward model's backbone (default: the recipe's, google/gemma-2b-it)
  --seed N             seed of every run after step 1 (default 0)
  --out DIR            output folder (default runs/alignment/difficulty)
  --config YAML        the recipe (default alignment/configs/difficulty.yaml)
  --num-processes N    accelerate launch processes for DPO (default: the accelerate config's, 8); keep 8 pairs
                       per optimizer step, e.g. -- --grad-accum 2 with N = 4
  --no-reward-model    leave out step 5
  --fresh              rerun finished stages
  -- FLAGS             passed on to both alignment.train_dpo runs (they override the recipe)
  -h, --help           this help
Env: PYTHON (default: python on PATH).
EOF
}

DRY_RUN=0
FRESH=0
SEED=0
OUT=runs/alignment/difficulty
CONFIG=alignment/configs/difficulty.yaml
BASE_ARG=""
SELECTION_MODEL=""
RM_MODEL=""
NPROC=""
WITH_RM=1
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --fresh) FRESH=1; shift ;;
        --no-reward-model) WITH_RM=0; shift ;;
        --base) need "$@"; BASE_ARG="$2"; shift 2 ;;
        --selection-model) need "$@"; SELECTION_MODEL="$2"; shift 2 ;;
        --rm-model) need "$@"; RM_MODEL="$2"; shift 2 ;;
        --seed) need "$@"; SEED="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --config) need "$@"; CONFIG="$2"; shift 2 ;;
        --num-processes) need "$@"; NPROC="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
check_uint --seed "$SEED"
[[ -z "$NPROC" ]] || check_pos --num-processes "$NPROC"
[[ -f "$CONFIG" ]] || die "--config: no such file '$CONFIG'"

recipe_vars "$CONFIG" "value|BASE|base" "flags|DATA_FLAGS|data|alignment.prepare_data|out,name" \
    "flags|SELECT_FLAGS|select|alignment.select|policy,ref,data,out,name,seed" \
    "flags|RM_FLAGS|reward_model|alignment.reward_model|data,out,name,seed" \
    "words|LAUNCH|launch"
BASE="${BASE_ARG:-$BASE}"
[[ -z "$NPROC" ]] || LAUNCH+=(--num_processes "$NPROC")
RUN="$OUT/seed$SEED"
SELECTOR_MODEL="${SELECTION_MODEL:-$RUN/selection_model}"
RM_FLAG=()
[[ -z "$RM_MODEL" ]] || RM_FLAG=(--model "$RM_MODEL")

stage "the preference set, checked and exported" "$OUT/data" \
    "$PYTHON" -m alignment.prepare_data ${DATA_FLAGS[@]+"${DATA_FLAGS[@]}"} --out "$OUT" --name data
if [[ -z "$SELECTION_MODEL" ]]; then
    stage "the selection model: DPO on every pair" "$RUN/selection_model" \
        "${LAUNCH[@]}" -m alignment.train_dpo --config "$CONFIG" --policy "$BASE" --preferences "$OUT/data" \
        --seed "$SEED" --out "$RUN" --name selection_model ${EXTRA[@]+"${EXTRA[@]}"}
fi
stage "selection: the pairs with the smallest implicit-reward gap" "$RUN/select" \
    "$PYTHON" -m alignment.select ${SELECT_FLAGS[@]+"${SELECT_FLAGS[@]}"} --policy "$SELECTOR_MODEL" --ref "$BASE" \
    --data "$OUT/data" --seed "$SEED" --out "$RUN" --name select
stage "DPO on the selected pairs" "$RUN/dpo_selected" \
    "${LAUNCH[@]}" -m alignment.train_dpo --config "$CONFIG" --policy "$BASE" --preferences "$RUN/select" \
    --seed "$SEED" --out "$RUN" --name dpo_selected ${EXTRA[@]+"${EXTRA[@]}"}
if [[ $WITH_RM == 1 ]]; then
    stage "a reward model on the selected pairs" "$RUN/rm_selected" \
        "$PYTHON" -m alignment.reward_model ${RM_FLAGS[@]+"${RM_FLAGS[@]}"} ${RM_FLAG[@]+"${RM_FLAG[@]}"} \
        --data "$RUN/select/preferences.jsonl" --seed "$SEED" --out "$RUN" --name rm_selected
fi
run_stages
