"""The samplers paper's GPU recipes (alignment/configs/safe_rlhf.yaml, iterative_prompt.yaml) and their launcher
scripts (safe_rlhf.sh, iterative_prompt.sh, both wrappers of alignment/pipeline/paper.py), checked on a CPU machine
through the dry run: every stage's flags are parsed by that stage's own parser and checked, the commands are
printed, and nothing is loaded, run or written. Also the DeepSpeed accelerate configs the recipes launch training
with."""
import contextlib
import io
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
RECIPES = ("safe_rlhf", "iterative_prompt")
SAMPLERS = ("offline", "on_policy", "gshf", "mix_p")
ITERATIONS = 3
STAGE_MODULES = {"generate": "alignment.generate", "annotate": "alignment.annotate", "train": "alignment.train_dpo",
                 "evaluate": "alignment.evaluate"}
ZERO3 = "accelerate launch --config_file alignment/configs/zero3.yaml"
VLLM_OVERRIDE = "generate.backend=vllm generate.batch_size=null"



def _ours(folder):
    """What a run left in a folder, leaving out torch's own compile cache (torchinductor_USER, which importing
    peft through TRL creates in TMPDIR): not our output."""
    return [p for p in folder.iterdir() if not p.name.startswith("torchinductor_")]

def _env(tmp: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                PYTHON=sys.executable, TMPDIR=str(tmp), BACKEND="hf")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every dry run these tests read, in this process (`alignment/NAME.sh` is `exec python -m alignment.pipeline.paper
    NAME`; test_script_help_and_bad_arguments runs the scripts themselves): the stages' modules are imported once,
    not once per run."""
    root = tmp_path_factory.mktemp("recipes")
    jobs = {}
    for name in RECIPES:
        tmp = root / f"tmp-{name}"
        tmp.mkdir()
        out = root / f"out-{name}"
        jobs[name] = (["paper", name, "--dry-run", "--seed", "7", "--out", str(out)],
                      tmp, out)
    vllm = {"vllm-safe_rlhf": ["safe_rlhf"],  # the four samplers: mixp keeps hf
            "vllm-iterative_prompt": ["iterative_prompt", "--sampler", "mixp_seq"],  # vLLM and the on-policy pair
            # a user's --override joins the script's (the pipeline keeps only the last --override flag)
            "vllm-user-override": ["safe_rlhf", "--sampler", "online", "--", "--iterations", "1",
                                   "--override", "generate.temperature=0.5 train.lr=1.0e-6"]}
    for key, (name, *flags) in vllm.items():
        tmp = root / f"tmp-{key}"
        tmp.mkdir()
        out = root / f"out-{key}"
        cut = flags.index("--") if "--" in flags else len(flags)
        jobs[key] = (["paper", name, "--dry-run", "--backend", "vllm", "--out", str(out),
                      *flags[:cut], *flags[cut:]], tmp, out)
    for name, section in (("safe_rlhf", "generate"), ("iterative_prompt", "train")):
        recipe = yaml.safe_load((REPO / f"alignment/configs/{name}.yaml").read_text())
        recipe[section]["bogus_key_xyz"] = 1
        bad = root / f"bad-{name}.yaml"
        bad.write_text(yaml.safe_dump(recipe, sort_keys=False))
        out = root / f"out-bad-{name}"
        jobs[f"bad-{name}"] = (["pipeline", "--config", str(bad), "--sampler", "gshf",
                                "--dry-run", "--out", str(out)], root, out)
    from alignment.pipeline import driver, paper

    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # the scripts cd to the repository root: the recipes' paths are relative to it
        for key, (cmd, tmp, out) in jobs.items():
            for var, value in _env(tmp).items():
                if os.environ.get(var) != value:
                    mp.setenv(var, value)
            mp.setattr(tempfile, "tempdir", str(tmp))  # whatever a dry run would write to a temp folder lands here
            stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    (paper.main if cmd[0] == "paper" else driver.main)(cmd[1:])
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            results[key] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "tmp": tmp,
                            "out": out}
    return results


def _pipelines(stdout: str) -> dict[str, list[str]]:
    """The pipeline commands the script printed ("# PYTHON -m alignment.pipeline ..."), by sampler, split into words."""
    lines = [shlex.split(line[2:]) for line in stdout.splitlines()
             if line.startswith("# ") and "-m alignment.pipeline" in line]
    return {_flag(words, "--sampler"): words for words in lines}


def _wrote_nothing(res) -> bool:
    """A dry run leaves no output folder (no pipeline.json, no recipe copy) and nothing in TMPDIR."""
    return not res["out"].exists() and not _ours(res["tmp"])


def _commands(stdout: str) -> list[list[str]]:
    """The stage commands a dry run printed (comment lines dropped), split into words."""
    return [shlex.split(line) for line in stdout.splitlines() if line.strip() and not line.startswith("#")]


def _by_sampler(stdout: str) -> dict[str, list[list[str]]]:
    out = {}
    for words in _commands(stdout):
        out.setdefault(_sampler_of(words), []).append(words)
    return out


def _sampler_of(words: list[str]) -> str:
    """A stage command's sampler, from the run folder in its --out (OUT/SAMPLER-seedN/iter_T)."""
    return re.search(r"/([a-z_]+)-seed\d+/iter_\d+$", _flag(words, "--out")).group(1)


def _flag(words: list[str], flag: str):
    return words[words.index(flag) + 1] if flag in words else None


def _stage(words: list[str]) -> str:
    module = words[words.index("-m") + 1]
    return next(s for s, m in STAGE_MODULES.items() if m == module)


def _iteration(words: list[str]) -> int:
    return int(re.search(r"iter_(\d+)$", _flag(words, "--out")).group(1))


# ------------------------------------------------------------------------------------------------ the recipes

@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_holds_the_papers_settings(name):
    from alignment.pipeline import driver as pipeline
    from alignment.pipeline.recipes import check_section

    r = yaml.safe_load((REPO / f"alignment/configs/{name}.yaml").read_text())
    # the pipeline's own check of the top-level keys and of every section (what its dry run does first)
    check_section(pipeline.Args, r, name, skip=("config", "dry_run", "fresh", "out"))
    for stage in pipeline.STAGES:
        if stage == "select":  # optional: these recipes select nothing
            assert stage not in r
            continue
        check_section(pipeline.stage_args_class(stage), r[stage], f"{name}:{stage}", skip=pipeline.OWNED[stage])
    assert r["reward"] == "sfairXC/FsfairX-LLaMA3-RM-v0.1" and r.get("eval_reward") is None
    assert r["launch"] == ZERO3 and r["iterations"] == 3 and r["num_eval_prompts"] == 200
    assert r["prompts_per_iteration"] == 10000 and r["split"] == "train[:10000]"
    assert r["eval_prompts"] == r["prompts"] and r["eval_split"] == "train[10000:10200]"  # held out, disjoint
    g, a, t, e = r["generate"], r["annotate"], r["train"], r["evaluate"]
    assert (g["num_responses"], g["max_new_tokens"], g["temperature"], g["alpha"]) == (2, 128, 0.7, 0.5)
    assert g["backend"] == "hf" and "mixp_online_pair" not in g  # shared by all samplers: mixp's is in per_sampler
    assert (t["loss"], t["beta"], t["lr"], t["lr_scheduler"], t["epochs"], t["dtype"]) == \
        ("rev_kl", 0.1, 5e-7, "cosine", 2, "bfloat16")
    assert g["device"] == a["device"] == t["device"] == e["device"] == "auto"
    assert (e["temperature"], e["max_new_tokens"]) == (0.7, 128)
    if name == "safe_rlhf":
        assert r["policy"] == "PKU-Alignment/alpaca-7b-reproduced"
        assert r["prompt_field"] == "prompt"
        assert r["prompt_template"] == "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
        assert a["rule"] == "max_min" and t["margin_scale"] == 4
        assert not r.get("per_sampler")  # no on-policy pair for Mix-P [code]
        assert t["batch_size"] * t.get("grad_accum", 1) * 8 == 16  # the paper's global batch on 8 GPUs
    else:
        assert r["policy"] == "openlm-research/open_llama_3b_v2"
        assert r["prompts"] == "RLHFlow/iterative-prompt-v1-iter1-20K" and r["prompt_field"] == "context_messages"
        assert r["prompt_template"] == ("Below is an instruction that describes a task. Write a response that "
                                        "appropriately completes the request.\n\n### Instruction:\n{prompt}\n\n"
                                        "### Response:\n")
        assert (a["rule"], a["p"]) == ("mixed_max_min", 0.7) and t["margin_scale"] == 1
        # Mix-P's on-policy pair [code], for mixp and its sequence-level variant only (an error for the others)
        pair = {"generate": {"mixp_online_pair": True}}
        assert r["per_sampler"] == {"mix_p": pair, "mix_p_seq": pair}
        check_section(pipeline.stage_args_class("generate"), pair["generate"], f"{name}:per_sampler")
        assert t["batch_size"] * t.get("grad_accum", 1) * 8 == 32


def test_iterative_prompt_template_takes_the_user_message(tmp_path):
    """The RLHFlow rows' context_messages (chat messages) go into the Alpaca template as the user's text."""
    import json

    from alignment.pipeline.driver import load_pipeline_prompts

    r = yaml.safe_load((REPO / "alignment/configs/iterative_prompt.yaml").read_text())
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"context_messages": [{"role": "user", "content": "Name a prime."}]}) + "\n")
    rows = load_pipeline_prompts(str(f), "train", r["prompt_field"], r["prompt_template"], "--prompts")
    assert rows[0]["prompt"].endswith("### Instruction:\nName a prime.\n\n### Response:\n")


def test_split_slices_select_the_training_and_held_out_rows(tmp_path):
    """The recipes' splits are datasets' slicing syntax: 10,000 training rows, then 200 held-out rows."""
    import datasets

    f = tmp_path / "rows.jsonl"
    f.write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(10300)))
    r = yaml.safe_load((REPO / "alignment/configs/safe_rlhf.yaml").read_text())
    train = datasets.load_dataset("json", data_files=str(f), split=r["split"], cache_dir=str(tmp_path / "c"))
    held = datasets.load_dataset("json", data_files=str(f), split=r["eval_split"], cache_dir=str(tmp_path / "c"))
    assert len(train) == 10000 and len(held) == 200
    assert held[0]["prompt"] == "q10000" and not set(train["prompt"]) & set(held["prompt"])


# ------------------------------------------------------------------------------------------------ the scripts

@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.slow
def test_dry_run_prints_every_stage_of_every_iteration(runs, name):
    res = runs[name]
    assert res["rc"] == 0, res["stderr"]
    by_sampler = _by_sampler(res["stdout"])
    assert sorted(by_sampler) == sorted(SAMPLERS)
    pipelines = _pipelines(res["stdout"])
    assert sorted(pipelines) == sorted(SAMPLERS)
    for sampler, p in pipelines.items():  # the recipe file itself for every sampler, unchanged with --backend hf
        assert p[p.index("-m") + 1:p.index("-m") + 2] == ["alignment.pipeline"] and "--dry-run" in p
        assert (_flag(p, "--config"), _flag(p, "--seed"), _flag(p, "--out")) == \
            (f"alignment/configs/{name}.yaml", "7", str(res["out"] / f"{sampler}-seed7"))
        assert "--override" not in p
    expected = [(0, "evaluate")] + [(t, s) for t in range(1, ITERATIONS + 1)
                                    for s in ("generate", "annotate", "train", "evaluate")]
    for sampler, cmds in by_sampler.items():
        assert len(cmds) == 1 + 4 * ITERATIONS
        assert [(_iteration(c), _stage(c)) for c in cmds] == expected
        for c in cmds:
            assert _flag(c, "--out").startswith(str(res["out"] / f"{sampler}-seed7" / "iter_"))
        for c in cmds:
            stage = _stage(c)
            if stage in ("train", "generate"):  # HF generation is launched too (one process per GPU)
                assert shlex.join(c).startswith(ZERO3 + f" -m {STAGE_MODULES[stage]} ")
            else:
                assert c[0] == sys.executable and c[1:3] == ["-m", STAGE_MODULES[stage]]
            if stage == "train":  # the recipe itself for every sampler (mixp included)
                assert _flag(c, "--config") == f"alignment/configs/{name}.yaml"
            if stage == "generate":
                assert (_flag(c, "--sampler"), _flag(c, "--num-responses"), _flag(c, "--max-new-tokens"),
                        _flag(c, "--temperature"), _flag(c, "--backend")) == (sampler, "2", "128", "0.7", "hf")
                assert ("--mixp-online-pair" in c) == (name == "iterative_prompt" and sampler == "mix_p")  # per_sampler
            if stage == "annotate":
                rule = ("mixed_max_min", "0.7") if name == "iterative_prompt" else ("max_min", None)
                assert (_flag(c, "--rule"), _flag(c, "--p")) == rule
            if stage == "evaluate":
                assert (_flag(c, "--temperature"), _flag(c, "--max-new-tokens")) == ("0.7", "128")
                assert _flag(c, "--reward") == "sfairXC/FsfairX-LLaMA3-RM-v0.1"
        # iteration t trains from iteration t-1's policy against the fixed initial policy
        trains = [c for c in cmds if _stage(c) == "train"]
        assert [_flag(c, "--seed") for c in trains] == ["7001", "7002", "7003"]
        assert len({_flag(c, "--ref") for c in trains}) == 1
    assert _wrote_nothing(res)


@pytest.mark.slow
def test_vllm_backend_on_request(runs):
    """--backend vllm: the pipeline's --override for offline / online / gshf, and none for mixp (hf only)."""
    res = runs["vllm-safe_rlhf"]
    assert res["rc"] == 0, res["stderr"]
    pipelines = _pipelines(res["stdout"])
    assert sorted(pipelines) == sorted(SAMPLERS)
    for sampler, p in pipelines.items():
        assert _flag(p, "--config") == "alignment/configs/safe_rlhf.yaml"
        assert _flag(p, "--override") == (None if sampler == "mix_p" else VLLM_OVERRIDE)
    by_sampler = _by_sampler(res["stdout"])
    for sampler, cmds in by_sampler.items():
        gen = [c for c in cmds if _stage(c) == "generate"]
        assert len(gen) == ITERATIONS
        for c in gen:
            if sampler == "mix_p":  # logit fusion: the hf backend, launched per GPU, with the recipe's batch size
                assert shlex.join(c).startswith(ZERO3) and _flag(c, "--backend") == "hf"
                assert _flag(c, "--batch-size") == "32"
            else:  # vLLM runs as one process (no accelerate launch) and batches all prompts itself
                assert c[0] == sys.executable and _flag(c, "--backend") == "vllm" and "--batch-size" not in c
        assert all(shlex.join(c).startswith(ZERO3) and _flag(c, "--config") == "alignment/configs/safe_rlhf.yaml"
                   for c in cmds if _stage(c) == "train")
    assert res["stderr"].count("mix_p keeps hf") == 1
    assert _wrote_nothing(res)


@pytest.mark.slow
def test_iterative_prompt_mixp_seq_under_vllm_keeps_its_online_pair(runs):
    """per_sampler (the recipe's on-policy pair) and --override (the script's vLLM) both apply."""
    res = runs["vllm-iterative_prompt"]
    assert res["rc"] == 0, res["stderr"]
    (p,) = _pipelines(res["stdout"]).values()
    assert (_flag(p, "--sampler"), _flag(p, "--config"), _flag(p, "--override")) == \
        ("mix_p_seq", "alignment/configs/iterative_prompt.yaml", VLLM_OVERRIDE)
    cmds = _commands(res["stdout"])
    assert len(cmds) == 1 + 4 * ITERATIONS
    gen = [c for c in cmds if _stage(c) == "generate"]
    assert len(gen) == ITERATIONS
    assert all(c[0] == sys.executable and _flag(c, "--sampler") == "mix_p_seq" and _flag(c, "--backend") == "vllm"
               and "--batch-size" not in c and "--mixp-online-pair" in c for c in gen)
    assert "mix_p keeps hf" not in res["stderr"]
    assert _wrote_nothing(res)


@pytest.mark.slow
def test_user_override_joins_the_scripts(runs):
    res = runs["vllm-user-override"]
    assert res["rc"] == 0, res["stderr"]
    (p,) = _pipelines(res["stdout"]).values()
    assert p.count("--override") == 1 and _flag(p, "--iterations") == "1"
    assert _flag(p, "--override") == VLLM_OVERRIDE + " generate.temperature=0.5 train.lr=1.0e-6"
    cmds = _commands(res["stdout"])
    (gen,) = [c for c in cmds if _stage(c) == "generate"]
    assert (_flag(gen, "--backend"), _flag(gen, "--temperature"), "--batch-size" in gen) == ("vllm", "0.5", False)
    (train,) = [c for c in cmds if _stage(c) == "train"]
    assert _flag(train, "--lr") == "1e-06"
    assert _wrote_nothing(res)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.slow
def test_unknown_key_in_a_section_is_one_error_line(runs, name):
    res = runs[f"bad-{name}"]
    assert res["rc"] == 2
    lines = [line for line in res["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "bogus_key_xyz" in lines[0] and "unknown key" in lines[0], res["stderr"]
    assert res["stdout"] == "" and not res["out"].exists()


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.slow
def test_script_help_and_bad_arguments(name, tmp_path):
    script = f"alignment/{name}.sh"
    run = lambda *a: subprocess.run(["bash", script, *a], cwd=REPO, env=_env(tmp_path), capture_output=True,
                                    text=True, timeout=60)
    h = run("--help")
    assert h.returncode == 0 and h.stdout.startswith(f"usage: alignment/{name}.sh")
    for args, word in ((["--sampler", "dpo"], "--sampler"), (["--seed", "x"], "--seed"),
                       (["--backend", "tpu"], "--backend"), (["--bogus"], "--bogus"), (["--out"], "--out"),
                       (["--", "--bogus-flag"], "--bogus-flag")):  # a pipeline flag: every pipeline checked first
        r = run(*args)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and word in lines[0], (args, r.stderr)
        assert lines[0].startswith(f"{name}.sh: error:") and r.stdout == "", (args, r.stdout)
    assert not _ours(tmp_path)


# ------------------------------------------------------------------------------------------------ accelerate

@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_accelerate_configs(name, stage, monkeypatch):
    from alignment.pipeline.driver import check_launch

    monkeypatch.chdir(REPO)
    cfg = yaml.safe_load((REPO / f"alignment/configs/{name}.yaml").read_text())
    assert cfg["distributed_type"] == "DEEPSPEED" and cfg["deepspeed_config"]["zero_stage"] == stage
    assert cfg["mixed_precision"] == "bf16" and cfg["num_machines"] == 1 and cfg["use_cpu"] is False
    assert cfg["deepspeed_config"]["zero3_init_flag"] is (stage == 3)
    check_launch(f"accelerate launch --config_file alignment/configs/{name}.yaml")  # the pipeline's own check
