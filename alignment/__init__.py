"""LLM DPO with the bandit package's samplers (DESIGN.md section 4), in sub-packages by role.

    core/        the toy task, model loading by name, prompt / generation / preference sets, rewards
    generation/  every pair sampler's plan (its bandit/spec.py spec), fused decoding, the HF and vLLM backends
    selection/   which pairs get gradient: reward_gap / us / ae scores, per-batch selectors and SamS, AE-Borda
    training/    the DPO config, pure loss functions, the trainer and its batch selection, trainer utilities
    pipeline/    the iterative driver (generate -> annotate -> select -> train -> evaluate), recipes, dry run
    *.sh         the training scripts users run (`bash alignment/toy.sh --help`); configs/ their YAML recipes

Stages, one thin entry point each (`python -m alignment.NAME --help`): sft, reward_model, generate, annotate,
select, train_dpo, evaluate, prepare_data, report, pipeline. Each is an `Args` dataclass, `resolve(args)` (every
flag checked before anything is loaded or written), `run(args) -> Path` (what the pipeline calls) and
`main = runlog.entry_point(Args, run, __doc__)`.

Names: the samplers and selectors are bandit/vocabulary.py's (`python -m bandit.vocabulary`); aliases such as
online, mixp, none are accepted and written as the canonical names.

Row formats (JSONL files, loadable with `datasets.load_dataset("json", ...)`):
    prompts      {"id": str, "prompt": str | list[message]}
    generations  {"id", "prompt", "responses": [str], "components": [str], "num_tokens": [int]}
    preferences  {"id", "prompt", "chosen": str, "rejected": str, "chosen_reward": float,
                  "rejected_reward": float, "responses": [str], "rewards": [float]}   (TRL's DPO fields)
Runs go to runs/alignment/<entry>/<name>/ through runlog.RunDir; a trained model is saved under model/.
"""
