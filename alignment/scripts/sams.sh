#!/usr/bin/env bash
# SamS (Huang et al., NeurIPS 2025): offline DPO on an UltraFeedback-style preference set where a scheduler keeps
# half of every batch (alignment/configs/sams.yaml, the paper's per-model beta and lr), or its random_subset control.
# One node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3).
#   bash alignment/scripts/sams.sh [--dry-run] [--model llama3|mistral|gemma2] [--selector sams|random_subset|all]
#       [--seed N] [--out DIR] [-- TRAIN_DPO FLAGS]
# Options: --help. Shared machinery: alignment/scripts/offline_recipe.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRIPT_NAME=sams.sh
source alignment/scripts/offline_recipe.sh

usage() {
    cat <<EOF
usage: alignment/scripts/sams.sh [--dry-run] [--model M] [--selector S] [--seed N] [--out DIR] [--config YAML]
                                 [--data D] [--split S] [--num-processes N] [--fresh] [-- TRAIN_DPO FLAGS]

SamS batch scheduling for offline DPO (Huang et al., NeurIPS 2025), recipe alignment/configs/sams.yaml:
  1. python -m alignment.prepare_data --data D --split S --out DIR/data --name D-S
       the model's preference set, checked and exported once (alignment.train_dpo reads only a "train" split)
  2. accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.train_dpo --config YAML
       --policy P --preferences DIR/data/D-S --beta B --lr L --selector S --seed N --out DIR/M --name S-seedN
       every batch of 16 pairs is a candidate batch of which the selector keeps 8 (select_ratio 0.5)
A finished stage is never rerun: run the same command again to resume.

  --dry-run          check every command with its own module's parser and checks and print it; run, load and
                     write nothing (no GPU, model or dataset needed)
  --model M          llama3 (default: Meta-Llama-3-8B-Instruct, beta 0.01, lr 1e-6), mistral (Mistral-7B-Instruct-
                     v0.2, 0.01, 5e-7) or gemma2 (gemma-2-9b-it, 0.01, 5e-7): the recipe's models: section
  --selector S       sams (default), random_subset (the control: a random half of every batch, the same loss
                     normalisation) or all (DPO on every pair; alias none)
  --seed N           seed of the training run (default 0)
  --out DIR          output folder (default runs/alignment/sams)
  --config YAML      the recipe (default alignment/configs/sams.yaml)
  --data D, --split S  another preference set (default: the model's own in the recipe, split train), e.g.
                     --data HuggingFaceH4/ultrafeedback_binarized --split train_prefs
  --num-processes N  accelerate launch processes (default: the accelerate config's, 8); keep batch_size x
                     grad_accum x N = 16, e.g. -- --grad-accum 2 with N = 4
  --fresh            rerun finished stages
  -- FLAGS           passed on to alignment.train_dpo (they override the recipe), e.g. -- --max-steps 100
  -h, --help         this help
Env: PYTHON (default: python on PATH).
EOF
}

DRY_RUN=0
FRESH=0
MODEL=llama3
SELECTOR=sams
SEED=0
OUT=runs/alignment/sams
CONFIG=alignment/configs/sams.yaml
DATA=""
SPLIT=""
NPROC=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --fresh) FRESH=1; shift ;;
        --model) need "$@"; MODEL="$2"; shift 2 ;;
        --selector) need "$@"; SELECTOR="$2"; shift 2 ;;
        --seed) need "$@"; SEED="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --config) need "$@"; CONFIG="$2"; shift 2 ;;
        --data) need "$@"; DATA="$2"; shift 2 ;;
        --split) need "$@"; SPLIT="$2"; shift 2 ;;
        --num-processes) need "$@"; NPROC="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$SELECTOR" == none || "$SELECTOR" == full ]] && SELECTOR=all  # aliases of the canonical name
check_choice --selector "$SELECTOR" sams random_subset all
check_uint --seed "$SEED"
[[ -z "$NPROC" ]] || check_pos --num-processes "$NPROC"
[[ -f "$CONFIG" ]] || die "--config: no such file '$CONFIG'"

recipe_vars "$CONFIG" "choose|models|--model|$MODEL" "value|POLICY|models.$MODEL.policy" \
    "value|MODEL_DATA|models.$MODEL.data" "value|MODEL_SPLIT|models.$MODEL.split|train" \
    "value|BETA|models.$MODEL.beta" "value|LR|models.$MODEL.lr" "words|LAUNCH|launch"
DATA="${DATA:-$MODEL_DATA}"
SPLIT="${SPLIT:-$MODEL_SPLIT}"
[[ -z "$NPROC" ]] || LAUNCH+=(--num_processes "$NPROC")
DATA_NAME="$(slug "$DATA-$SPLIT")"
OWN=()
[[ "$SELECTOR" == sams ]] || OWN=(--sams-pretrain-steps 0)  # the scheduler's pre-training is SamS's alone

stage "the preference set, checked and exported" "$OUT/data/$DATA_NAME" \
    "$PYTHON" -m alignment.prepare_data --data "$DATA" --split "$SPLIT" --out "$OUT/data" --name "$DATA_NAME"
stage "DPO with selector $SELECTOR ($MODEL, beta $BETA, lr $LR)" "$OUT/$MODEL/$SELECTOR-seed$SEED" \
    "${LAUNCH[@]}" -m alignment.train_dpo --config "$CONFIG" --policy "$POLICY" --preferences "$OUT/data/$DATA_NAME" \
    --beta "$BETA" --lr "$LR" --selector "$SELECTOR" ${OWN[@]+"${OWN[@]}"} --seed "$SEED" --out "$OUT/$MODEL" \
    --name "$SELECTOR-seed$SEED" ${EXTRA[@]+"${EXTRA[@]}"}
run_stages
