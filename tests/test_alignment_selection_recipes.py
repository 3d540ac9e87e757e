"""The offline selection recipes (alignment/configs/{sams,active,difficulty}.yaml) and their GPU scripts (sams.sh,
active.sh, difficulty.sh, wrappers of alignment/pipeline/offline.py), checked on a CPU machine through the dry
run: every command is parsed by its own module's parser and checked (alignment.pipeline.dryrun), printed, and
nothing is loaded, run or written. One real-mode run (a fake `accelerate` on PATH) checks the resume logic (the
pipeline's rule: a run folder and its FOLDER.done marker)."""
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ZERO3 = ["accelerate", "launch", "--config_file", "alignment/configs/zero3.yaml"]
SAMS_MODELS = {"llama3": ("meta-llama/Meta-Llama-3-8B-Instruct", "princeton-nlp/llama3-ultrafeedback", 0.01, 1e-6),
               "mistral": ("mistralai/Mistral-7B-Instruct-v0.2", "princeton-nlp/mistral-instruct-ultrafeedback", 0.01,
                           5e-7),
               "gemma2": ("google/gemma-2-9b-it", "princeton-nlp/gemma2-ultrafeedback-armorm", 0.01, 5e-7)}



def _ours(folder):
    """What a run left in a folder, leaving out torch's own compile cache (torchinductor_USER, which importing
    peft through TRL creates in TMPDIR): not our output."""
    return [p for p in folder.iterdir() if not p.name.startswith("torchinductor_")]

def _env(tmp: Path, **extra) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                PYTHON=sys.executable, TMPDIR=str(tmp), **extra)


def _in_process(argv: list[str]) -> dict:
    """rc, stdout and stderr of `python -m alignment.pipeline.offline ARGV`, run in this process."""
    from alignment.pipeline import offline

    out, err = io.StringIO(), io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            offline.main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _bad_recipe(root: Path, name: str, section: str, key: str, value) -> Path:
    recipe = yaml.safe_load((REPO / f"alignment/configs/{name}.yaml").read_text())
    recipe[section][key] = value
    path = root / f"bad-{name}-{section}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every dry run these tests read, in this process (`alignment/X.sh` is `exec python -m alignment.pipeline.offline
    X`; the subprocess tests below run the scripts themselves): the modules each command is checked with are
    imported once, not once per run."""
    root = tmp_path_factory.mktemp("selection-recipes")
    cases = {
        "sams-llama3": ("sams", []),
        "sams-mistral": ("sams", ["--model", "mistral", "--seed", "3"]),
        "sams-gemma2-control": ("sams", ["--model", "gemma2", "--selector", "random_subset", "--num-processes", "4",
                                         "--data", "HuggingFaceH4/ultrafeedback_binarized", "--split", "train_prefs",
                                         "--", "--grad-accum", "2"]),
        "active-ae": ("active", []),
        "active-us": ("active", ["--method", "us", "--seed", "5", "--model", "Qwen/Qwen2.5-0.5B"]),
        "difficulty": ("difficulty", []),
        "difficulty-given": ("difficulty", ["--selection-model", "/models/sel", "--base", "Qwen/Qwen2.5-7B-Instruct",
                                            "--no-reward-model", "--seed", "2"]),
        "bad-sams-train": ("sams", ["--config", str(_bad_recipe(root, "sams", "train", "bogus_key_xyz", 1))]),
        "bad-difficulty-select": ("difficulty", ["--config", str(_bad_recipe(root, "difficulty", "select",
                                                                             "bogus_key_xyz", 1))]),
        "bad-active-sft": ("active", ["--config", str(_bad_recipe(root, "active", "sft", "lr", "fast"))]),
    }
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # the scripts cd to the repository root: the recipes' paths are relative to it
        for key, (script, flags) in cases.items():
            tmp, out = root / f"tmp-{key}", root / f"out-{key}"
            tmp.mkdir()
            mp.setenv("TMPDIR", str(tmp))
            mp.setattr(tempfile, "tempdir", str(tmp))  # whatever a dry run would write to a temp folder lands here
            results[key] = {**_in_process([script, "--dry-run", "--out", str(out), *flags]), "tmp": tmp, "out": out}
    return results


def _commands(stdout: str) -> list[list[str]]:
    """The commands a dry run printed (comment lines dropped), split into words."""
    return [shlex.split(line) for line in stdout.splitlines() if line.strip() and not line.startswith("#")]


def _module(words: list[str]) -> str:
    return words[words.index("-m") + 1]


def _flag(words: list[str], flag: str):
    """The value of the last occurrence of flag (argparse's rule), or None."""
    idx = [i for i, w in enumerate(words) if w == flag]
    return words[idx[-1] + 1] if idx else None


def _ok(res) -> list[list[str]]:
    assert res["rc"] == 0, res["stderr"]
    assert not res["out"].exists() and not _ours(res["tmp"])  # a dry run writes nothing
    return _commands(res["stdout"])


def _launched(words: list[str]) -> bool:
    return words[:4] == ZERO3


def _plain(words: list[str]) -> bool:
    return words[0] == sys.executable and words[1] == "-m"


# ------------------------------------------------------------------------------------------------ sams

@pytest.mark.parametrize("key,model", [("sams-llama3", "llama3"), ("sams-mistral", "mistral")])
@pytest.mark.slow
def test_sams_dry_run_uses_the_papers_beta_and_lr_per_model(runs, key, model):
    prep, train = _ok(runs[key])
    policy, data, beta, lr = SAMS_MODELS[model]
    out = runs[key]["out"]
    seed = "3" if model == "mistral" else "0"
    assert _plain(prep) and _module(prep) == "alignment.prepare_data"
    assert (_flag(prep, "--data"), _flag(prep, "--split")) == (data, "train")
    data_dir = str(out / "data" / _flag(prep, "--name"))
    assert _flag(prep, "--out") == str(out / "data")
    assert _launched(train) and _module(train) == "alignment.train_dpo"
    assert (_flag(train, "--config"), _flag(train, "--policy"), _flag(train, "--preferences")) == \
        ("alignment/configs/sams.yaml", policy, data_dir)
    assert (float(_flag(train, "--beta")), float(_flag(train, "--lr"))) == (beta, lr)
    assert (_flag(train, "--selector"), _flag(train, "--seed")) == ("sams", seed)
    assert (_flag(train, "--out"), _flag(train, "--name")) == (str(out / model), f"sams-seed{seed}")
    assert "--sams-pretrain-steps" not in train  # the recipe's pre-training applies to sams


@pytest.mark.slow
def test_sams_random_subset_control_and_other_data(runs):
    prep, train = _ok(runs["sams-gemma2-control"])
    assert (_flag(prep, "--data"), _flag(prep, "--split")) == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    assert train[:6] == ZERO3 + ["--num_processes", "4"] and _module(train) == "alignment.train_dpo"
    assert (_flag(train, "--policy"), float(_flag(train, "--beta")), float(_flag(train, "--lr"))) == \
        ("google/gemma-2-9b-it", 0.01, 5e-7)
    assert _flag(train, "--selector") == "random_subset"
    assert _flag(train, "--sams-pretrain-steps") == "0"  # SamS's scheduler pre-training is not the control's
    assert train[-2:] == ["--grad-accum", "2"]  # the user's flags come last and win
    assert _flag(train, "--preferences").endswith("/data/HuggingFaceH4_ultrafeedback_binarized-train_prefs")


def test_sams_recipe_holds_the_papers_settings():
    from alignment import train_dpo
    from alignment.pipeline.recipes import check_section

    r = yaml.safe_load((REPO / "alignment/configs/sams.yaml").read_text())
    t = check_section(train_dpo.Args, r["train"], "sams.yaml train")
    assert (t["selector"], t["select_ratio"], t["sams_mode"], t["loss"]) == ("sams", 0.5, "topk", "sigmoid")
    assert (t["epochs"], t["max_length"], t["sams_lr"], t["sams_explore_weight"]) == (1, 1024, 1e-4, 0.01)
    assert t["batch_size"] * t["grad_accum"] * 8 == 16  # the released code's global batch on the 8 GPUs
    train_dpo.check_dpo_extras(t["dpo"])
    assert r["launch"] == " ".join(ZERO3)
    assert {m: (v["policy"], v["data"], v["beta"], v["lr"]) for m, v in r["models"].items()} == SAMS_MODELS


# ------------------------------------------------------------------------------------------------ active

@pytest.mark.slow
def test_active_dry_run_splits_sfts_and_selects(runs):
    res = runs["active-ae"]
    prep, sft, train = _ok(res)
    out = res["out"]
    assert _plain(prep) and _module(prep) == "alignment.prepare_data"
    assert (_flag(prep, "--data"), float(_flag(prep, "--sft-fraction"))) == ("Anthropic/hh-rlhf", 0.3)
    assert (_flag(prep, "--out"), _flag(prep, "--name")) == (str(out), "data")
    assert _plain(sft) and _module(sft) == "alignment.sft"
    assert (_flag(sft, "--model"), _flag(sft, "--data"), _flag(sft, "--device")) == \
        ("openai-community/gpt2-large", str(out / "data" / "sft.jsonl"), "cuda")
    assert (_flag(sft, "--out"), _flag(sft, "--name")) == (str(out), "sft")
    assert _launched(train) and _module(train) == "alignment.train_dpo"
    assert (_flag(train, "--config"), _flag(train, "--policy"), _flag(train, "--preferences")) == \
        ("alignment/configs/active.yaml", str(out / "sft"), str(out / "data"))
    assert "--ref" not in train  # the reference is the SFT model (train_dpo's default: the policy's weights)
    assert (_flag(train, "--selector"), _flag(train, "--out"), _flag(train, "--name")) == \
        ("ae", str(out / "ae"), "seed0")


@pytest.mark.slow
def test_active_us_and_another_model(runs):
    prep, sft, train = _ok(runs["active-us"])
    assert _flag(sft, "--model") == "Qwen/Qwen2.5-0.5B"  # the script's --model replaces the recipe's
    assert (_flag(train, "--selector"), _flag(train, "--seed"), _flag(train, "--name")) == ("us", "5", "seed5")
    assert _flag(sft, "--seed") == _flag(prep, "--seed") == "0"  # split and SFT are shared by every method and seed


def test_active_recipe_holds_the_codes_settings():
    from alignment import prepare_data, sft, train_dpo
    from alignment.pipeline.recipes import check_section

    r = yaml.safe_load((REPO / "alignment/configs/active.yaml").read_text())
    d = check_section(prepare_data.Args, r["data"], "active.yaml data")
    check_section(sft.Args, r["sft"], "active.yaml sft")
    t = check_section(train_dpo.Args, r["train"], "active.yaml train")
    assert (d["data"], d["sft_fraction"]) == ("Anthropic/hh-rlhf", 0.3)
    assert (t["beta"], t["loss"]) == (0.1, "sigmoid") and abs(t["select_ratio"] - 1 / 3) < 1e-12
    n = t["batch_size"] * 8  # the candidate batch over 8 processes
    from alignment.selection.batch import keep_count

    assert keep_count(n, t["select_ratio"]) * t["grad_accum"] == 32  # the code's 32 trained pairs per step


# ------------------------------------------------------------------------------------------------ difficulty

@pytest.mark.slow
def test_difficulty_dry_run_selects_ten_percent_then_trains_dpo_and_a_reward_model(runs):
    res = runs["difficulty"]
    prep, selection, select, dpo, rm = _ok(res)
    out, run = res["out"], res["out"] / "seed0"
    base = "meta-llama/Llama-3.1-8B-Instruct"
    assert _module(prep) == "alignment.prepare_data"
    assert _flag(prep, "--data") == "Skywork/Skywork-Reward-Preference-80K-v0.2"
    for words in (selection, dpo):
        assert _launched(words) and _module(words) == "alignment.train_dpo"
        assert (_flag(words, "--config"), _flag(words, "--policy")) == ("alignment/configs/difficulty.yaml", base)
    assert (_flag(selection, "--preferences"), _flag(selection, "--name")) == (str(out / "data"), "selection_model")
    assert _plain(select) and _module(select) == "alignment.select"
    assert (_flag(select, "--method"), float(_flag(select, "--ratio")), float(_flag(select, "--beta"))) == \
        ("reward_gap", 0.1, 0.1)
    assert (_flag(select, "--policy"), _flag(select, "--ref"), _flag(select, "--data")) == \
        (str(run / "selection_model"), base, str(out / "data"))
    assert (_flag(dpo, "--preferences"), _flag(dpo, "--name")) == (str(run / "select"), "dpo_selected")
    assert _plain(rm) and _module(rm) == "alignment.reward_model"
    # reward_model takes a file (not a run folder): the selection's kept pairs
    assert (_flag(rm, "--data"), _flag(rm, "--model")) == (str(run / "select" / "preferences.jsonl"),
                                                            "google/gemma-2b-it")


@pytest.mark.slow
def test_difficulty_with_a_given_selection_model(runs):
    cmds = _ok(runs["difficulty-given"])
    assert [_module(c) for c in cmds] == ["alignment.prepare_data", "alignment.select", "alignment.train_dpo"]
    _, select, dpo = cmds
    assert (_flag(select, "--policy"), _flag(select, "--ref")) == ("/models/sel", "Qwen/Qwen2.5-7B-Instruct")
    assert _flag(dpo, "--policy") == "Qwen/Qwen2.5-7B-Instruct" and _flag(dpo, "--seed") == "2"


def test_difficulty_recipe_holds_the_codes_settings():
    from alignment import reward_model, select, train_dpo
    from alignment.pipeline.recipes import check_section

    r = yaml.safe_load((REPO / "alignment/configs/difficulty.yaml").read_text())
    t = check_section(train_dpo.Args, r["train"], "train")
    s = check_section(select.Args, r["select"], "select")
    check_section(reward_model.Args, r["reward_model"], "reward_model")
    assert (t["lr"], t["beta"], t["epochs"], t["max_length"]) == (5e-7, 0.1, 1, 8192)
    assert t["batch_size"] * t["grad_accum"] * 8 == 8  # the code's train_batch_size 8
    assert (s["method"], s["ratio"], s["beta"]) == ("reward_gap", 0.1, t["beta"])


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("key,words", [("bad-sams-train", ["section 'train'", "bogus_key_xyz", "unknown key"]),
                                       ("bad-difficulty-select", ["section 'select'", "bogus_key_xyz", "unknown key"]),
                                       ("bad-active-sft", ["section 'sft'", "'lr'", "must be a number"])])
@pytest.mark.slow
def test_a_bad_key_in_a_copied_recipe_is_one_error_line(runs, key, words):
    res = runs[key]
    lines = [line for line in res["stderr"].splitlines() if line.strip()]
    assert res["rc"] == 2 and len(lines) == 1 and all(w in lines[0] for w in words), res["stderr"]
    # the script's own sections are checked before any command; train: by train_dpo's dry run, at its command
    assert "alignment.train_dpo" not in res["stdout"] and not res["out"].exists() and not _ours(res["tmp"])


@pytest.mark.parametrize("script,args,word", [
    ("sams", ["--model", "llama2"], "--model"), ("sams", ["--selector", "ae"], "--selector"),
    ("sams", ["--seed", "x"], "--seed"), ("sams", ["--out"], "--out"), ("sams", ["--num-processes", "0"], "--num"),
    ("active", ["--method", "borda"], "--method"),
    ("active", ["--config", "nope.yaml"], "--config"), ("difficulty", ["--bogus"], "--bogus"),
    ("difficulty", ["--seed", "-1"], "--seed"),
])
@pytest.mark.slow
def test_bad_script_arguments_exit_2_with_one_line(tmp_path, monkeypatch, script, args, word):
    # in this process: the script is `exec python -m alignment.pipeline.offline SCRIPT` (test_help and the runs
    # below start the scripts themselves)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = _in_process([script, "--dry-run", *args])
    lines = [line for line in r["stderr"].splitlines() if line.strip()]
    assert r["rc"] == 2 and len(lines) == 1 and word in lines[0] and lines[0].startswith(f"{script}.sh: error:"), \
        (args, r["stderr"])
    assert r["stdout"] == "" and not _ours(tmp_path)


@pytest.mark.parametrize("script", ["sams", "active", "difficulty"])
@pytest.mark.slow
def test_help(tmp_path, script):
    r = subprocess.run(["bash", f"alignment/{script}.sh", "--help"], cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: alignment/{script}.sh")
    assert "--dry-run" in r.stdout


# ------------------------------------------------------------------------------------------------ a real run

@pytest.mark.slow
def test_real_run_checks_everything_then_runs_and_resumes(tmp_path):
    """Without --dry-run: every command is checked first, then run in order; a finished stage is skipped on the
    next run. prepare_data runs for real on a local file; `accelerate` is a fake on PATH that records its command
    and leaves a finished run.json where train_dpo would."""
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bin_dir, log = tmp_path / "bin", tmp_path / "accelerate.log"
    bin_dir.mkdir()
    fake = bin_dir / "accelerate"
    fake.write_text(f"""#!{sys.executable}
import json, pathlib, sys
args = sys.argv[1:]
open({str(log)!r}, "a").write(json.dumps(args) + "\\n")
run = pathlib.Path(args[args.index("--out") + 1]) / args[args.index("--name") + 1]
run.mkdir(parents=True)
(run / "run.json").write_text(json.dumps({{"finished": "now"}}))
""")
    fake.chmod(0o755)
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    env = _env(tmp, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cmd = ["bash", "alignment/sams.sh", "--data", str(data), "--out", str(out), "--", "--max-steps", "1"]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("# checking the 2 commands")
    prepared = out / "data" / re.sub(r"[^A-Za-z0-9._-]", "_", f"{data}-train")  # the script's folder name
    kept = [json.loads(line) for line in (prepared / "preferences.jsonl").read_text().splitlines()]
    assert [r["chosen"] for r in kept] == [r["chosen"] for r in rows]
    (launched,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert launched[:3] == ["launch", "--config_file", "alignment/configs/zero3.yaml"]
    assert launched[launched.index("-m") + 1] == "alignment.train_dpo" and launched[-2:] == ["--max-steps", "1"]
    assert _flag(launched, "--preferences") == str(prepared)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("done:") == 2 and len(log.read_text().splitlines()) == 1  # nothing rerun


@pytest.mark.slow
def test_active_qlora_adds_lora_and_4bit_to_the_dpo_stage(tmp_path):
    r = subprocess.run(["bash", "alignment/active.sh", "--dry-run", "--qlora"], cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    train = [l for l in r.stdout.splitlines() if "alignment.train_dpo" in l and not l.startswith("#")]
    assert len(train) == 1 and "--lora-r 16 --load-in-4bit" in train[0]
