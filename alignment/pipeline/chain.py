"""Several pipeline runs one after the other in one process: what each of alignment/toy.sh's JOBS slots runs, so that
torch, transformers and TRL are imported once per slot instead of once per pipeline (about 5 s a pipeline on a
2-core CPU, a sixth of a toy pipeline's time).

    python -m alignment.pipeline.chain PLAN

PLAN is JSON: {"stop": PATH, "runs": [{"label": TEXT, "log": PATH, "argv": [alignment.pipeline's flags]}, ...]}.
Each run is alignment.pipeline's main(argv) in this process, with its stderr (progress bars, the error line) in its
log and its stdout (the iteration summary lines) on ours, exactly as `python -m alignment.pipeline ARGV 2> LOG`
would run it. A run's result does not depend on what ran before it in the process: every stage seeds itself from
its flags (the kill-and-resume test checks the same of a stage rerun in a fresh process).

The chain stops at its first failed run: it creates the stop file, prints "failed: LABEL, see LOG" and exits 1.
Before each run it looks for the stop file, so that once one slot fails the other slots start nothing new (the
runs going on finish). Ctrl-C or SIGTERM ends the run going on as alignment.pipeline does (exit 130 or 143).
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path


def run_chain(plan: dict) -> int:
    from alignment.pipeline import driver

    stop = Path(plan["stop"])
    for run in plan["runs"]:
        if stop.exists():
            return 0
        log = Path(run["log"])
        log.parent.mkdir(parents=True, exist_ok=True)
        # run.json records sys.argv as the command: the one `python -m alignment.pipeline ARGV` has (analysis
        # tells a pipeline run by it), not this chain's
        saved, sys.argv = sys.argv, [str(Path(driver.__file__).with_name("__main__.py")), *run["argv"]]
        try:
            with open(log, "w") as f, contextlib.redirect_stderr(f):
                try:
                    driver.main(list(run["argv"]))
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv = saved
        if code in (130, 143):  # interrupted: the signal's own code, nothing more to say
            return code
        if code:
            stop.touch()
            print(f"failed: {run['label']}, see {log}", file=sys.stderr, flush=True)
            return 1
    return 0


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m alignment.pipeline.chain PLAN (JSON; see the module doc)", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_chain(json.loads(argv[0])))


if __name__ == "__main__":
    main()
