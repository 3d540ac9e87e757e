"""alignment.pipeline.chain: several pipeline runs in one process (toy.sh's JOBS slots). A chained run gives what the
same run gives alone; a failure stops the chain, names its log, and no slot starts a new run after it."""
import json
from pathlib import Path

import pytest

from alignment.pipeline import chain
from alignment.pipeline.driver import main as pipeline_main
from conftest import tiny_pipeline_recipe

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_failed_run_stops_its_chain_and_the_other_slots(tmp_path, capsys):
    stop = tmp_path / "logs" / ".stop"
    bad = {"label": "mix_p seed 0", "log": str(tmp_path / "logs" / "a.log"), "argv": ["--config", "nope.yaml"]}
    never = {"label": "mix_p seed 1", "log": str(tmp_path / "logs" / "b.log"), "argv": ["--config", "nope.yaml"]}
    assert chain.run_chain({"stop": str(stop), "runs": [bad, never]}) == 1
    assert stop.exists()
    assert "failed: mix_p seed 0, see" in capsys.readouterr().err
    log = Path(bad["log"]).read_text().splitlines()
    assert len(log) == 1 and "nope.yaml" in log[0]                 # the run's one error line, in its log
    assert not Path(never["log"]).exists()                          # the chain stopped at its first failure
    other = {"label": "on_policy seed 0", "log": str(tmp_path / "logs" / "c.log"), "argv": ["--config", "nope.yaml"]}
    assert chain.run_chain({"stop": str(stop), "runs": [other]}) == 0   # another slot: the stop file, nothing new
    assert not Path(other["log"]).exists()


@pytest.mark.slow
def test_a_chained_run_gives_what_the_run_gives_alone(tmp_path):
    """Two runs one after the other in this process, and the second one alone: the same metrics, bit for bit (what
    ran before in the process does not leak into a run)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(tiny_pipeline_recipe(1, ""))
    common = ["--config", str(recipe), "--iterations", "1"]
    runs = [{"label": s, "log": str(tmp_path / "logs" / f"{s}.log"),
             "argv": common + ["--sampler", s, "--seed", "1", "--out", str(tmp_path / "chain" / s)]}
            for s in ("offline", "mix_p")]
    assert chain.run_chain({"stop": str(tmp_path / "stop"), "runs": runs}) == 0
    pipeline_main(common + ["--sampler", "mix_p", "--seed", "1", "--out", str(tmp_path / "alone")])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(_rows(tmp_path / "chain" / "mix_p")) == strip(_rows(tmp_path / "alone"))
    assert (tmp_path / "chain" / "mix_p" / "iter_1" / "evaluate" / "evaluations.jsonl").read_bytes() == \
        (tmp_path / "alone" / "iter_1" / "evaluate" / "evaluations.jsonl").read_bytes()
    # the run's own command in run.json, as `python -m alignment.pipeline ARGV` records it (analysis reads it)
    command = json.loads((tmp_path / "chain" / "mix_p" / "run.json").read_text())["command"]
    assert command[0].endswith("alignment/pipeline/__main__.py") and command[1:] == runs[1]["argv"]
