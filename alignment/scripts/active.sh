#!/usr/bin/env bash
# AE-DPO / US-DPO offline (Mehta et al.): SFT on the first pretrain_fraction 0.3 of an HH-style preference set, then
# DPO on the rest where every step trains on the 1/3 of a candidate batch with the largest active-exploration width
# (ae) or Monte Carlo dropout uncertainty (us) (alignment/configs/active.yaml). DPO on one node of 8 GPUs (ZeRO-3).
#   bash alignment/scripts/active.sh [--dry-run] [--method ae|us|random_subset|all] [--seed N] [--out DIR]
#       [--model M] [-- TRAIN_DPO FLAGS]
# Options: --help. Shared machinery: alignment/scripts/offline_recipe.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRIPT_NAME=active.sh
source alignment/scripts/offline_recipe.sh

usage() {
    cat <<EOF
usage: alignment/scripts/active.sh [--dry-run] [--method M] [--seed N] [--out DIR] [--model M] [--config YAML]
                                   [--num-processes N] [--qlora] [--fresh] [-- TRAIN_DPO FLAGS]

Offline active DPO (Mehta et al., AE-DPO / US-DPO), recipe alignment/configs/active.yaml:
  1. python -m alignment.prepare_data (the recipe's data: section: Anthropic/hh-rlhf, --sft-fraction 0.3)
       --out DIR --name data: DIR/data/sft.jsonl (30% of the pairs, whole prompts, the chosen responses) and
       DIR/data/preferences.jsonl (the other 70%)
  2. python -m alignment.sft (the recipe's sft: section) --data DIR/data/sft.jsonl --out DIR --name sft
  3. accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.train_dpo --config YAML
       --policy DIR/sft --preferences DIR/data --selector M --seed N --out DIR/M --name seedN
Steps 1 and 2 are shared by every method and seed. A finished stage is never rerun: run the same command again to
resume.

  --dry-run          check every command with its own module's parser and checks and print it; run, load and
                     write nothing (no GPU, model or dataset needed)
  --method M         ae (default: active exploration), us (uncertainty sampling), random_subset (a random 1/3 of
                     every candidate batch) or all (DPO on every pair; alias none)
  --seed N           seed of the DPO run (default 0)
  --out DIR          output folder (default runs/alignment/active)
  --model M          the model to SFT (default: the recipe's, openai-community/gpt2-large)
  --config YAML      the recipe (default alignment/configs/active.yaml)
  --num-processes N  accelerate launch processes for DPO (default: the accelerate config's, 8)
  --qlora            QLoRA for the DPO stage (the released code's qlora=true): 4-bit NF4 base weights (bitsandbytes,
                     CUDA only) + LoRA adapters (peft): train_dpo --lora-r 16 --load-in-4bit
  --fresh            rerun finished stages
  -- FLAGS           passed on to alignment.train_dpo (they override the recipe), e.g. -- --passes 8
  -h, --help         this help
Env: PYTHON (default: python on PATH).
EOF
}

DRY_RUN=0
FRESH=0
METHOD=ae
SEED=0
OUT=runs/alignment/active
CONFIG=alignment/configs/active.yaml
BASE=""
NPROC=""
QLORA=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --fresh) FRESH=1; shift ;;
        --qlora) QLORA=1; shift ;;
        --method) need "$@"; METHOD="$2"; shift 2 ;;
        --seed) need "$@"; SEED="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --model) need "$@"; BASE="$2"; shift 2 ;;
        --config) need "$@"; CONFIG="$2"; shift 2 ;;
        --num-processes) need "$@"; NPROC="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$METHOD" == none || "$METHOD" == full ]] && METHOD=all  # aliases of the canonical name
check_choice --method "$METHOD" ae us random_subset all
check_uint --seed "$SEED"
[[ -z "$NPROC" ]] || check_pos --num-processes "$NPROC"
QLORA_FLAGS=()
[[ $QLORA == 0 ]] || QLORA_FLAGS=(--lora-r 16 --load-in-4bit)
[[ -f "$CONFIG" ]] || die "--config: no such file '$CONFIG'"

recipe_vars "$CONFIG" "flags|DATA_FLAGS|data|alignment.prepare_data|out,name" \
    "flags|SFT_FLAGS|sft|alignment.sft|data,out,name" "words|LAUNCH|launch"
[[ -z "$NPROC" ]] || LAUNCH+=(--num_processes "$NPROC")
MODEL_FLAG=()
[[ -z "$BASE" ]] || MODEL_FLAG=(--model "$BASE")

stage "the SFT / preference split of the data (sft_fraction)" "$OUT/data" \
    "$PYTHON" -m alignment.prepare_data ${DATA_FLAGS[@]+"${DATA_FLAGS[@]}"} --out "$OUT" --name data
stage "SFT on the chosen responses of the SFT part" "$OUT/sft" \
    "$PYTHON" -m alignment.sft ${SFT_FLAGS[@]+"${SFT_FLAGS[@]}"} ${MODEL_FLAG[@]+"${MODEL_FLAG[@]}"} \
    --data "$OUT/data/sft.jsonl" --out "$OUT" --name sft
stage "DPO on the other pairs with selector $METHOD" "$OUT/$METHOD/seed$SEED" \
    "${LAUNCH[@]}" -m alignment.train_dpo --config "$CONFIG" --policy "$OUT/sft" --preferences "$OUT/data" \
    --selector "$METHOD" --seed "$SEED" --out "$OUT/$METHOD" --name "seed$SEED" ${QLORA_FLAGS[@]+"${QLORA_FLAGS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"}
run_stages
