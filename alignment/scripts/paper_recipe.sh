#!/usr/bin/env bash
# The runner shared by the samplers paper's recipe scripts (safe_rlhf.sh, iterative_prompt.sh):
#   bash alignment/scripts/paper_recipe.sh NAME [OPTIONS]     (NAME: a recipe alignment/configs/NAME.yaml)
# runs alignment.pipeline with that recipe for each sampler, then alignment.report. Options: NAME --help.
# A sampler's own settings live in the recipe (per_sampler:); --backend vllm becomes the pipeline's --override.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
NAME="${1:-}"
[[ -n "$NAME" && -f "alignment/configs/$NAME.yaml" ]] || {
    echo "paper_recipe.sh: error: the first argument must name a recipe alignment/configs/NAME.yaml, got '$NAME'" >&2
    exit 2; }
shift
CONFIG="alignment/configs/$NAME.yaml"
SCRIPT="alignment/scripts/$NAME.sh"
[[ -f "$SCRIPT" ]] || SCRIPT="alignment/scripts/paper_recipe.sh $NAME"
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
VLLM_OVERRIDE="generate.backend=vllm generate.batch_size=null"  # vLLM batches all prompts itself

usage() {
    cat <<EOF
usage: $SCRIPT [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm] [-- PIPELINE FLAGS]

Runs python -m alignment.pipeline --config $CONFIG --sampler S --seed N --out DIR/S-seedN
for S in offline on_policy gshf mix_p (or just --sampler S), then python -m alignment.report DIR.
A sampler's own settings are in the recipe's per_sampler: section.
A finished stage is never rerun: run the same command again to resume.

  --dry-run        resolve and check every stage's flags and print the commands; run, load and write nothing
                   (no GPU, model or dataset needed)
  --sampler S      one sampler: offline, on_policy, gshf, mix_p or mix_p_seq, or an alias (default: the paper's four)
  --seed N         seed of every stage (default 0)
  --out DIR        output folder (default runs/alignment/$NAME)
  --backend B      generation backend: hf (default) or vllm (also: env BACKEND). vllm applies to offline,
                   on_policy, gshf and mix_p_seq, as the pipeline flag
                   --override "$VLLM_OVERRIDE";
                   mix_p fuses logits token by token and always uses hf.
  -- FLAGS         pass the remaining flags to alignment.pipeline, e.g. -- --fresh, or
                   -- --launch 'accelerate launch --config_file alignment/configs/zero3.yaml --num_processes 4';
                   an --override here is joined after the script's own (its items win)
  -h, --help       this help
Env: PYTHON (default: python on PATH), BACKEND.
EOF
}

DRY_RUN=0
SAMPLERS=(offline on_policy gshf mix_p)
SEED=0
OUT="runs/alignment/$NAME"
BACKEND="${BACKEND:-hf}"
EXTRA=()
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "$NAME.sh: error: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --sampler) need "$@"; SAMPLERS=("$2"); shift 2 ;;
        --seed) need "$@"; SEED="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --backend) need "$@"; BACKEND="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "$NAME.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for i in "${!SAMPLERS[@]}"; do  # canonical names (aliases accepted); borda has recipes of its own
    SAMPLERS[i]=$("$PYTHON" -m bandit.vocabulary --sampler "${SAMPLERS[i]}" 2>&1) \
        || { echo "$NAME.sh: error: ${SAMPLERS[i]#*error: }" >&2; exit 2; }
    case "${SAMPLERS[i]}" in
        offline|on_policy|gshf|mix_p|mix_p_seq) ;;
        *) echo "$NAME.sh: error: --sampler: ${SAMPLERS[i]} has no recipe here; known: offline, on_policy, gshf, mix_p, mix_p_seq" >&2
           exit 2 ;;
    esac
done
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "$NAME.sh: error: --seed: must be an integer >= 0, got '$SEED'" >&2; exit 2; }
[[ "$BACKEND" == hf || "$BACKEND" == vllm ]] || {
    echo "$NAME.sh: error: --backend: must be hf or vllm, got '$BACKEND'" >&2; exit 2; }

# the pipeline keeps only the last --override it is given: a user's -- --override joins the script's instead
join() { printf '%s\n' "${1:+$1${2:+ }}${2:-}"; }
USER_OVERRIDE=""
PASS=()
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
    word="${EXTRA[i]}"
    if [[ "$word" == --override=* ]]; then
        USER_OVERRIDE="$(join "$USER_OVERRIDE" "${word#--override=}")"
    elif [[ "$word" == --override ]] && ((i + 1 < ${#EXTRA[@]})); then
        i=$((i + 1))
        USER_OVERRIDE="$(join "$USER_OVERRIDE" "${EXTRA[i]}")"
    else
        PASS+=("$word")  # (a last --override without a value included: the pipeline says so)
    fi
done

# a command as one comment line, the words with spaces or quotes in single quotes
show() {
    local w line="#"
    for w in "$@"; do
        if [[ "$w" =~ ^[A-Za-z0-9_./:=+@%,-]+$ ]]; then line+=" $w"; else line+=" '${w//\'/\'\\\'\'}'"; fi
    done
    echo "$line"
}

for S in "${SAMPLERS[@]}"; do
    OVERRIDE=""
    if [[ "$BACKEND" == vllm ]]; then
        if [[ "$S" == mix_p ]]; then
            echo "# mix_p fuses two models' logits token by token, which only the hf backend can do: mix_p keeps hf" >&2
        else
            OVERRIDE="$VLLM_OVERRIDE"
        fi
    fi
    OVERRIDE="$(join "$OVERRIDE" "$USER_OVERRIDE")"
    CMD=("$PYTHON" -m alignment.pipeline --config "$CONFIG" --sampler "$S" --seed "$SEED" --out "$OUT/$S-seed$SEED")
    [[ -n "$OVERRIDE" ]] && CMD+=(--override "$OVERRIDE")
    [[ $DRY_RUN == 1 ]] && CMD+=(--dry-run)
    CMD+=(${PASS[@]+"${PASS[@]}"})
    show "${CMD[@]}"
    "${CMD[@]}"
done

[[ $DRY_RUN == 1 ]] || "$PYTHON" -m alignment.report "$OUT"
