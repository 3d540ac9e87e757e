#!/usr/bin/env bash
# The samplers paper's Safe-RLHF comparison (alignment/configs/safe_rlhf.yaml): alpaca-7b-reproduced, 3
# iterations of online DPO per sampler, one node of 8 x 80 GB GPUs (DeepSpeed ZeRO-3 for training).
set -euo pipefail

NAME=safe_rlhf
CONFIG=alignment/configs/$NAME.yaml
# generate-section overrides per sampler ("section.key=yaml-value"), on top of CONFIG; none for this recipe
sampler_overrides() { :; }

usage() {
    cat <<EOF
usage: alignment/scripts/$NAME.sh [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm] [-- PIPELINE FLAGS]

Runs python -m alignment.pipeline --config $CONFIG --sampler S --seed N --out DIR/S-seedN
for S in offline online gshf mixp (or just --sampler S), then python -m alignment.report DIR.
A finished stage is never rerun: run the same command again to resume.

  --dry-run        resolve and check every stage's flags and print the commands; run, load and write nothing
                   (no GPU, model or dataset needed)
  --sampler S      one sampler: offline, online, gshf, mixp or mixp_seq (default: the four of the paper)
  --seed N         seed of every stage (default 0)
  --out DIR        output folder (default runs/alignment/$NAME)
  --backend B      generation backend: hf (default) or vllm (also: env BACKEND). vllm applies to offline,
                   online, gshf and mixp_seq; mixp fuses logits token by token and always uses hf.
  -- FLAGS         pass the remaining flags to alignment.pipeline, e.g. -- --fresh, or
                   -- --launch 'accelerate launch --config_file alignment/configs/zero3.yaml --num_processes 4'
  -h, --help       this help
Env: PYTHON (default: python on PATH), BACKEND.
Where a sampler needs settings the shared recipe cannot hold (vLLM generation), the script writes a derived
recipe to DIR/.recipes/ (a temporary folder under --dry-run) and passes it as --config.
EOF
}

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"

DRY_RUN=0
SAMPLERS=(offline online gshf mixp)
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
case "${SAMPLERS[0]}" in
    offline|online|gshf|mixp|mixp_seq) ;;
    *) echo "$NAME.sh: error: --sampler: unknown sampler '${SAMPLERS[0]}'; known: offline, online, gshf, mixp, mixp_seq" >&2
       exit 2 ;;
esac
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "$NAME.sh: error: --seed: must be an integer >= 0, got '$SEED'" >&2; exit 2; }
[[ "$BACKEND" == hf || "$BACKEND" == vllm ]] || {
    echo "$NAME.sh: error: --backend: must be hf or vllm, got '$BACKEND'" >&2; exit 2; }

# derived recipes: DIR/.recipes for a run (kept: the training stage reads it, a resume rewrites the same bytes),
# a temporary folder for a dry run (removed on exit: a dry run writes nothing that stays)
if [[ $DRY_RUN == 1 ]]; then
    RECIPES="$(mktemp -d "${TMPDIR:-/tmp}/$NAME-recipes.XXXXXX")"
    trap 'rm -rf "$RECIPES"' EXIT
else
    RECIPES="$OUT/.recipes"
fi

# the recipe file of sampler $1: CONFIG itself, or CONFIG with that sampler's overrides
recipe_for() {
    local sampler="$1" sets=() tag=""
    if [[ "$BACKEND" == vllm ]]; then
        if [[ "$sampler" == mixp ]]; then
            echo "# mixp fuses two models' logits token by token, which only the hf backend can do: mixp keeps hf" >&2
        else
            sets+=("generate.backend=vllm" "generate.batch_size=null")  # vLLM batches all prompts itself
            tag=".vllm"
        fi
    fi
    local extra
    while read -r extra; do [[ -n "$extra" ]] && sets+=("$extra"); done < <(sampler_overrides "$sampler")
    if [[ ${#sets[@]} -eq 0 ]]; then
        echo "$CONFIG"
        return
    fi
    mkdir -p "$RECIPES"
    local dest="$RECIPES/$NAME.$sampler$tag.yaml"
    "$PYTHON" - "$CONFIG" "$dest" "${sets[@]}" <<'PY'
import os, sys

import yaml

base, dest, *sets = sys.argv[1:]
with open(base) as f:
    recipe = yaml.safe_load(f)
for s in sets:
    key, value = s.split("=", 1)
    section, name = key.split(".", 1)
    recipe.setdefault(section, {})[name] = yaml.safe_load(value)
text = (f"# Derived from {base} by alignment/scripts (do not edit): {', '.join(sets)}\n"
        + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
with open(dest + ".tmp", "w") as f:
    f.write(text)
os.replace(dest + ".tmp", dest)
PY
    [[ $? -eq 0 ]] || return 1
    echo "$dest"
}

for S in "${SAMPLERS[@]}"; do
    RECIPE="$(recipe_for "$S")"
    CMD=("$PYTHON" -m alignment.pipeline --config "$RECIPE" --sampler "$S" --seed "$SEED" --out "$OUT/$S-seed$SEED")
    [[ $DRY_RUN == 1 ]] && CMD+=(--dry-run)
    CMD+=(${EXTRA[@]+"${EXTRA[@]}"})
    echo "# ${CMD[*]}"
    "${CMD[@]}"
done

if [[ $DRY_RUN == 0 ]]; then
    if "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('alignment.report') is None)" 2>/dev/null; then
        "$PYTHON" -m alignment.report "$OUT"
    else
        echo "# alignment.report is not available: per-iteration metrics are in $OUT/*/metrics.jsonl"
    fi
fi
