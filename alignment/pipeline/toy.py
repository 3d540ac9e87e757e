"""The toy comparisons on a laptop CPU: what alignment/toy.sh and alignment/toy_selection.sh run.

    python -m alignment.pipeline.toy toy [--out DIR] [--dry-run]              the samplers (online DPO)
    python -m alignment.pipeline.toy toy_selection [--out DIR] [--dry-run]    the selectors (a fixed noisy set)

(NAME --help for each one's steps, flags and environment variables). Every command is checked first (its own
module's parser and checks, every pipeline's stages included) in this process; --dry-run prints them and writes
nothing; otherwise they run, the pipelines JOBS at a time, with the pipeline's resume rule
(alignment/pipeline/resume.py): a rerun skips what is done and continues a killed run where it stopped.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from alignment.pipeline import resume
from alignment.pipeline.commands import (PYTHON, StageFailed, check_seed_text, check_uint, dispatch, parse_script, script_parser,
                                         script_path)
from bandit.vocabulary import PAIR_SAMPLER, SELECTOR, canonical
from runlog import ConfigError, check_out

# the runs go in parallel, one torch thread each (torch's threads stall when cores are shared); no network
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

TOY_USAGE = """\
usage: {script} [--out DIR] [--dry-run]          (also: {script} DIR)

The sampler comparison on the toy task, on a laptop CPU (about 8 minutes on 2 cores, 10 seeds):
  1. SFT of the ~1M-parameter toy policy and training of the toy reward model, in parallel:
       python -m alignment.sft --out DIR/sft $SFT_FLAGS;  python -m alignment.reward_model --out DIR/reward_model $RM_FLAGS
  2. The iterative DPO pipeline for each sampler and seed, in JOBS processes that each run their share one after
     the other (alignment.pipeline.chain: the libraries are imported once per process, not once per run):
       python -m alignment.pipeline --config $RECIPE $PIPELINE_FLAGS --policy DIR/sft/toy/model
         --reward DIR/reward_model/toy --sampler S --seed N --out DIR/pipeline/S-seedN
     (alignment/configs/toy.yaml: 3 iterations of generate -> annotate with the reward model -> DPO -> evaluate
     with the true reward)
  3. The report (alignment.report): the table (sampler x iteration: true reward, win rate against the initial
     policy, KL), the same with 95% intervals over the seeds, the samplers' differences paired by seed with
     Holm-adjusted tests, the reward at matched KL budgets, and the minimum detectable paired difference (80%
     power, 5% level) of this run; and the reward-vs-KL figure: DIR/table.md, DIR/table.csv,
     DIR/reward_vs_kl.png (and .pdf)
Logs: DIR/logs/. Every command is checked before the first one runs. Rerunning resumes: finished stages are
kept, a killed run continues where it stopped.

  --out DIR      output folder (default runs/alignment/toy)
  --dry-run      check every command (each pipeline's stages included) and print them; run and write nothing
  -h, --help     this help
Environment:
  SAMPLERS       samplers (default "offline on_policy gshf mix_p"; aliases accepted: online, mixp, ...)
  SEEDS          seeds (default "0 1 2 3 4 5 6 7 8 9": the seed is the unit of replication, see the report)
  JOBS           pipelines at a time (default 2)
  RECIPE         the pipeline recipe (default alignment/configs/toy.yaml)
  SFT_FLAGS, RM_FLAGS, PIPELINE_FLAGS   extra flags of alignment.sft, alignment.reward_model, alignment.pipeline
                 (split like a shell command line), e.g. PIPELINE_FLAGS="--iterations 1"
  OMP_NUM_THREADS  torch threads per process (default 1)
  PYTHON         the Python that runs everything (default: python on PATH)
"""

SELECTION_USAGE = """\
usage: {script} [--out DIR] [--dry-run]          (also: {script} DIR)

Which pairs of a noisy offline preference set should DPO train on? The toy comparison (CPU, ~10 minutes):
  1. The SFT toy policy, then one offline preference set: 2 responses per prompt from the SFT policy, labelled by
     the true reward, FLIP of the labels swapped:
       python -m alignment.sft --out DIR/sft $SFT_FLAGS
       python -m alignment.generate --policy DIR/sft/toy/model --sampler offline --prompts toy:$NUM_PROMPTS
         --num-responses 2 --max-new-tokens 32 --batch-size 64 --device cpu --out DIR/data --name generate $DATA_FLAGS
       python -m alignment.annotate --generations DIR/data/generate --reward toy-oracle --rule max_min --flip $FLIP
         --out DIR/data --name annotate
  2. DPO on that set per method and seed (python -m alignment.pipeline --config $RECIPE $PIPELINE_FLAGS
     --preferences DIR/data/annotate --policy DIR/sft/toy/model --label M --seed N --out DIR/runs/M-seedN
     --override ..., alignment/configs/toy_selection.yaml, the pipeline's offline regime), JOBS at a time:
       all            all pairs (alias full)
       random_subset  a random RATIO of every batch            (train.selector; same loss normalisation as sams)
       sams           SamS: the scheduler's top RATIO of every batch
       us, ae         the RATIO of every candidate batch with the largest MC-dropout uncertainty / AE width
       reward_gap     one-shot: the RATIO of pairs with the smallest implicit-reward gap under the "all" model
                      (run after the "all" runs of its seeds)
  3. A table (method: true reward, win rate against the SFT policy, KL, 95% CIs) and a reward-vs-KL figure:
     DIR/table.md, DIR/table.csv, DIR/selection.png (and .pdf); what reward_gap kept: DIR/runs/reward_gap-seed*/.
Logs: DIR/logs/. Every command is checked before the first one runs. Rerunning resumes.

  --out DIR      output folder (default runs/alignment/toy_selection)
  --dry-run      check every command (each pipeline's stages included) and print them; run and write nothing
  -h, --help     this help
Environment:
  METHODS        methods (default "all random_subset sams us ae reward_gap"; aliases accepted: full, none)
  SEEDS          seeds (default "0 1")
  JOBS           pipelines at a time (default 2)
  FLIP           fraction of flipped labels (default 0.2)
  RATIO          fraction kept by every selector (default 0.5)
  NUM_PROMPTS    prompts of the preference set (default 1024)
  RECIPE         the pipeline recipe (default alignment/configs/toy_selection.yaml)
  SFT_FLAGS, DATA_FLAGS, PIPELINE_FLAGS   extra flags of alignment.sft, alignment.generate, alignment.pipeline
                 (split like a shell command line)
  OMP_NUM_THREADS  torch threads per process (default 1)
  PYTHON         the Python that runs everything (default: python on PATH)
"""


@dataclass
class Job:
    """One command: its run folder (done: the folder and its marker; for a pipeline, the pipeline's own resume),
    its log (all of its output, or only stderr when stdout shows progress), and its Args once checked."""
    label: str
    words: list
    log: Path
    folder: Path | None = None    # a stage run: skipped when done, marked done when it succeeds
    stdout_to_log: bool = True    # False: stdout on the terminal (the pipelines' summary lines), stderr to the log
    plan: object = field(default=None, repr=False)


def env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or not value.strip() else value


def env_words(name: str) -> list[str]:
    try:
        return shlex.split(os.environ.get(name, ""))
    except ValueError as e:
        raise ConfigError(f"{name}: cannot split {os.environ.get(name)!r} into flags ({e})") from None


def env_ratio(name: str, default: str) -> str:
    value = env(name, default)
    try:
        ok = 0 <= float(value) <= 1
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name}: must be a number in [0, 1], got {value!r}")
    return value


def _parse(name: str, usage: str, argv):
    parser = script_parser(f"{name}.sh")
    parser.add_argument("--out", default=None)
    parser.add_argument("--dry-run", dest="dry_run", action="store_true")
    parser.add_argument("DIR", nargs="?", default=None)  # the older form: the output folder alone
    args, _ = parse_script(parser, argv, usage.format(script=script_path(name)), passthrough=False,
                           positional=("DIR",))
    if args.out is not None and args.DIR is not None:
        parser.error(f"the output folder is given twice: --out {args.out} and {args.DIR}")
    out = Path(args.out or args.DIR or f"runs/alignment/{name}")
    check_out(out, "--out" if args.DIR is None else "DIR")  # one line now, not a traceback at the first mkdir
    return out, args.dry_run


def _names(var: str, default: str, family: str, allowed=None) -> list[str]:
    """The canonical names in the environment variable `var` (aliases accepted, repeats dropped)."""
    out = []
    for n in env(var, default).split():
        c = canonical(n, family, "alignment", var, allowed=allowed)
        if c not in out:
            out.append(c)
    return out


# ------------------------------------------------------------------------------------------------ checking

def check_stage(job: Job) -> None:
    """A stage's command through its own module's parser and checks (alignment.pipeline.dryrun)."""
    from alignment.pipeline.dryrun import check_command, split_command

    check_command(*split_command(list(job.words)))


def check_pipeline(job: Job, check_preferences: bool = True) -> None:
    """A pipeline command: its flags, its recipe and every stage's flags (the driver's resolve, in this process)."""
    from alignment.pipeline import driver
    from alignment.pipeline.dryrun import parse_command, split_command

    module, flags = split_command(list(job.words))
    _, args = parse_command(module, flags)
    job.plan = driver.resolve(args, check_preferences=check_preferences)


def show(jobs: list[Job]) -> None:
    for i, job in enumerate(jobs):
        where = f" -> {job.folder}" if job.folder else ""
        print(f"# [{i + 1}/{len(jobs)}] {job.label}{where}")
        print(shlex.join(job.words))


# ------------------------------------------------------------------------------------------------ running

def run_jobs(jobs: list[Job], at_once: int) -> None:
    """Run the jobs, `at_once` at a time; a job with a done folder is skipped, a finished one is marked done. After a
    failure no new job starts; the ones running finish, then StageFailed names the failed ones' logs."""
    stop, failed, lock = threading.Event(), [], threading.Lock()

    def one(job: Job) -> None:
        if stop.is_set():
            return
        if job.folder is not None:
            if resume.is_done(job.folder):
                return
            resume.clean_partial(job.folder)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "w") as log:
            code = subprocess.call(list(job.words), stdout=log if job.stdout_to_log else None, stderr=log)
        if code == 0 and job.folder is not None and not (job.folder / "run.json").is_file():
            code = 1
        if code:
            stop.set()
            with lock:
                failed.append(job)
            print(f"failed: {job.label}, see {job.log}", file=sys.stderr, flush=True)
        elif job.folder is not None:
            resume.mark_done(job.folder, stage=job.label, command=list(job.words))

    with ThreadPoolExecutor(max_workers=max(1, at_once)) as pool:
        list(pool.map(one, jobs))
    if failed:
        raise StageFailed(f"{len(failed)} command(s) failed: " + "; ".join(f"{j.label} ({j.log})" for j in failed), 1)


def run_slots(jobs: list[Job], at_once: int, logs: Path) -> None:
    """The pipeline jobs in `at_once` processes (alignment.pipeline.chain), job i in slot i mod at_once, each slot
    running its jobs one after the other in-process: torch, transformers and TRL are imported once per slot, not
    once per pipeline. Once a job fails no slot starts a new one; then StageFailed names the failed ones' logs."""
    import json

    stop = logs / ".stop"
    stop.unlink(missing_ok=True)
    slots = [jobs[i::at_once] for i in range(min(max(1, at_once), len(jobs)))]
    procs = []
    for slot in slots:
        plan = {"stop": str(stop), "runs": [{"label": j.label, "log": str(j.log), "argv": list(j.words[3:])}
                                            for j in slot]}
        procs.append(subprocess.Popen([PYTHON, "-m", "alignment.pipeline.chain", json.dumps(plan)]))
    codes = [p.wait() for p in procs]
    stop.unlink(missing_ok=True)
    if any(codes):
        if any(c in (130, 143) for c in codes):
            raise KeyboardInterrupt
        unfinished = [j for j in jobs if not _finished(j)]
        raise StageFailed(f"{len(unfinished)} of {len(jobs)} pipelines did not finish (the failed one is named above, "
                          f"with its log); rerun to continue where they stopped", 1)


def _finished(job: Job) -> bool:
    """A pipeline job's run folder holds a finished run.json (the driver writes 'finished' at its last iteration)."""
    import json

    out = Path(job.words[job.words.index("--out") + 1]) / "run.json"
    try:
        return json.loads(out.read_text()).get("finished") is not None
    except (OSError, ValueError, AttributeError):
        return False


def run_plain(words: list[str]) -> None:
    code = subprocess.call(words)
    if code:
        raise StageFailed(f"failed (exit code {code}): {shlex.join(words)}", code)


def _grep(paths, pattern: str, first: bool = False) -> None:
    """Print the lines of the logs that match (what a step's log says about its result)."""
    for path in paths:
        if not Path(path).is_file():
            continue
        for line in Path(path).read_text(errors="replace").splitlines():
            if re.search(pattern, line):
                print(line)
                if first:
                    return


def _setup(out: Path, dry_run: bool) -> None:
    os.environ.update(CHILD_ENV)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ------------------------------------------------------------------------------------------------ toy

def toy(argv) -> None:
    out, dry_run = _parse("toy", TOY_USAGE, argv)
    samplers = _names("SAMPLERS", "offline on_policy gshf mix_p", PAIR_SAMPLER)
    seeds = [check_seed_text("SEEDS", s) for s in env("SEEDS", " ".join(map(str, range(10)))).split()]
    jobs_at_once = check_uint("JOBS", env("JOBS", "2"), 1)
    recipe = env("RECIPE", "alignment/configs/toy.yaml")
    pipeline_flags = env_words("PIPELINE_FLAGS")
    logs = out / "logs"
    sft = Job("the SFT policy", [PYTHON, "-m", "alignment.sft", "--out", str(out / "sft"), *env_words("SFT_FLAGS")],
              logs / "sft.log", out / "sft" / "toy")
    rm = Job("the reward model", [PYTHON, "-m", "alignment.reward_model", "--out", str(out / "reward_model"),
                                  *env_words("RM_FLAGS")], logs / "reward_model.log", out / "reward_model" / "toy")
    pipelines = [Job(f"{s} seed {seed}", [PYTHON, "-m", "alignment.pipeline", "--config", recipe, *pipeline_flags,
                                          "--policy", str(sft.folder / "model"), "--reward", str(rm.folder),
                                          "--sampler", s, "--seed", str(seed),
                                          "--out", str(out / "pipeline" / f"{s}-seed{seed}")],
                     logs / f"{s}-seed{seed}.log", stdout_to_log=False)
                 for s in samplers for seed in seeds]
    report = [PYTHON, "-m", "alignment.report", str(out / "pipeline"), "--figure", str(out / "reward_vs_kl.png"),
              "--markdown", str(out / "table.md"), "--csv", str(out / "table.csv")]
    _setup(out, dry_run)
    for job in (sft, rm):
        check_stage(job)
    for job in pipelines:
        check_pipeline(job)
    if not dry_run:  # only after every command is checked: a refused command leaves nothing
        out.joinpath("logs").mkdir(parents=True, exist_ok=True)
    if dry_run:
        show([sft, rm] + pipelines)
        print(shlex.join(report))
        return

    start = time.perf_counter()
    print(f"== 1/3 the SFT policy and the reward model (logs: {logs})", flush=True)
    run_jobs([sft, rm], 2)
    _grep([sft.log, rm.log], r"held-out|fluency")
    print(f"== 2/3 the pipelines: samplers {{{' '.join(samplers)}}} x seeds {{{' '.join(map(str, seeds))}}}, "
          f"{jobs_at_once} at a time", flush=True)
    run_slots(pipelines, jobs_at_once, logs)
    print("== 3/3 the report and the figure", flush=True)
    run_plain(report)
    print(f"done in {time.perf_counter() - start:.0f} s: {out}")


# ------------------------------------------------------------------------------------------------ toy_selection

SELECTION_METHODS = ("all", "random_subset", "sams", "us", "ae", "reward_gap")


def selection_override(method: str, ratio: str, out: Path, seed: int) -> str:
    """The recipe changes (--override) of one method's pipeline."""
    if method == "all":
        return ""
    if method == "reward_gap":  # its selection model: the "all" run's trained policy
        return (f"select.method=reward_gap select.ratio={ratio} select.beta=0.5 "
                f"select.policy={out / 'runs' / f'all-seed{seed}' / 'iter_1' / 'train'}")
    return f"train.selector={method} train.select_ratio={ratio}"


def toy_selection(argv) -> None:
    out, dry_run = _parse("toy_selection", SELECTION_USAGE, argv)
    methods = _names("METHODS", " ".join(SELECTION_METHODS), SELECTOR, allowed=SELECTION_METHODS)
    seeds = [check_seed_text("SEEDS", s) for s in env("SEEDS", "0 1").split()]
    jobs_at_once = check_uint("JOBS", env("JOBS", "2"), 1)
    flip, ratio = env_ratio("FLIP", "0.2"), env_ratio("RATIO", "0.5")
    num_prompts = check_uint("NUM_PROMPTS", env("NUM_PROMPTS", "1024"), 1)
    recipe = env("RECIPE", "alignment/configs/toy_selection.yaml")
    pipeline_flags = env_words("PIPELINE_FLAGS")
    logs = out / "logs"
    sft = Job("the SFT policy", [PYTHON, "-m", "alignment.sft", "--out", str(out / "sft"), *env_words("SFT_FLAGS")],
              logs / "sft.log", out / "sft" / "toy")
    policy = str(sft.folder / "model")
    generate = Job("the offline responses", [
        PYTHON, "-m", "alignment.generate", "--policy", policy, "--sampler", "offline", "--prompts",
        f"toy:{num_prompts}", "--num-responses", "2", "--max-new-tokens", "32", "--batch-size", "64", "--device",
        "cpu", "--out", str(out / "data"), "--name", "generate", *env_words("DATA_FLAGS")],
        logs / "generate.log", out / "data" / "generate")
    annotate = Job(f"the labels ({flip} flipped)", [
        PYTHON, "-m", "alignment.annotate", "--generations", str(generate.folder), "--reward", "toy-oracle", "--rule",
        "max_min", "--flip", flip, "--out", str(out / "data"), "--name", "annotate"],
        logs / "annotate.log", out / "data" / "annotate")

    def pipeline(m: str, seed: int) -> Job:
        return Job(f"{m} seed {seed}", [
            PYTHON, "-m", "alignment.pipeline", "--config", recipe, *pipeline_flags, "--preferences",
            str(annotate.folder), "--policy", policy, "--label", m, "--seed", str(seed),
            "--out", str(out / "runs" / f"{m}-seed{seed}"), "--override", selection_override(m, ratio, out, seed)],
            logs / f"{m}-seed{seed}.log", stdout_to_log=False)

    first = [pipeline(m, s) for m in methods if m != "reward_gap" for s in seeds]
    gap = [pipeline("reward_gap", s) for s in seeds] if "reward_gap" in methods else []
    # reward_gap's selection model is the "all" run of its seed: run it first where it is not done
    needed = [pipeline("all", s) for s in seeds if gap and "all" not in methods
              and not resume.is_done(out / "runs" / f"all-seed{s}" / "iter_1" / "train")]
    report = [PYTHON, "-m", "alignment.report", str(out / "runs"), "--figure", str(out / "selection.png"),
              "--markdown", str(out / "table.md"), "--csv", str(out / "table.csv")]
    _setup(out, dry_run)
    for job in (sft, generate, annotate):
        check_stage(job)
    data_ready = resume.is_done(annotate.folder)  # else step 1 writes it: its rows are read when the pipelines run
    for job in first + needed + gap:
        check_pipeline(job, check_preferences=data_ready)
    if not dry_run:  # only after every command is checked: a refused command leaves nothing
        out.joinpath("logs").mkdir(parents=True, exist_ok=True)
    if dry_run:
        show([sft, generate, annotate] + first + needed + gap)
        print(shlex.join(report))
        return

    start = time.perf_counter()
    print(f"== 1/3 the SFT policy and the offline preference set ({flip} of the labels flipped)", flush=True)
    for job in (sft, generate, annotate):
        run_jobs([job], 1)
    _grep([annotate.log], r"pairs", first=True)
    print(f"== 2/3 DPO per method {{{' '.join(methods)}}} and seed {{{' '.join(map(str, seeds))}}}, "
          f"{jobs_at_once} at a time", flush=True)
    run_jobs(first + needed, jobs_at_once)
    run_jobs(gap, jobs_at_once)
    print("== 3/3 the table and the figure", flush=True)
    run_plain(report)
    import json

    for job in gap:
        metrics = Path(job.words[job.words.index("--out") + 1]) / "iter_1" / "select" / "metrics.jsonl"
        if metrics.is_file():
            row = json.loads(metrics.read_text().splitlines()[0])
            print(metrics.parts[-4], {k: v for k, v in row.items() if "flip" in k})
    print(f"done in {time.perf_counter() - start:.0f} s: {out}")


SCRIPTS = {"toy": toy, "toy_selection": toy_selection}


def main(argv=None) -> None:
    dispatch("alignment.pipeline.toy", __doc__, SCRIPTS, "a comparison", argv)


if __name__ == "__main__":
    main()
