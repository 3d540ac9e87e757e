#!/usr/bin/env bash
# The sampler comparison on the toy task, on a laptop CPU (about 8 minutes on 2 cores).
#
#   bash alignment/scripts/toy.sh [OUT]          (default OUT: runs/alignment/toy)
#
# 1. SFT of the ~1M-parameter toy policy and training of the toy reward model (in parallel; kept if present).
# 2. The iterative DPO pipeline (alignment/configs/toy.yaml: 3 iterations of generate -> annotate with the
#    reward model -> DPO -> evaluate with the true reward) for each sampler and seed, JOBS runs at a time.
# 3. A table (sampler x iteration: true reward, win rate against the initial policy, KL, with 95% CIs) and a
#    reward-vs-KL figure: OUT/table.md, OUT/table.csv, OUT/reward_vs_kl.png (and .pdf).
# Environment: SAMPLERS (default "offline on_policy gshf mix_p"; aliases accepted), SEEDS (default "0 1 2"), JOBS (default 2);
# RECIPE (default alignment/configs/toy.yaml), SFT_FLAGS, RM_FLAGS, PIPELINE_FLAGS: extra flags of each stage.
# Rerunning the script resumes: finished stages are kept, a killed run continues where it stopped.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/../.."
OUT=${1:-runs/alignment/toy}
SAMPLERS=${SAMPLERS:-"offline on_policy gshf mix_p"}
SAMPLERS=$(for s in $SAMPLERS; do python -m bandit.vocabulary --sampler "$s" || exit 2; done | tr "\n" " ")
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
export RECIPE=${RECIPE:-alignment/configs/toy.yaml} PIPELINE_FLAGS=${PIPELINE_FLAGS:-}
# one torch thread per process: the runs go in parallel, and torch's threads stall when cores are shared
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/logs"
start=$SECONDS

echo "== 1/3 the SFT policy and the reward model (logs: $OUT/logs)"
pids=()
if [[ ! -d "$OUT/sft/toy/model" ]]; then
    python -m alignment.sft --out "$OUT/sft" ${SFT_FLAGS:-} > "$OUT/logs/sft.log" 2>&1 & pids+=($!)
fi
if [[ ! -d "$OUT/reward_model/toy/model" ]]; then
    python -m alignment.reward_model --out "$OUT/reward_model" ${RM_FLAGS:-} > "$OUT/logs/reward_model.log" 2>&1 & pids+=($!)
fi
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "failed: see $OUT/logs/sft.log and $OUT/logs/reward_model.log" >&2; exit 1; }
done
grep -h "held-out\|fluency" "$OUT/logs/sft.log" "$OUT/logs/reward_model.log" 2>/dev/null || true

echo "== 2/3 the pipelines: samplers {$SAMPLERS} x seeds {$SEEDS}, $JOBS at a time"
for s in $SAMPLERS; do for seed in $SEEDS; do echo "$s $seed"; done; done |
    xargs -P "$JOBS" -L 1 bash -c 'python -m alignment.pipeline --config "$RECIPE" $PIPELINE_FLAGS \
        --policy "$0/sft/toy/model" --reward "$0/reward_model/toy" --sampler "$1" --seed "$2" \
        --out "$0/pipeline/$1-seed$2" 2> "$0/logs/$1-seed$2.log" \
        || { echo "failed: $1 seed $2, see $0/logs/$1-seed$2.log" >&2; exit 255; }' "$OUT"

echo "== 3/3 the table and the figure"
python -m alignment.report "$OUT/pipeline" --figure "$OUT/reward_vs_kl.png" --markdown "$OUT/table.md" \
    --csv "$OUT/table.csv"
echo "done in $((SECONDS - start)) s: $OUT"
