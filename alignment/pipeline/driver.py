"""Iterative online DPO: per iteration generate -> annotate -> train -> evaluate, resumable at any moment.

    python -m alignment.pipeline --config alignment/configs/toy.yaml --sampler mix_p --iterations 3 --seed 0
    python -m alignment.pipeline --config alignment/configs/safe_rlhf.yaml --sampler gshf --dry-run

Iteration t (1..N) draws its prompts (the t-th chunk of --prompts, `prompts_per_iteration` each), generates
responses with the sampler from the current policy pi_{t-1} and the fixed reference pi_0 (the initial policy),
annotates them with --reward, trains pi_t from pi_{t-1} with DPO against pi_0, and evaluates pi_t against pi_0
on the held-out prompts (reward, win rate, KL; alignment.evaluate). Iteration 0 evaluates pi_0 itself, so every
curve starts at the initial policy. Each stage is a module of its own (alignment.generate, .annotate, .select,
.train_dpo, .evaluate) given the flags the recipe's section sets: the stage's own parser reads them into its Args
(the very flags --dry-run prints) and the stage runs in this process as module.run(args); with `launch` set (e.g.
"accelerate launch --config_file alignment/configs/zero3.yaml") training and HF generation run as that command
instead, with those flags. --dry-run checks every stage's flags and prints the commands without running anything
(no GPU needed).

Offline regime (--preferences D): every iteration trains on the fixed set D instead of generating and annotating;
with a `select:` section that names a method (alignment.select: reward_gap, us, ae), a select stage keeps part of
the pairs before training (its --policy, the selection model, defaults to the current policy; a reward_gap
selection model is usually a DPO model trained on all of D first: set select.policy). --label names the run in
reports (e.g. the selection method), since the sampler means nothing there.

Layout of OUT (default runs/alignment/pipeline/SAMPLER-seedS):
    pipeline.json                   the resolved recipe (a rerun with another recipe into OUT is an error)
    metrics.jsonl                   one line per iteration: iteration, sampler, seed, step, reward_mean,
                                    reward_ci, win_rate, win_rate_ci, kl, kl_ci, num_pairs, ties_dropped, ...
    run.json                        written when the last iteration is done
    eval_prompts.jsonl              the held-out prompts (templated), the same for every iteration
    iter_T/prompts.jsonl            the iteration's prompts (templated)
    iter_T/{generate,annotate,select,train,evaluate}/   each stage's run folder (train/model: the iteration's
                                    checkpoint; select only with a select method; no generate/annotate offline)
    iter_T/STAGE.done               the stage's done marker;  iter_T/STAGE.log  its printed output
    iter_T/evaluate/alpaca_eval.json, iter_T/evaluate/model_answer/LABEL-seedS-iterT.jsonl
                                    the exports for AlpacaEval and MT-Bench: the model is named LABEL-seedS-iterT
                                    (LABEL: --label, else the sampler)

Resume (alignment/pipeline/resume.py, the rule every orchestrator of this package follows): a stage's run folder
appears by an atomic rename once it is complete, and then its done marker is written; metrics.jsonl is rewritten
whole (atomically) from the done evaluations after each iteration. Kill the process at any moment and run the same
command again: it removes half-written temporary folders and continues from the first stage without a done marker.
--fresh starts OUT over (only a folder that holds this driver's pipeline.json, or an empty one, is deleted).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from alignment.pipeline import resume
from alignment.pipeline.recipes import check_section, config_path, load_yaml
from bandit.vocabulary import PAIR_SAMPLER, canonical, names, normalise
from runlog import ConfigError, arg, atomic_write_json, atomic_write_text, check_out, check_seed, entry_point
from runlog.rundir import dumps

SAMPLERS = names(PAIR_SAMPLER, "alignment")
STAGES = ("generate", "annotate", "select", "train", "evaluate")
MODULES = {"generate": "alignment.generate", "annotate": "alignment.annotate", "select": "alignment.select",
           "train": "alignment.train_dpo", "evaluate": "alignment.evaluate"}
# flags the pipeline sets itself in each stage; a recipe section may not set them
OWNED = {"generate": ("policy", "ref", "prompts", "split", "data_config", "data_dir", "sampler", "seed", "out", "name"),
         "annotate": ("generations", "reward", "seed", "out", "name"),
         "select": ("data", "split", "data_config", "data_dir", "ref", "seed", "out", "name"),
         "train": ("config", "preferences", "split", "data_config", "data_dir", "policy", "ref", "seed", "out", "name"),
         "evaluate": ("policy", "ref", "prompts", "prompt_field", "split", "data_config", "data_dir", "reward", "seed",
                      "generator_name", "out", "name")}
METRIC_KEYS = ("reward_mean", "reward_ci", "win_rate", "win_rate_ci", "kl", "kl_ci", "kl_logratio", "kl_logratio_ci",
               "ref_reward_mean", "num_prompts", "mean_response_tokens")


@dataclass
class Args:
    config: str | None = arg(None, "YAML recipe (alignment/configs/*.yaml): these keys plus one section per stage "
                             "(generate, annotate, train, evaluate) of that module's flags (required)", metavar="YAML")
    sampler: str = arg("on_policy", "generation sampler (alignment.generate): " + ", ".join(SAMPLERS) + " or an alias "
                       "(online, mixp, ...); recorded by its canonical name")
    preferences: str | None = arg(None, "offline regime: train every iteration on this fixed preference set (an "
                                  "annotate run folder or a file) instead of generating and annotating new pairs")
    label: str | None = arg(None, "the run's name in reports (default: the sampler), e.g. the selection method; "
                                "a method name's alias (full, none) is recorded by its canonical name (all)")
    iterations: int = arg(3, "DPO iterations after the initial evaluation")
    seed: int = arg(0, "seed of every stage (iteration t's generation and training use seed and t)")
    out: str | None = arg(None, "output folder of this run (default: runs/alignment/pipeline/SAMPLER-seedSEED)")
    policy: str = arg("runs/alignment/sft/toy/model", "initial policy pi_0, also the fixed reference: a model folder, "
                      "a run folder holding model/, or a Hub name")
    reward: str = arg("toy-oracle", "reward that annotates the pairs: toy-oracle, a reward-model folder or Hub name")
    eval_reward: str | None = arg(None, "reward of the evaluation (default: --reward)")
    prompts: str = arg("toy:768", "training prompts: toy:N, a .json/.jsonl/.parquet file or a Hub dataset")
    split: str = arg("train", "split of the training prompts")
    prompts_per_iteration: int = arg(256, "prompts per iteration: iteration t takes the t-th chunk (wrapping around)")
    eval_prompts: str = arg("toy:200", "held-out evaluation prompts")
    eval_split: str = arg("heldout", "split of the evaluation prompts")
    num_eval_prompts: int | None = arg(None, "use the first N evaluation prompts (default: all)")
    prompt_field: str = arg("prompt", "field of a prompt dataset's rows that holds the prompt (text or chat messages)")
    prompt_template: str = arg("{prompt}", "template each prompt text is put in, e.g. 'BEGINNING OF CONVERSATION: "
                               "USER: {prompt} ASSISTANT:'; for chat-message prompts {prompt} is the last user message")
    launch: str = arg("", "command prefix that runs training (and HF generation) in other processes, e.g. "
                      "'accelerate launch --config_file alignment/configs/zero3.yaml'; empty: all in this process")
    override: str = arg("", "recipe values to change for this run: space-separated STAGE.KEY=VALUE items (VALUE read "
                        "as YAML), e.g. 'generate.backend=vllm generate.batch_size=null train.lr=1e-6'")
    dry_run: bool = arg(False, "check every stage's flags and print the commands; run nothing")
    fresh: bool = arg(False, "delete OUT's earlier progress and start over")
    generate: dict = field(default_factory=dict, metadata={"help": "recipe only: alignment.generate flags"})
    annotate: dict = field(default_factory=dict, metadata={"help": "recipe only: alignment.annotate flags"})
    select: dict = field(default_factory=dict, metadata={
        "help": "recipe only: alignment.select flags; with a method, a select stage runs between annotate and train "
                "(its --policy defaults to the current policy)"})
    train: dict = field(default_factory=dict, metadata={"help": "recipe only: alignment.train_dpo flags"})
    evaluate: dict = field(default_factory=dict, metadata={"help": "recipe only: alignment.evaluate flags"})
    per_sampler: dict = field(default_factory=dict, metadata={
        "help": "recipe only: {sampler: {stage: {flag: value}}}, settings of one sampler on top of the sections"})


def stage_args_class(stage: str):
    """The Args dataclass of a stage's module (its flags)."""
    import importlib

    return importlib.import_module(MODULES[stage]).Args


def _flags(values: dict) -> list[str]:
    """A section's values as command-line flags (None: left out; dicts: read from the recipe by the stage)."""
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


@dataclass
class Plan:
    args: Args
    out: Path
    sections: dict          # stage -> checked section values (recipe section + per_sampler + --override)
    recipe: dict            # everything that defines the run (pipeline.json)
    train_flags: list = field(default_factory=list)  # per_sampler / --override values of train, as flags

    def stage_dir(self, t: int) -> Path:
        return self.out / f"iter_{t}"

    def stages(self, t: int) -> tuple[str, ...]:
        """The stages of iteration t, in order."""
        if t == 0:
            return ("evaluate",)
        data = () if self.args.preferences else ("generate", "annotate")
        return data + (("select",) if self.sections["select"].get("method") else ()) + ("train", "evaluate")

    def pairs(self, t: int) -> str:
        """Where iteration t's training pairs come from (before selection)."""
        return self.args.preferences or str(self.stage_dir(t) / "annotate")

    def argv(self, stage: str, t: int) -> list[str]:
        """The flags of a stage at iteration t: the pipeline's own, then the recipe section's."""
        a, d = self.args, self.stage_dir(t)
        policy = a.policy if t <= 1 else str(self.stage_dir(t - 1) / "train")
        own = {
            "generate": ["--policy", policy, "--ref", a.policy, "--prompts", str(d / "prompts.jsonl"),
                         "--sampler", a.sampler, "--seed", str(stage_seed(a.seed, t))],
            "annotate": ["--generations", str(d / "generate"), "--reward", a.reward, "--seed", str(stage_seed(a.seed, t))],
            "select": ["--data", self.pairs(t), "--ref", a.policy, "--seed", str(stage_seed(a.seed, t))]
                      + ([] if "policy" in self.sections["select"] else ["--policy", policy]),
            "train": ["--config", a.config, "--preferences",
                      str(d / "select") if "select" in self.stages(t) else self.pairs(t),
                      "--policy", policy, "--ref", a.policy, "--seed", str(stage_seed(a.seed, t))],
            "evaluate": ["--policy", a.policy if t == 0 else str(d / "train"), "--ref", a.policy,
                         "--prompts", str(self.out / "eval_prompts.jsonl"), "--reward", a.eval_reward or a.reward,
                         "--seed", str(a.seed),  # one seed for every iteration: common random numbers
                         "--generator-name", export_name(a, t)],
        }[stage]
        # train reads its recipe section itself (--config, with the dpo: mapping); flags after it override it
        extra = self.train_flags if stage == "train" else _flags(self.sections[stage])
        return own + extra + ["--out", str(d), "--name", stage]

    def command(self, stage: str, t: int) -> list[str]:
        module = MODULES[stage]
        launched = self.args.launch and (stage == "train" or (stage == "generate"
                                                               and self.sections["generate"].get("backend", "hf") == "hf"))
        prefix = shlex.split(self.args.launch) if launched else [sys.executable]
        return prefix + ["-m", module] + self.argv(stage, t)


def export_name(args: Args, t: int) -> str:
    """Iteration t's policy in the evaluate stage's exports (AlpacaEval's generator, MT-Bench's model_id): distinct
    per run and iteration, so the judges keep the models of one folder apart, e.g. mix_p-seed0-iter2."""
    return f"{args.label or args.sampler}-seed{args.seed}-iter{t}"


def stage_seed(seed: int, t: int) -> int:
    """Iteration t's generation / annotation / training seed: distinct per iteration, fixed by (seed, t)."""
    return seed * 1000 + t


def resolve(args: Args, check_preferences: bool = True) -> Plan:
    """Check the pipeline's flags, the recipe and every stage's flags (each stage's own parser and checks) before
    anything runs. check_preferences=False leaves out reading --preferences, for a caller whose earlier command
    writes that set (a recipe script's dry run); everything else is checked the same."""
    if not args.config:
        raise ConfigError("--config: required: a YAML recipe such as alignment/configs/toy.yaml")
    args.sampler = canonical(args.sampler, PAIR_SAMPLER, "alignment", "--sampler")
    if "{prompt}" not in args.prompt_template:
        raise ConfigError(f"--prompt-template: must contain {{prompt}} where the prompt goes, got {args.prompt_template!r}")
    if not args.prompt_field:
        raise ConfigError("--prompt-field: empty field name")
    for flag, value, low in (("iterations", args.iterations, 1), ("prompts-per-iteration", args.prompts_per_iteration, 1),
                             ("num-eval-prompts", 1 if args.num_eval_prompts is None else args.num_eval_prompts, 1)):
        if value < low:
            raise ConfigError(f"--{flag}: must be an integer >= {low}, got {value}")
    check_seed("seed", args.seed, derived=lambda s: stage_seed(s, args.iterations),
               how=f"the stages' seeds, seed x 1000 + iteration (up to {args.iterations})")
    out = Path(args.out or f"runs/alignment/pipeline/{args.sampler}-seed{args.seed}")
    if out.is_dir():  # what only reads OUT first (check_out's writability probe touches the folder)
        check_fresh(out) if args.fresh else read_recipe(out)
    check_out(out)
    recipe_file = load_yaml(args.config)
    if not any(s in recipe_file for s in STAGES):  # else train_dpo reads the whole file as its own keys
        raise ConfigError(f"--config: {args.config!r} has only pipeline keys and no stage section; a pipeline recipe "
                          f"puts each stage's flags under {', '.join(s + ':' for s in STAGES)} (at least train:), "
                          f"its own keys ({', '.join(sorted(f.name for f in dataclasses.fields(Args) if f.name not in STAGES)[:6])}, ...) at "
                          f"the top; see alignment/configs/toy.yaml")
    changes = _changes(args)
    sections, train_flags = {}, []
    for stage in STAGES:
        if stage == "select" and not (args.select or changes["select"]):
            sections[stage] = {}
            continue
        cls = stage_args_class(stage)
        where = f"--config: {args.config!r} section {stage!r}"
        sections[stage] = check_section(cls, getattr(args, stage) or {}, where, skip=OWNED[stage])
        for where, values in changes[stage]:
            checked = check_section(cls, values, where, skip=OWNED[stage])
            if any(isinstance(v, dict) for v in checked.values()):
                raise ConfigError(f"{where}: a mapping (such as train's dpo:) can only be set in the recipe's section")
            sections[stage] |= checked
            if stage == "train":
                train_flags += _flags(checked)
    plan = Plan(args, out, sections, {}, train_flags)
    # each stage parses and checks its own flags now, so a bad value fails before hours of work
    if args.label is not None and (not args.label.strip() or "/" in args.label):
        raise ConfigError(f"--label: {args.label!r} must be a plain name")
    if args.label is not None:
        args.label = normalise(args.label)
    if args.preferences is not None and check_preferences:
        from alignment.core.data import load_preferences

        load_preferences(args.preferences, "--preferences")  # checked once, before any work
    for t, stage in [(0, "evaluate")] + [(1, s) for s in plan.stages(1)]:
        _check_stage(stage, plan.argv(stage, t))
    if args.launch:
        check_launch(args.launch)
    # what defines the run (a rerun into OUT must match it); --iterations may grow to extend a finished run
    plan.recipe = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("dry_run", "fresh", "out", "iterations")}
    plan.recipe["recipe_file"] = load_yaml(args.config)
    return plan


def check_policy(policy: str) -> None:
    """pi_0 must exist before anything is written: the usual miss is running the pipeline before SFT."""
    from alignment.core.models import is_toy, model_source

    if is_toy(policy):
        return
    looks_local = policy.startswith((".", "/", "~")) or policy.count("/") > 1
    if looks_local and not Path(model_source(policy)).expanduser().exists():
        raise ConfigError(f"--policy: no such model folder {policy!r}; the initial policy is written by the SFT step "
                          f"(python -m alignment.sft --out runs/alignment/sft writes runs/alignment/sft/toy/model; "
                          f"bash alignment/toy.sh runs it first), or give --policy a model folder or Hub name")


def _changes(args: Args) -> dict:
    """Per stage, the [(where, values)] that change the recipe's section for this run: the recipe's per_sampler
    entry for --sampler, then --override."""
    import yaml

    changes = {stage: [] for stage in STAGES}
    for sampler, stages in (args.per_sampler or {}).items():
        where = f"--config: {args.config!r} per_sampler"
        sampler = canonical(sampler, PAIR_SAMPLER, "alignment", where)
        if not isinstance(stages, dict) or any(k not in STAGES or not isinstance(v, dict) for k, v in stages.items()):
            raise ConfigError(f"{where}: {sampler}: must map stage names ({', '.join(STAGES)}) to flag settings")
        if sampler == args.sampler:
            for stage, values in stages.items():
                changes[stage].append((f"{where} {sampler} {stage}", values))
    for item in args.override.split():
        key, eq, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not eq or not dot or stage not in STAGES or not name:
            raise ConfigError(f"--override: {item!r} must be STAGE.KEY=VALUE with STAGE one of {', '.join(STAGES)}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--override: {item!r}: the value is not valid YAML") from None
        changes[stage].append((f"--override {stage}", {name: parsed}))
    return changes


def _check_stage(stage: str, argv: list[str]) -> None:
    """Parse a stage's flags with its own parser and run its own checks (no model is loaded)."""
    from alignment.pipeline.dryrun import check_command

    try:
        check_command(MODULES[stage], argv)
    except ConfigError as e:
        if "rejects the flags" in str(e):
            raise ConfigError(f"--config: section {stage!r}: {e}") from None
        raise


LAUNCHERS = (("accelerate", "launch"), ("torchrun",), ("deepspeed",), ("python", "-m", "torch.distributed.run"),
             ("python3", "-m", "torch.distributed.run"))


def check_launcher(launch, where: str) -> list[str]:
    """The words of a launch prefix, which must begin with one of LAUNCHERS: a recipe's launch: runs in a shell-free
    subprocess, but any other program would still run whatever the recipe says."""
    try:
        words = shlex.split(launch) if isinstance(launch, str) else [str(w) for w in launch]
    except ValueError as e:
        raise ConfigError(f"{where}: cannot split {launch!r} into words ({e})") from None
    if not any(tuple(words[:len(k)]) == k for k in LAUNCHERS):
        raise ConfigError(f"{where}: {shlex.join(words) or '(empty)'!r} is not a known launcher; allowed: "
                          + ", ".join(" ".join(k) for k in LAUNCHERS[:4]) + " (followed by their options)")
    return words


def check_launch(launch: str) -> None:
    """--launch must start with a known launcher (so a recipe cannot run any command), and the accelerate config it
    names must exist and be valid YAML."""
    words = check_launcher(launch, "--launch")
    if "--config_file" in words:
        i = words.index("--config_file")
        if i + 1 >= len(words):
            raise ConfigError("--launch: --config_file needs a file name")
        cfg = load_yaml(words[i + 1], "--launch")
        if cfg.get("distributed_type") == "DEEPSPEED":
            if not isinstance(cfg.get("deepspeed_config"), dict):
                raise ConfigError(f"--launch: {words[i + 1]!r} sets distributed_type DEEPSPEED without deepspeed_config")
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:  # a note, not an error: dry runs happen on laptops
                print(f"# note: {words[i + 1]} uses DeepSpeed, which is not installed here "
                      f"(pip install -r requirements_vllm.txt on the GPU node)", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ prompts

def load_pipeline_prompts(spec: str, split: str, field_: str, template: str, flag: str,
                          benchmarks: bool = False) -> list[dict]:
    """Prompt rows {id, prompt}: toy prompts, or a file / Hub dataset's `field_` put into `template`. benchmarks
    (--eval-prompts): a file in MT-Bench's or AlpacaEval's own layout (it lacks `field_`, and evaluate recognises it)
    is read as evaluate reads it, its rows keeping their turns, question ids and dataset names for the exports;
    those rows are not put into the template (a judge compares the answers with its own questions)."""
    from alignment.core.data import load_rows, load_prompts, validate_prompts

    if spec == "toy" or spec.startswith("toy:"):
        rows = load_prompts(spec, flag, split=split, seed=0)
    else:
        rows = []
        loaded = load_rows(spec, flag, split)
        if benchmarks and loaded and field_ not in loaded[0]:
            from alignment.evaluate import LAYOUTS, load_eval_prompts

            if any(all(loaded[0].get(k) is not None for k in needs) for f, needs, _ in LAYOUTS if f != "prompt"):
                return apply_template(load_eval_prompts(spec, split, "auto"), template, flag)
        for i, row in enumerate(loaded):
            if field_ not in row:
                raise ConfigError(f"{flag}: {spec!r} row {i} has no field {field_!r} (--prompt-field); its fields: "
                                  f"{', '.join(sorted(row))}")
            rid = row.get("id", row.get("prompt_id", i))
            rows.append({"id": str(rid) if rid is not None else str(i), "prompt": row[field_]})
        rows = validate_prompts(rows, repr(spec), flag)
    return apply_template(rows, template, flag)


def apply_template(rows: list[dict], template: str, flag: str) -> list[dict]:
    """Each prompt put into --prompt-template (benchmark rows, those with "turns", as they are)."""
    if template == "{prompt}":
        return rows
    out = []
    for r in rows:
        if "turns" in r:
            out.append(r)
            continue
        text = r["prompt"]
        if isinstance(text, list):  # chat messages: the last user turn goes into the template
            users = [m["content"] for m in text if m.get("role") == "user"]
            if not users:
                raise ConfigError(f"{flag}: prompt id {r['id']!r} has no user message to put in --prompt-template")
            text = users[-1]
        out.append({"id": r["id"], "prompt": template.replace("{prompt}", text)})
    return out


def _write_prompts(plan: Plan, t: int, prompts: list[dict]) -> None:
    from alignment.core.data import write_jsonl

    n, k = plan.args.prompts_per_iteration, len(prompts)
    chunk = [prompts[(i + (t - 1) * n) % k] for i in range(min(n, k))]
    d = plan.stage_dir(t)
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "prompts.jsonl", chunk)


def iteration_row(plan: Plan, t: int) -> dict:
    """metrics.jsonl's line for iteration t, from the done stages' run folders."""
    from runlog import read_metrics, read_run

    d = plan.stage_dir(t)
    ev = read_metrics(d / "evaluate")[-1]
    row = {"iteration": t, "sampler": plan.args.sampler, "seed": plan.args.seed, "step": t}
    if plan.args.label:
        row["label"] = plan.args.label
    row.update({k: ev.get(k) for k in METRIC_KEYS})
    if t == 0:
        row.update(num_pairs=0, ties_dropped=0)
        return row
    tr = read_run(d / "train").get("summary", {})
    row.update(num_pairs=tr.get("num_pairs"), train_loss=tr.get("train_loss_mean"), train_steps=tr.get("steps"),
               ties_dropped=0)
    if not plan.args.preferences:
        ann = read_run(d / "annotate").get("summary", {})
        row.update(ties_dropped=ann.get("ties_dropped"), chosen_reward_mean=ann.get("mean_chosen_reward"),
                   rejected_reward_mean=ann.get("mean_rejected_reward"))
    if "select" in plan.stages(t):
        row["selected_pairs"] = read_run(d / "select").get("summary", {}).get("kept")
    return row


def summary_line(row: dict, total: int, seconds: float) -> str:
    f = lambda m, c: f"{row[m]:.3f} ± {row[c]:.3f}" if row.get(m) is not None and row.get(c) is not None \
        and not math.isnan(row[c]) else f"{row.get(m)}"
    pairs = "" if row["iteration"] == 0 else f", {row['num_pairs']} pairs ({row['ties_dropped']} ties dropped)"
    return (f"[{row.get('label', row['sampler'])} seed {row['seed']}] iteration {row['iteration']}/{total}: reward {f('reward_mean', 'reward_ci')}, "
            f"win rate {f('win_rate', 'win_rate_ci')}, KL {f('kl', 'kl_ci')}{pairs}  ({seconds:.0f} s)")


# ------------------------------------------------------------------------------------------------ running

def stage_args(plan: Plan, stage: str, t: int, extra: list[str] = ()):
    """(module, Args) of a stage at iteration t: the flags plan.argv gives it (what --dry-run prints and a launcher
    gets) and `extra` (a rerun's --resume), read by the stage's own parser."""
    from alignment.pipeline.dryrun import parse_command

    return parse_command(MODULES[stage], plan.argv(stage, t) + list(extra))


def resume_flags(plan: Plan, stage: str, t: int) -> list[str]:
    """["--resume"] for a train stage that a killed attempt left checkpoints of (its recipe has save_every): the rerun
    continues from the newest one instead of step 0."""
    from alignment.training.common import newest_checkpoint

    if stage != "train" or newest_checkpoint(plan.stage_dir(t) / f".{stage}.trainer") is None:
        return []
    print(f"[{plan.args.sampler} seed {plan.args.seed}] iteration {t}: resuming train from its newest checkpoint",
          flush=True)
    return ["--resume"]


def run_stage(plan: Plan, stage: str, t: int) -> None:
    """Run one stage (in this process as module.run(args), or through --launch), then write its done marker."""
    d = plan.stage_dir(t)
    log = d / f"{stage}.log"
    resuming = resume_flags(plan, stage, t)
    if plan.args.launch:
        command = plan.command(stage, t) + resuming
        print(f"# {shlex.join(command)}", flush=True)  # what runs, in full, before it runs
        with open(log, "a" if resuming else "w") as f:  # the stage's printed lines; its progress bar stays on the terminal
            code = subprocess.call(command, stdout=f)
        if code:
            raise ConfigError(f"{stage} of iteration {t} failed (exit code {code}); its output: {log}")
    else:
        module, args = stage_args(plan, stage, t, resuming)
        with open(log, "a" if resuming else "w") as f, contextlib.redirect_stdout(f):
            try:
                path = module.run(args)
            except ConfigError as e:
                raise ConfigError(f"{stage} of iteration {t}: {e} (its output: {log})") from None
            print(f"wrote {path}")
    resume.mark_done(d / stage, stage=stage, iteration=t)


def read_recipe(out: Path) -> dict | None:
    """OUT/pipeline.json of an earlier run (None when there is none); one error line when it does not read back."""
    path = out / "pipeline.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):  # not ours to overwrite on a guess: the user decides
        raise ConfigError(f"--out: {str(path)!r} is not readable JSON, so the run in {str(out)!r} cannot be "
                          f"checked against this recipe; restore the file, or use --fresh to start the run over") from None
    if not isinstance(old, dict):
        raise ConfigError(f"--out: {str(path)!r} is not a pipeline recipe (a JSON object); restore it, or use --fresh")
    return old


def _check_same_recipe(plan: Plan, write: bool = True) -> None:
    path = plan.out / "pipeline.json"
    recipe = json.loads(dumps(plan.recipe))
    if path.exists():
        old = read_recipe(plan.out)
        if old != recipe:
            changed = sorted(k for k in set(old) | set(recipe) if old.get(k) != recipe.get(k))
            raise ConfigError(f"--out: {str(plan.out)!r} holds a run of another recipe (differs in: "
                              f"{', '.join(changed)}); use another --out, or --fresh to start it over")
    if not write:
        return
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, recipe)


def _started(plan: Plan) -> str:
    """When this run (OUT) was first started: kept across resumes."""
    import datetime as dt

    try:
        return json.loads((plan.out / "run.json").read_text())["started"]
    except (OSError, ValueError, KeyError):
        return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_run_json(plan: Plan, started: str, summary: dict | None) -> None:
    """OUT/run.json (DESIGN.md section 5): finished stays null until the last iteration is done."""
    import datetime as dt

    from runlog.rundir import git_commit, package_versions

    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds") if summary is not None else None
    info = {"config": plan.recipe, "seeds": [plan.args.seed], "versions": package_versions(), "git_commit": git_commit(),
            "command": sys.argv, "started": started, "finished": finished}
    if summary is not None:
        info["summary"] = summary
    atomic_write_json(plan.out / "run.json", info)


def recipe_defaults(argv) -> dict:
    """The pipeline keys of the recipe named by --config in argv: the parser's defaults, which the flags override."""
    path = config_path(sys.argv[1:] if argv is None else list(argv))
    if path is None:
        return {}
    return check_section(Args, load_yaml(path), f"--config: {path!r}", skip=("config", "dry_run", "fresh", "out"))


def print_commands(plan: Plan) -> None:
    """What --dry-run prints: one comment line, then every stage's command in order."""
    a = plan.args
    print(f"# {a.sampler}, seed {a.seed}, {a.iterations} iterations -> {plan.out}   (all flags checked)")
    for t in range(0, a.iterations + 1):
        for stage in plan.stages(t):
            print(shlex.join(plan.command(stage, t)))


# what the driver writes into OUT (all that --fresh may delete): its recipe, log, table, eval prompts, iterations
OWN_ENTRIES = re.compile(r"(pipeline\.json|run\.json|metrics\.jsonl|eval_prompts\.jsonl|iter_\d+|"
                         r"\.(pipeline|run|metrics|eval_prompts)\.json(l)?\..*\.tmp)$")


def check_fresh(out: Path) -> None:
    """--fresh deletes only what this driver wrote (DESIGN section 6): OUT must hold the driver's own pipeline.json
    and nothing else than the driver's entries, and must not be the working directory, an ancestor of it, home or
    root. Checked before anything is deleted or written."""
    if not out.exists():
        return
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents or target in (Path.home().resolve(), Path(target.anchor)):
        raise ConfigError(f"--fresh: --out {str(out)!r} is the working directory, an ancestor of it, home or root; "
                          f"refusing to delete it (give the run's own folder as --out)")
    if not any(out.iterdir()):
        return
    if not (out / "pipeline.json").is_file():
        raise ConfigError(f"--fresh: {str(out)!r} holds no pipeline.json, so it is not a pipeline run folder; it is "
                          f"left alone (delete it yourself, or use another --out)")
    foreign = sorted(p.name for p in out.iterdir() if not OWN_ENTRIES.match(p.name))
    if foreign:
        raise ConfigError(f"--fresh: {str(out)!r} holds entries the pipeline did not write ("
                          f"{', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing deleted "
                          f"(move them out, or use another --out)")


def _fresh(out: Path) -> None:
    """--fresh: delete the driver's own entries of OUT (check_fresh has passed)."""
    if not out.exists():
        return
    for p in out.iterdir():
        if OWN_ENTRIES.match(p.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def run(args: Args) -> Path | None:
    """The iterative pipeline on parsed arguments (what `python -m alignment.pipeline` runs): every stage of every
    iteration, skipping the done ones. Under --dry-run: print the commands, run nothing and return None."""
    plan = resolve(args)
    t_total = args.iterations
    if args.dry_run:
        print_commands(plan)
        return None

    # everything is read and checked before anything is written or deleted: a refused command leaves nothing
    check_policy(args.policy)  # here, not in resolve: a recipe script checks its pipelines before its SFT step runs
    if args.fresh:
        check_fresh(plan.out)
    else:
        _check_same_recipe(plan, write=False)
    prompts = load_pipeline_prompts(args.prompts, args.split, args.prompt_field, args.prompt_template, "--prompts")
    eval_prompts = load_pipeline_prompts(args.eval_prompts, args.eval_split, args.prompt_field, args.prompt_template,
                                         "--eval-prompts", benchmarks=True)[:args.num_eval_prompts]
    if not args.fresh:  # a finished stage whose outputs do not read back: one line now, not after rewriting run.json
        for t in range(0, t_total + 1):
            for stage in plan.stages(t):
                resume.is_done(plan.stage_dir(t) / stage)
    if args.fresh:
        _fresh(plan.out)
    _check_same_recipe(plan)
    started = _started(plan)
    _write_run_json(plan, started, None)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; each stage keeps its own progress bar
    from alignment.core.data import write_jsonl

    write_jsonl(plan.out / "eval_prompts.jsonl", eval_prompts)
    rows, t0 = [], time.perf_counter()
    for t in range(0, t_total + 1):
        d = plan.stage_dir(t)
        for stage in plan.stages(t):  # what a killed attempt left
            resume.clean_partial(d / stage)
        t_start = time.perf_counter()
        if t > 0 and not args.preferences:
            _write_prompts(plan, t, prompts)
        for stage in plan.stages(t):
            if not resume.is_done(d / stage):
                d.mkdir(parents=True, exist_ok=True)
                run_stage(plan, stage, t)
        rows.append(iteration_row(plan, t))
        atomic_write_text(plan.out / "metrics.jsonl", "".join(dumps(r) + "\n" for r in rows))
        print(summary_line(rows[-1], t_total, time.perf_counter() - t_start), flush=True)
    _write_run_json(plan, started, {"iterations": t_total, "final": rows[-1],
                                    "wall_s_this_invocation": time.perf_counter() - t0})
    return plan.out


main = entry_point(Args, run, __doc__, defaults=recipe_defaults)
