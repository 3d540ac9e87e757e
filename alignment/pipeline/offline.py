"""The offline selection recipes: a fixed preference set, a selector, DPO; each a list of commands (prepare_data,
sft, train_dpo, select, reward_model) read from its recipe alignment/configs/NAME.yaml.

    python -m alignment.pipeline.offline sams [--dry-run] [--model M] [--selector S] ... [-- TRAIN_DPO FLAGS]
    python -m alignment.pipeline.offline active [--dry-run] [--method M] ...
    python -m alignment.pipeline.offline difficulty [--dry-run] [--base M] [--selection-model P] ...

(what alignment/sams.sh, active.sh and difficulty.sh run; NAME --help for each one's flags). Every flag and every
recipe section is checked before any command; --dry-run checks every command with its own module's parser and
checks and prints it, loading, running and writing nothing; otherwise the commands run in order with the pipeline's
resume rule (alignment/pipeline/resume.py): a command whose run folder is done is skipped, so rerunning the same
command resumes; --fresh reruns them all.
"""
from __future__ import annotations

from pathlib import Path

from alignment.pipeline.commands import (PYTHON, Command, Recipe, check_seed_text, check_uint, dispatch, parse_script, run_commands,
                                         script_parser, script_path, slug)
from bandit.vocabulary import SELECTOR, canonical
from runlog import ConfigError

ENV_NOTE = "Env: PYTHON (default: python on PATH): the Python that runs the recipe and its plain python -m commands."


def _common(parser, out: str, config: str) -> None:
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--out", default=out)
    parser.add_argument("--config", default=config)
    parser.add_argument("--num-processes", dest="num_processes", default=None)


def _checked_common(args) -> tuple[int, list[str]]:
    """(seed, the accelerate words that set the process count); the recipe file exists."""
    seed = check_seed_text("--seed", args.seed)
    nproc = [] if args.num_processes is None else ["--num_processes", str(check_uint("--num-processes",
                                                                                         args.num_processes, 1))]
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: no such file {args.config!r}")
    return seed, nproc


# ------------------------------------------------------------------------------------------------ sams

SAMS_USAGE = """\
usage: {script} [--dry-run] [--model M] [--selector S] [--seed N] [--out DIR] [--config YAML]
       [--data D] [--split S] [--num-processes N] [--fresh] [-- TRAIN_DPO FLAGS]

SamS batch scheduling for offline DPO (Huang et al., NeurIPS 2025), recipe alignment/configs/sams.yaml:
  1. python -m alignment.prepare_data --data D --split S --out DIR/data --name D-S
       the model's preference set, checked and exported once (every training process then reads it offline)
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
{env}
"""


def sams(argv) -> tuple:
    parser = script_parser("sams.sh")
    _common(parser, "runs/alignment/sams", "alignment/configs/sams.yaml")
    parser.add_argument("--model", default="llama3")
    parser.add_argument("--selector", default="sams")
    parser.add_argument("--data", default=None)
    parser.add_argument("--split", default=None)
    args, extra = parse_script(parser, argv, SAMS_USAGE.format(script=script_path("sams"), env=ENV_NOTE))
    selector = canonical(args.selector, SELECTOR, "alignment", "--selector", allowed=("sams", "random_subset", "all"))
    seed, nproc = _checked_common(args)
    recipe = Recipe(args.config)
    recipe.choose("models", "--model", args.model)
    m = f"models.{args.model}"
    policy, beta, lr = recipe.value(f"{m}.policy"), recipe.value(f"{m}.beta"), recipe.value(f"{m}.lr")
    data = args.data or recipe.value(f"{m}.data")
    split = args.split or recipe.value(f"{m}.split", "train")
    launch = recipe.words("launch") + nproc
    out = Path(args.out)
    name = slug(f"{data}-{split}")
    own = [] if selector == "sams" else ["--sams-pretrain-steps", "0"]  # the scheduler's pre-training is SamS's alone
    return args, [
        Command("the preference set, checked and exported", out / "data" / name,
                [PYTHON, "-m", "alignment.prepare_data", "--data", data, "--split", split, "--out", str(out / "data"),
                 "--name", name]),
        Command(f"DPO with selector {selector} ({args.model}, beta {beta}, lr {lr})",
                out / args.model / f"{selector}-seed{seed}",
                launch + ["-m", "alignment.train_dpo", "--config", args.config, "--policy", policy, "--preferences",
                          str(out / "data" / name), "--beta", beta, "--lr", lr, "--selector", selector, *own,
                          "--seed", str(seed), "--out", str(out / args.model), "--name", f"{selector}-seed{seed}",
                          *extra]),
    ]


# ------------------------------------------------------------------------------------------------ active

ACTIVE_USAGE = """\
usage: {script} [--dry-run] [--method M] [--seed N] [--out DIR] [--model M] [--config YAML]
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
{env}
"""


def active(argv) -> tuple:
    parser = script_parser("active.sh")
    _common(parser, "runs/alignment/active", "alignment/configs/active.yaml")
    parser.add_argument("--method", default="ae")
    parser.add_argument("--model", default=None)
    parser.add_argument("--qlora", action="store_true")
    args, extra = parse_script(parser, argv, ACTIVE_USAGE.format(script=script_path("active"), env=ENV_NOTE))
    method = canonical(args.method, SELECTOR, "alignment", "--method", allowed=("ae", "us", "random_subset", "all"))
    seed, nproc = _checked_common(args)
    qlora = ["--lora-r", "16", "--load-in-4bit"] if args.qlora else []
    recipe = Recipe(args.config)
    data_flags = recipe.flags("data", "alignment.prepare_data", skip=("out", "name"))
    sft_flags = recipe.flags("sft", "alignment.sft", skip=("data", "out", "name"))
    launch = recipe.words("launch") + nproc
    model = ["--model", args.model] if args.model else []
    out = Path(args.out)
    return args, [
        Command("the SFT / preference split of the data (sft_fraction)", out / "data",
                [PYTHON, "-m", "alignment.prepare_data", *data_flags, "--out", str(out), "--name", "data"]),
        Command("SFT on the chosen responses of the SFT part", out / "sft",
                [PYTHON, "-m", "alignment.sft", *sft_flags, *model, "--data", str(out / "data" / "sft.jsonl"),
                 "--out", str(out), "--name", "sft"]),
        Command(f"DPO on the other pairs with selector {method}", out / method / f"seed{seed}",
                launch + ["-m", "alignment.train_dpo", "--config", args.config, "--policy", str(out / "sft"),
                          "--preferences", str(out / "data"), "--selector", method, "--seed", str(seed),
                          "--out", str(out / method), "--name", f"seed{seed}", *qlora, *extra]),
    ]


# ------------------------------------------------------------------------------------------------ difficulty

DIFFICULTY_USAGE = """\
usage: {script} [--dry-run] [--base M] [--selection-model P] [--rm-model M] [--seed N]
       [--out DIR] [--config YAML] [--num-processes N] [--no-reward-model] [--fresh] [-- TRAIN_DPO FLAGS]

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
{env}
"""


def difficulty(argv) -> tuple:
    parser = script_parser("difficulty.sh")
    _common(parser, "runs/alignment/difficulty", "alignment/configs/difficulty.yaml")
    parser.add_argument("--base", default=None)
    parser.add_argument("--selection-model", dest="selection_model", default=None)
    parser.add_argument("--rm-model", dest="rm_model", default=None)
    parser.add_argument("--no-reward-model", dest="no_reward_model", action="store_true")
    args, extra = parse_script(parser, argv, DIFFICULTY_USAGE.format(script=script_path("difficulty"), env=ENV_NOTE))
    seed, nproc = _checked_common(args)
    recipe = Recipe(args.config)
    base = recipe.value("base")
    data_flags = recipe.flags("data", "alignment.prepare_data", skip=("out", "name"))
    hub = ("split", "data_config", "data_dir")  # the stages read this pipeline's own files, not a Hub dataset
    select_flags = recipe.flags("select", "alignment.select",
                                skip=("policy", "ref", "data", *hub, "out", "name", "seed"))
    rm_flags = recipe.flags("reward_model", "alignment.reward_model", skip=("data", *hub, "out", "name", "seed"))
    launch = recipe.words("launch") + nproc
    base = args.base or base
    out = Path(args.out)
    run = out / f"seed{seed}"
    selector_model = args.selection_model or str(run / "selection_model")
    rm_model = ["--model", args.rm_model] if args.rm_model else []
    commands = [Command("the preference set, checked and exported", out / "data",
                        [PYTHON, "-m", "alignment.prepare_data", *data_flags, "--out", str(out), "--name", "data"])]
    if not args.selection_model:
        commands.append(Command("the selection model: DPO on every pair", run / "selection_model",
                                launch + ["-m", "alignment.train_dpo", "--config", args.config, "--policy", base,
                                          "--preferences", str(out / "data"), "--seed", str(seed), "--out", str(run),
                                          "--name", "selection_model", *extra]))
    commands += [
        Command("selection: the pairs with the smallest implicit-reward gap", run / "select",
                [PYTHON, "-m", "alignment.select", *select_flags, "--policy", selector_model, "--ref", base,
                 "--data", str(out / "data"), "--seed", str(seed), "--out", str(run), "--name", "select"]),
        Command("DPO on the selected pairs", run / "dpo_selected",
                launch + ["-m", "alignment.train_dpo", "--config", args.config, "--policy", base, "--preferences",
                          str(run / "select"), "--seed", str(seed), "--out", str(run), "--name", "dpo_selected",
                          *extra]),
    ]
    if not args.no_reward_model:
        commands.append(Command("a reward model on the selected pairs", run / "rm_selected",
                                [PYTHON, "-m", "alignment.reward_model", *rm_flags, *rm_model, "--data",
                                 str(run / "select" / "preferences.jsonl"), "--seed", str(seed), "--out", str(run),
                                 "--name", "rm_selected"]))
    return args, commands


RECIPES = {"sams": sams, "active": active, "difficulty": difficulty}


def run(name: str, argv) -> None:
    """Build recipe `name`'s commands from its flags and recipe file (every value checked), then run them."""
    args, commands = RECIPES[name](argv)
    run_commands(commands, dry_run=args.dry_run, fresh=args.fresh)


def main(argv=None) -> None:
    dispatch("alignment.pipeline.offline", __doc__, {n: (lambda rest, n=n: run(n, rest)) for n in RECIPES}, "a recipe", argv)


if __name__ == "__main__":
    main()
