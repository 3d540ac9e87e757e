#!/usr/bin/env bash
# Which pairs of a noisy offline preference set should DPO train on? The toy comparison (CPU, ~10 minutes).
#
#   bash alignment/scripts/toy_selection.sh [OUT]          (default OUT: runs/alignment/toy_selection)
#
# 1. The SFT toy policy (kept if present), then one offline preference set: 2 responses per prompt from the SFT
#    policy, labelled by the true reward, FLIP (default 0.2) of the labels swapped.
# 2. DPO on that set (alignment/configs/toy_selection.yaml, alignment.pipeline in its offline regime), per seed:
#      all            all pairs (alias full)
#      random_subset  a random RATIO of every batch            (train.selector; same loss normalisation as sams)
#      sams           SamS: the scheduler's top RATIO of every batch
#      us, ae         the RATIO of every candidate batch with the largest MC-dropout uncertainty / AE width
#      reward_gap     one-shot: the RATIO of pairs with the smallest implicit-reward gap under the "all" model
# 3. A table (method: true reward, win rate against the SFT policy, KL, 95% CIs) and a reward-vs-KL figure:
#    OUT/table.md, OUT/table.csv, OUT/selection.png (and .pdf); what reward_gap kept: OUT/runs/reward_gap-seed*/.
# Environment: METHODS, SEEDS (default "0 1"), JOBS (default 2), FLIP, RATIO (default 0.5), NUM_PROMPTS (default
# 1024), RECIPE, SFT_FLAGS, DATA_FLAGS (extra alignment.generate flags), PIPELINE_FLAGS. Reruns resume.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/../.."
OUT=${1:-runs/alignment/toy_selection}
METHODS=${METHODS:-"all random_subset sams us ae reward_gap"}
METHODS=$(for m in $METHODS; do python -m bandit.vocabulary --selector "$m" || exit 2; done | tr "\n" " ")
SEEDS=${SEEDS:-"0 1"}
JOBS=${JOBS:-2}
FLIP=${FLIP:-0.2}
export RATIO=${RATIO:-0.5} RECIPE=${RECIPE:-alignment/configs/toy_selection.yaml} PIPELINE_FLAGS=${PIPELINE_FLAGS:-}
NUM_PROMPTS=${NUM_PROMPTS:-1024}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/logs"
start=$SECONDS

echo "== 1/3 the SFT policy and the offline preference set ($FLIP of the labels flipped)"
if [[ ! -d "$OUT/sft/toy/model" ]]; then
    python -m alignment.sft --out "$OUT/sft" ${SFT_FLAGS:-} > "$OUT/logs/sft.log" 2>&1 \
        || { echo "failed: see $OUT/logs/sft.log" >&2; exit 1; }
fi
if [[ ! -f "$OUT/data/annotate/run.json" ]]; then
    python -m alignment.generate --policy "$OUT/sft/toy/model" --sampler offline --prompts "toy:$NUM_PROMPTS" \
        --num-responses 2 --max-new-tokens 32 --batch-size 64 --device cpu --out "$OUT/data" --name generate \
        ${DATA_FLAGS:-} > "$OUT/logs/data.log" 2>&1
    python -m alignment.annotate --generations "$OUT/data/generate" --reward toy-oracle --rule max_min \
        --flip "$FLIP" --out "$OUT/data" --name annotate >> "$OUT/logs/data.log" 2>&1
fi
grep -h "pairs" "$OUT/logs/data.log" 2>/dev/null | head -1 || true

# one pipeline run: method $1, seed $2
run_one() {
    local m=$1 seed=$2 override=""
    case "$m" in
        all) ;;
        random_subset|sams|us|ae) override="train.selector=$m train.select_ratio=$RATIO" ;;
        reward_gap) override="select.method=reward_gap select.ratio=$RATIO select.beta=0.5 \
select.policy=$OUT/runs/all-seed$seed/iter_1/train" ;;
        *) echo "unknown method $m (known: all random_subset sams us ae reward_gap)" >&2; return 2 ;;
    esac
    python -m alignment.pipeline --config "$RECIPE" $PIPELINE_FLAGS --preferences "$OUT/data/annotate" \
        --policy "$OUT/sft/toy/model" --label "$m" --seed "$seed" --out "$OUT/runs/$m-seed$seed" \
        --override "$override" 2> "$OUT/logs/$m-seed$seed.log" \
        || { echo "failed: $m seed $seed, see $OUT/logs/$m-seed$seed.log" >&2; return 255; }
}
export -f run_one
export OUT

echo "== 2/3 DPO per method {$METHODS} and seed {$SEEDS}, $JOBS at a time"
first=$(for m in $METHODS; do [[ $m == reward_gap ]] || for s in $SEEDS; do echo "$m $s"; done; done)
[[ -z "$first" ]] || echo "$first" | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'
if [[ " $METHODS " == *" reward_gap "* ]]; then  # its selection model is the all run's
    for s in $SEEDS; do [[ -d "$OUT/runs/all-seed$s/iter_1/train" ]] || run_one all "$s"; done
    for s in $SEEDS; do echo "reward_gap $s"; done | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'
fi

echo "== 3/3 the table and the figure"
python -m alignment.report "$OUT/runs" --figure "$OUT/selection.png" --markdown "$OUT/table.md" --csv "$OUT/table.csv"
for d in "$OUT"/runs/reward_gap-seed*/iter_1/select; do
    [[ -f "$d/metrics.jsonl" ]] && python -c "import json,sys; r=json.loads(open(sys.argv[1]).readline()); \
print(sys.argv[1].split('/')[-4], {k: v for k, v in r.items() if 'flip' in k})" "$d/metrics.jsonl"
done
echo "done in $((SECONDS - start)) s: $OUT"
