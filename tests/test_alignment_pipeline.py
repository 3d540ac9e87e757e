"""alignment.pipeline: iterations chain the stages with a fixed reference, metrics.jsonl has one line per
iteration, a killed run resumes to exactly the uninterrupted result, and bad recipes fail before any work."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignment.pipeline.driver import main
from conftest import tiny_pipeline_recipe

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
REQUIRED = {"iteration", "sampler", "seed", "step", "reward_mean", "reward_ci", "win_rate", "win_rate_ci", "kl",
            "kl_ci", "num_pairs", "ties_dropped"}
# the in-process runs with one torch thread, like the subprocesses (OMP_NUM_THREADS=1): on the tiny model a second
# thread only adds overhead, and it stalls badly when the machine's cores are busy
pytestmark = pytest.mark.usefixtures("torch_single_thread")



def _recipe(tmp_path, epochs=1, extra="") -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(tiny_pipeline_recipe(epochs, extra))
    return str(path)


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.mark.slow
def test_iterations_chain_with_fixed_reference(tmp_path):
    out = tmp_path / "run"
    main(["--config", _recipe(tmp_path), "--sampler", "mix_p", "--iterations", "2", "--seed", "3", "--out", str(out)])
    rows = _lines(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(REQUIRED <= set(r) and r["sampler"] == "mix_p" and r["seed"] == 3 for r in rows)
    assert rows[0]["kl"] == 0 and rows[0]["num_pairs"] == 0  # iteration 0: the initial policy itself
    assert rows[1]["kl"] > 0 and rows[2]["kl"] > 0
    for t in (1, 2):
        d = out / f"iter_{t}"
        train = json.loads((d / "train" / "run.json").read_text())["config"]
        gen = json.loads((d / "generate" / "run.json").read_text())["config"]
        assert train["ref"] == "toy:tiny" and gen["ref"] == "toy:tiny"  # the reference never moves
        expected_policy = "toy:tiny" if t == 1 else str(out / "iter_1" / "train")
        assert train["policy"] == expected_policy and gen["policy"] == expected_policy
        assert train["seed"] == gen["seed"] == 3000 + t
        ann = json.loads((d / "annotate" / "run.json").read_text())["summary"]
        assert rows[t]["num_pairs"] == ann["pairs"] and rows[t]["ties_dropped"] == ann["ties_dropped"]
        assert len(_lines(d / "prompts.jsonl")) == 12
        assert (d / "train" / "model" / "config.json").exists()  # the iteration's checkpoint
    # the two iterations trained on different prompt chunks
    assert {r["id"] for r in _lines(out / "iter_1" / "prompts.jsonl")}.isdisjoint(
        {r["id"] for r in _lines(out / "iter_2" / "prompts.jsonl")})
    assert json.loads((out / "run.json").read_text())["finished"] is not None


@pytest.mark.parametrize("sampler", ["offline", "on_policy", pytest.param("gshf", marks=pytest.mark.slow),
                                     pytest.param("borda", marks=pytest.mark.slow)])
def test_each_sampler_runs_an_iteration(tmp_path, sampler):
    out = tmp_path / sampler
    main(["--config", _recipe(tmp_path), "--sampler", sampler, "--iterations", "1", "--out", str(out)])
    rows = _lines(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["num_pairs"] > 0
    comps = {c for r in _lines(out / "iter_1" / "generate" / "generations.jsonl") for c in r["components"]}
    assert comps == {"offline": {"ref"}, "on_policy": {"policy"}, "gshf": {"ref", "policy"}, "borda": {"ref", "policy"}}[sampler]
    if sampler == "borda":  # half of the 12 candidate prompts kept, one pair each
        assert rows[1]["num_pairs"] <= 6 and len(_lines(out / "iter_1" / "generate" / "generations.jsonl")) == 6


def test_samplers_of_one_seed_are_paired(tmp_path):
    """Issue 15's pairing: for one seed, every sampler starts from the same policy (iteration 0's evaluation: the same
    responses, rewards and KL, drawn with the same evaluation seed), trains on the same prompts and is evaluated on
    the same prompts with the same seed in every iteration; only the sampler differs in the stages' flags."""
    runs = {}
    for sampler in ("on_policy", "mix_p"):
        runs[sampler] = out = tmp_path / sampler
        main(["--config", _recipe(tmp_path), "--sampler", sampler, "--iterations", "1", "--seed", "4",
              "--out", str(out)])
    a, b = runs["on_policy"], runs["mix_p"]
    assert (a / "eval_prompts.jsonl").read_bytes() == (b / "eval_prompts.jsonl").read_bytes()
    assert (a / "iter_1" / "prompts.jsonl").read_bytes() == (b / "iter_1" / "prompts.jsonl").read_bytes()
    assert (a / "iter_0" / "evaluate" / "evaluations.jsonl").read_bytes() == \
        (b / "iter_0" / "evaluate" / "evaluations.jsonl").read_bytes()
    for stage in ("generate", "train", "evaluate"):
        ca = json.loads((a / "iter_1" / stage / "run.json").read_text())["config"]
        cb = json.loads((b / "iter_1" / stage / "run.json").read_text())["config"]
        differ = {k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)}
        # the run's own folders (the prompt files in them are equal, above), its export name and the sampler
        allowed = {"generate": {"sampler", "prompts", "out", "resolved"}, "train": {"preferences", "out", "resolved"},
                   "evaluate": {"policy", "prompts", "out", "generator_name", "resolved"}}[stage]
        assert differ <= allowed, (stage, differ - allowed)
        assert ca["seed"] == cb["seed"]
        if stage != "train":
            assert Path(ca["prompts"]).name == Path(cb["prompts"]).name


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "alignment.pipeline", *argv], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _kill_when(proc, condition, timeout=240):
    t0 = time.time()
    while not condition():
        assert proc.poll() is None, "the run ended before the kill point: " + proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL in the middle of iteration 1's training, then in the middle of iteration 2's generation; the same
    command then finishes the run: no stage's temporary files remain, no line is duplicated, and every number
    equals that of a run that was never interrupted."""
    recipe = _recipe(tmp_path, epochs=20)  # training long enough (~2 s) to be caught in the middle
    argv = ["--config", recipe, "--sampler", "gshf", "--iterations", "2", "--seed", "1"]
    whole = tmp_path / "whole"
    proc = _start(argv + ["--out", str(whole)])
    assert proc.wait(timeout=300) == 0, proc.communicate()[1][-2000:]

    out = tmp_path / "killed"
    in_progress = lambda d, stage: any(p.name.startswith(f".{stage}.") for p in d.glob(".*")) if d.is_dir() else False
    proc = _start(argv + ["--out", str(out)])
    _kill_when(proc, lambda: in_progress(out / "iter_1", "train") and not (out / "iter_1" / "train.done").exists())
    assert not (out / "iter_1" / "train.done").exists() and (out / "iter_1" / "generate.done").exists()
    assert [r["iteration"] for r in _lines(out / "metrics.jsonl")] == [0]

    proc = _start(argv + ["--out", str(out)])
    _kill_when(proc, lambda: in_progress(out / "iter_2", "generate"))
    assert (out / "iter_1" / "evaluate.done").exists() and not (out / "iter_2" / "generate.done").exists()

    proc = _start(argv + ["--out", str(out)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert _lines(out / "metrics.jsonl") == _lines(whole / "metrics.jsonl")
    for t in (1, 2):
        d = out / f"iter_{t}"
        assert not list(d.glob(".*"))  # no temporary folder left
        for stage in ("generate", "annotate", "train", "evaluate"):
            assert json.loads((d / stage / "run.json").read_text())["finished"]
        for f in ("generate/generations.jsonl", "annotate/preferences.jsonl", "evaluate/evaluations.jsonl"):
            assert (d / f).read_text() == (whole / f"iter_{t}" / f).read_text()


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    main(["--config", _recipe(tmp_path), "--sampler", "mix_p", "--iterations", "2", "--out", str(out), "--dry-run"])
    lines = [l for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
    modules = [l.split(" -m ")[1].split()[0] for l in lines]
    assert modules == ["alignment.evaluate"] + ["alignment.generate", "alignment.annotate", "alignment.train_dpo",
                                                "alignment.evaluate"] * 2
    assert not out.exists()


def _fails(argv, words, tmp_path):
    r = subprocess.run([sys.executable, "-m", "alignment.pipeline", *argv], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("python -m alignment.pipeline: error: "), r.stderr  # the command the user typed
    assert all(w in r.stderr for w in words), r.stderr


@pytest.mark.parametrize("extra, words", [
    ("generate: {num_responses: 3}\n", ["--num-responses", "even"]),  # gshf splits K in halves
    ("annotate: {rulez: max_min}\n", ["'rulez'", "section 'annotate'"]),
    ("generate: {sampler: online}\n", ["'sampler'", "set by"]),  # set by the pipeline, not the recipe
    ("train: {beta: -1}\n", ["--beta"]),
    ("evaluate: {temperature: hot}\n", ["'temperature'", "a number"]),
    ("promptz: toy:3\n", ["'promptz'"]),
    ("prompt_template: 'no placeholder'\n", ["--prompt-template"]),
])
@pytest.mark.slow
def test_bad_recipe_fails_before_any_work(tmp_path, extra, words):
    text = tiny_pipeline_recipe()
    for key in ("generate", "annotate", "train", "evaluate"):  # a later section of the same name replaces the first
        if extra.startswith(key + ":"):
            text = "\n".join(l for l in text.splitlines() if not l.startswith(key + ":"))
    (tmp_path / "bad.yaml").write_text(text + "\n" + extra)
    _fails(["--config", str(tmp_path / "bad.yaml"), "--sampler", "gshf", "--out", str(tmp_path / "o")], words, tmp_path)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_another_recipe_into_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    main(["--config", _recipe(tmp_path), "--sampler", "on_policy", "--iterations", "1", "--out", str(out)])
    before = (out / "metrics.jsonl").read_text()
    _fails(["--config", _recipe(tmp_path), "--sampler", "offline", "--iterations", "1", "--out", str(out)],
           ["--out", "sampler", "--fresh"], tmp_path)
    assert (out / "metrics.jsonl").read_text() == before
    # more iterations extend the finished run: iteration 1 is not redone
    stamp = (out / "iter_1" / "train.done").read_text()
    main(["--config", _recipe(tmp_path), "--sampler", "on_policy", "--iterations", "2", "--out", str(out)])
    assert (out / "iter_1" / "train.done").read_text() == stamp
    assert [r["iteration"] for r in _lines(out / "metrics.jsonl")] == [0, 1, 2]


def test_per_sampler_settings_and_overrides_reach_the_stages(tmp_path, capsys):
    recipe = _recipe(tmp_path, extra="per_sampler:\n  mixp: {generate: {mixp_online_pair: true}, "
                                      "annotate: {rule: mixed_max_min, p: 0.7}}\n")
    commands = {}
    for sampler in ("mix_p", "gshf"):
        main(["--config", recipe, "--sampler", sampler, "--iterations", "1", "--out", str(tmp_path / sampler),
              "--dry-run", "--override", "train.lr=0.5 evaluate.temperature=0.2 generate.batch_size=null"])
        lines = [l.split() for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
        commands[sampler] = {l[l.index("-m") + 1].split(".")[1]: l for l in lines[1:]}
    mixp, gshf = commands["mix_p"], commands["gshf"]
    assert "--mixp-online-pair" in mixp["generate"] and "--mixp-online-pair" not in gshf["generate"]
    assert mixp["annotate"][mixp["annotate"].index("--rule") + 1] == "mixed_max_min"
    assert gshf["annotate"][gshf["annotate"].index("--rule") + 1] == "max_min"
    for cmd in (mixp, gshf):
        train = cmd["train_dpo"]
        assert train.index("--lr") > train.index("--config") and train[train.index("--lr") + 1] == "0.5"
        assert cmd["evaluate"][cmd["evaluate"].index("--temperature") + 1] == "0.2"
        assert "--batch-size" not in cmd["generate"]  # null: the stage's own default


def test_fresh_deletes_only_a_pipeline_run_folder(tmp_path):
    """--fresh starts OUT over only when OUT holds this driver's pipeline.json (or is empty); any other folder is left
    alone with one error line."""
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    _fails(["--config", _recipe(tmp_path), "--sampler", "offline", "--iterations", "1", "--out", str(other),
            "--fresh"], ["--fresh", "pipeline.json"], tmp_path)
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("extra, override, words", [
    ("per_sampler:\n  mixq: {generate: {alpha: 1}}\n", "", ["per_sampler", "'mixq'"]),
    ("per_sampler:\n  mixp: {generat: {alpha: 1}}\n", "", ["per_sampler", "stage names"]),
    ("", "train.lrr=3", ["--override train", "'lrr'"]),
    ("", "lr=3", ["--override", "STAGE.KEY=VALUE"]),
])
@pytest.mark.slow
def test_bad_per_sampler_or_override(tmp_path, extra, override, words):
    _fails(["--config", _recipe(tmp_path, extra=extra), "--sampler", "mix_p", "--override", override,
            "--out", str(tmp_path / "o")], words, tmp_path)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_offline_regime_trains_on_a_fixed_set_and_reports_its_label(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"write about food in {i % 3 + 1} sentences :", "chosen": " the warm bread shines .",
             "rejected": " the sad .", "chosen_reward": 1.0, "rejected_reward": -1.0} for i in range(12)]
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "off"
    main(["--config", _recipe(tmp_path), "--preferences", str(prefs), "--label", "all", "--iterations", "2",
          "--out", str(out)])
    for t in (1, 2):
        assert sorted(p.name for p in (out / f"iter_{t}").iterdir() if p.is_dir()) == ["evaluate", "train"]
        train = json.loads((out / f"iter_{t}" / "train" / "run.json").read_text())
        assert train["config"]["preferences"] == str(prefs) and train["summary"]["num_pairs"] == 12
    lines = _lines(out / "metrics.jsonl")
    assert [r["label"] for r in lines] == ["all"] * 3 and lines[1]["num_pairs"] == 12
    from alignment.report import find_runs, load_table

    assert {r["sampler"] for r in load_table(find_runs([str(out)]))} == {"all"}


def test_corrupt_pipeline_json_and_zero_eval_prompts_are_refused(tmp_path, capsys):
    """A pipeline.json that does not read back is the user's to restore, not ours to overwrite; --num-eval-prompts 0
    is below its minimum (it used to pass as 'or 1')."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.json").write_text('{"policy": "toy:tiny", "trunc')
    argv = ["--config", _recipe(tmp_path), "--iterations", "1", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "pipeline.json" in err and "--fresh" in err, err
    assert (out / "pipeline.json").read_text() == '{"policy": "toy:tiny", "trunc'
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json"]
    with pytest.raises(SystemExit) as e:
        main(argv[:-2] + ["--out", str(tmp_path / "other"), "--num-eval-prompts", "0"])
    assert e.value.code == 2 and "--num-eval-prompts" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
