"""Issue 14's bad inputs of the pipeline's entry points: the iterative driver, the toy comparisons (toy.sh,
toy_selection.sh), the offline recipes (sams.sh, active.sh, difficulty.sh) and the paper's recipes (safe_rlhf.sh,
iterative_prompt.sh). A shell script is `exec python -m alignment.pipeline.X NAME "$@"`, so its rows call that main
with NAME first. The scripts read their recipes as alignment/configs/NAME.yaml from the working directory: rows that
need one copy the repository's recipe into the row's folder first (setup)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.bad_inputs import Row, write

REPO = Path(__file__).resolve().parents[2]
TOY = str(REPO / "alignment" / "configs" / "toy.yaml")
DRIVER, TOYS, OFFLINE, PAPER = ("alignment.pipeline.driver", "alignment.pipeline.toy", "alignment.pipeline.offline",
                                "alignment.pipeline.paper")


def recipe_copy(name: str, replace: tuple = ()):
    """setup: the repository's alignment/configs/NAME.yaml in the row's folder, with `replace` (old, new) applied."""
    def setup(folder: Path) -> None:
        text = (REPO / "alignment" / "configs" / f"{name}.yaml").read_text()
        for old, new in replace:
            text = text.replace(old, new)
        write(folder / "alignment" / "configs" / f"{name}.yaml", text)
    return setup


def run_folder_with_foreign_file(folder: Path) -> None:
    write(folder / "thesis" / "pipeline.json", json.dumps({"sampler": "on_policy"}))
    write(folder / "thesis" / "chapter1.tex", "\\chapter{Introduction}\n")


ROWS = [
    # the iterative driver (python -m alignment.pipeline)
    Row("out-is-a-file", DRIVER, ["--config", TOY, "--policy", "toy", "--out", "taken"], "--out", 1,
        setup=lambda f: write(f / "taken", "a file\n")),
    Row("out-under-proc", DRIVER, ["--config", TOY, "--policy", "toy", "--out", "/proc/pipeline"], "--out", 1),
    Row("seed-2-to-32", DRIVER, ["--config", TOY, "--policy", "toy", "--seed", str(2**32)], "--seed", 2),
    Row("derived-seed-too-large", DRIVER, ["--config", TOY, "--policy", "toy", "--seed", "4294967",
                                            "--iterations", "1000"], "--seed", 2),
    Row("iterations-true-in-recipe", DRIVER, ["--config", "r.yaml", "--policy", "toy"], "iterations", 3,
        setup=lambda f: write(f / "r.yaml", "iterations: true\ntrain: {}\n")),
    Row("recipe-not-utf8", DRIVER, ["--config", "r.yaml", "--policy", "toy"], "r.yaml", 3,
        setup=lambda f: write(f / "r.yaml", b"train:\n  lr: \xff\xfe\n")),
    Row("truncated-pipeline-json", DRIVER, ["--config", TOY, "--policy", "toy", "--out", "run"], "pipeline.json", 3,
        setup=lambda f: write(f / "run" / "pipeline.json", '{"sampler": "on_pol')),
    Row("missing-default-policy", DRIVER, ["--config", TOY, "--out", "run"], "alignment.sft", 4),
    Row("only-pipeline-keys", DRIVER, ["--config", "r.yaml", "--policy", "toy"], "stage section", 5,
        setup=lambda f: write(f / "r.yaml", "iterations: 2\nseed: 3\n")),
    Row("fresh-on-foreign-folder", DRIVER, ["--config", TOY, "--policy", "toy", "--out", "thesis", "--fresh"],
        "chapter1.tex", 6, setup=run_folder_with_foreign_file),
    Row("fresh-on-working-directory", DRIVER, ["--config", TOY, "--policy", "toy", "--out", ".", "--fresh"],
        "working directory", 6, setup=lambda f: write(f / "pipeline.json", "{}")),
    Row("launch-rm", DRIVER, ["--config", TOY, "--policy", "toy", "--launch", "rm -rf ."], "--launch", 6),
    Row("unknown-flag", DRIVER, ["--config", TOY, "--bogus"], "--bogus", 5),
    # the toy comparisons (toy.sh, toy_selection.sh)
    Row("toy-unknown-flag", TOYS, ["toy", "--bogus"], "--bogus", 5),
    Row("toy-out-is-a-file", TOYS, ["toy", "--out", "taken"], "--out", 1, setup=lambda f: write(f / "taken", "x\n")),
    Row("toy-out-under-proc", TOYS, ["toy", "--out", "/proc/toy"], "--out", 1),
    Row("toy-dir-twice", TOYS, ["toy", "--out", "a", "b"], "twice", 5),
    Row("toy-no-such-script", TOYS, ["toy_bogus"], "toy_bogus", 5),
    Row("toy-selection-out-under-proc", TOYS, ["toy_selection", "--out", "/proc/sel"], "--out", 1),
    Row("toy-seeds-2-to-32", TOYS, ["toy", "--dry-run"], "SEEDS", 2, env={"SEEDS": f"0 {2**32}"}),
    Row("toy-seeds-not-a-number", TOYS, ["toy", "--dry-run"], "SEEDS", 2, env={"SEEDS": "0 one"}),
    Row("toy-recipe-not-utf8", TOYS, ["toy", "--dry-run"], "r.yaml", 3, env={"RECIPE": "r.yaml"},
        setup=lambda f: write(f / "r.yaml", b"iterations: \xff\xfe\n")),
    Row("toy-recipe-missing", TOYS, ["toy", "--dry-run"], "nope.yaml", 3, env={"RECIPE": "nope.yaml"}),
    # the offline recipes (sams.sh, active.sh, difficulty.sh)
    Row("sams-unknown-flag", OFFLINE, ["sams", "--bogus"], "--bogus", 5),
    Row("sams-seed-2-to-32", OFFLINE, ["sams", "--seed", str(2**32)], "--seed", 2, setup=recipe_copy("sams")),
    Row("sams-seed-negative", OFFLINE, ["sams", "--seed", "-1"], "--seed", 2, setup=recipe_copy("sams")),
    Row("sams-no-recipe", OFFLINE, ["sams", "--config", "nope.yaml"], "nope.yaml", 3),
    Row("sams-recipe-not-utf8", OFFLINE, ["sams", "--config", "r.yaml"], "r.yaml", 3,
        setup=lambda f: write(f / "r.yaml", b"models: \xff\xfe\n")),
    Row("sams-launch-rm", OFFLINE, ["sams", "--config", "alignment/configs/sams.yaml", "--dry-run"], "launch", 6,
        setup=recipe_copy("sams", (("launch: accelerate launch", "launch: rm -rf . ; accelerate launch"),))),
    Row("sams-out-is-a-file", OFFLINE, ["sams", "--out", "taken"], "--out", 1,
        setup=lambda f: (recipe_copy("sams")(f), write(f / "taken", "x\n"))),
    # the paper's recipes (safe_rlhf.sh, iterative_prompt.sh)
    Row("paper-unknown-recipe", PAPER, ["bogus"], "bogus", 5),
    Row("paper-seed-negative", PAPER, ["safe_rlhf", "--seed", "-1"], "--seed", 2, setup=recipe_copy("safe_rlhf")),
    Row("paper-seed-2-to-32", PAPER, ["safe_rlhf", "--seed", str(2**32)], "--seed", 2, setup=recipe_copy("safe_rlhf")),
    Row("paper-backend", PAPER, ["safe_rlhf", "--backend", "tpu"], "--backend", 5, setup=recipe_copy("safe_rlhf")),
    Row("paper-sampler", PAPER, ["safe_rlhf", "--sampler", "nope"], "--sampler", 5, setup=recipe_copy("safe_rlhf")),
    Row("paper-out-is-a-file", PAPER, ["safe_rlhf", "--out", "taken"], "--out", 1,
        setup=lambda f: (recipe_copy("safe_rlhf")(f), write(f / "taken", "x\n"))),
    Row("paper-recipe-launch-rm", PAPER, ["safe_rlhf"], "launch", 6,
        setup=recipe_copy("safe_rlhf", (("launch: accelerate launch", "launch: rm -rf . ; accelerate launch"),))),
]
