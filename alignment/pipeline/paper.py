"""The samplers paper's recipes: the iterative pipeline (alignment.pipeline) with a recipe alignment/configs/NAME.yaml
for each sampler, then the report (alignment.report).

    python -m alignment.pipeline.paper safe_rlhf [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm]
    python -m alignment.pipeline.paper iterative_prompt ...  [-- PIPELINE FLAGS]

(what alignment/safe_rlhf.sh and iterative_prompt.sh run; NAME --help for the flags). Every sampler's pipeline is
resolved first, in this process (its flags, its recipe, every stage's flags: a bad value stops the recipe before
its first GPU hour); --dry-run then prints each pipeline's command and its stages' commands, running, loading and
writing nothing; otherwise each pipeline runs as `python -m alignment.pipeline` (which resumes: a rerun continues
where it stopped) and the report follows.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from alignment.pipeline.commands import (PYTHON, StageFailed, check_seed_text, check_uint, parse_script, run_script, script_parser,
                                         script_path)
from bandit.vocabulary import PAIR_SAMPLER, canonical
from runlog import ConfigError

SAMPLERS = ("offline", "on_policy", "gshf", "mix_p")  # the paper's four
KNOWN = ("offline", "on_policy", "gshf", "mix_p", "mix_p_seq")  # borda has recipes of its own
VLLM_OVERRIDE = "generate.backend=vllm generate.batch_size=null"  # vLLM batches all prompts itself

USAGE = """\
usage: {script} [--dry-run] [--sampler S] [--seed N] [--out DIR] [--backend hf|vllm] [-- PIPELINE FLAGS]

Runs python -m alignment.pipeline --config {config} --sampler S --seed N --out DIR/S-seedN
for S in offline on_policy gshf mix_p (or just --sampler S), then python -m alignment.report DIR.
A sampler's own settings are in the recipe's per_sampler: section.
Every sampler's pipeline is checked (its flags and every stage's) before the first one runs.
A finished stage is never rerun: run the same command again to resume.

  --dry-run        resolve and check every stage's flags and print the commands; run, load and write nothing
                   (no GPU, model or dataset needed)
  --sampler S      one sampler: offline, on_policy, gshf, mix_p or mix_p_seq, or an alias (default: the paper's four)
  --seed N         seed of every stage (default 0)
  --out DIR        output folder (default runs/alignment/{name})
  --backend B      generation backend: hf (default) or vllm (also: env BACKEND). vllm applies to offline,
                   on_policy, gshf and mix_p_seq, as the pipeline flag
                   --override "{vllm}";
                   mix_p fuses logits token by token and always uses hf.
  -- FLAGS         pass the remaining flags to alignment.pipeline, e.g. -- --fresh, or
                   -- --launch 'accelerate launch --config_file alignment/configs/zero3.yaml --num_processes 4';
                   an --override here is joined after the script's own (its items win)
  -h, --help       this help
Env: PYTHON (default: python on PATH): the Python that runs the recipe; BACKEND (default hf): as --backend.
"""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def split_override(extra: list[str]) -> tuple[str, list[str]]:
    """(the --override items among the pipeline flags, joined; the other flags). The pipeline keeps only the last
    --override it is given, so a user's items join the script's instead (a last --override without a value stays,
    for the pipeline to refuse)."""
    override, rest, i = "", [], 0
    while i < len(extra):
        w = extra[i]
        if w.startswith("--override="):
            override = _join(override, w.split("=", 1)[1])
        elif w == "--override" and i + 1 < len(extra):
            i += 1
            override = _join(override, extra[i])
        else:
            rest.append(w)
        i += 1
    return override, rest


def pipeline_commands(name: str, argv) -> tuple:
    """(the parsed flags, [the pipeline command of each sampler, as a function of dry_run])."""
    config = f"alignment/configs/{name}.yaml"
    parser = script_parser(f"{name}.sh")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--out", default=f"runs/alignment/{name}")
    parser.add_argument("--backend", default=os.environ.get("BACKEND") or "hf")
    args, extra = parse_script(parser, argv, USAGE.format(script=script_path(name), config=config, name=name,
                                                          vllm=VLLM_OVERRIDE))
    samplers = SAMPLERS if args.sampler is None else (canonical(args.sampler, PAIR_SAMPLER, "alignment", "--sampler",
                                                                allowed=KNOWN),)
    seed = check_seed_text("--seed", args.seed)
    if args.backend not in ("hf", "vllm"):
        raise ConfigError(f"--backend: must be hf or vllm, got {args.backend!r}")
    user_override, rest = split_override(extra)
    commands = []
    for s in samplers:
        override = ""
        if args.backend == "vllm":
            if s == "mix_p":
                print("# mix_p fuses two models' logits token by token, which only the hf backend can do: "
                      "mix_p keeps hf", file=sys.stderr)
            else:
                override = VLLM_OVERRIDE
        override = _join(override, user_override)
        head = [PYTHON, "-m", "alignment.pipeline", "--config", config, "--sampler", s, "--seed", str(seed),
                "--out", str(Path(args.out) / f"{s}-seed{seed}")] + (["--override", override] if override else [])
        commands.append(lambda dry_run, head=head: head + (["--dry-run"] if dry_run else []) + rest)
    return args, commands


def run(name: str, argv) -> None:
    from alignment.pipeline import driver
    from alignment.pipeline.dryrun import parse_command

    if not Path(f"alignment/configs/{name}.yaml").is_file():
        raise ConfigError(f"the first argument must name a recipe alignment/configs/NAME.yaml, got {name!r}")
    args, commands = pipeline_commands(name, argv)
    plans = []
    for command in commands:  # every pipeline checked before the first one runs
        _, pipeline_args = parse_command("alignment.pipeline", command(False)[3:])
        plans.append(driver.resolve(pipeline_args))
    for command, plan in zip(commands, plans):
        words = command(args.dry_run)
        print("# " + shlex.join(words), flush=True)
        if args.dry_run:
            driver.print_commands(plan)
            continue
        code = subprocess.call(words)
        if code:
            raise StageFailed(f"the {plan.args.sampler} pipeline failed (exit code {code}): {shlex.join(words)}", code)
    if not args.dry_run:
        code = subprocess.call([PYTHON, "-m", "alignment.report", args.out])
        if code:
            raise StageFailed(f"the report failed (exit code {code})", code)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    name = argv[0] if argv else ""
    run_script(f"{name or 'paper'}.sh", lambda rest: run(name, rest), argv[1:])


if __name__ == "__main__":
    main()
