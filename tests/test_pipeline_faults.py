"""Issue 14 in the pipeline: every check before any write (a refused command leaves nothing and the corrected one
then runs), --fresh deletes only the driver's own entries, a recipe's launch: runs only known launchers, a finished
stage whose outputs do not read back is one line, and the shell scripts' flags and environment variables."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.pipeline import resume
from alignment.pipeline.driver import check_launcher, main
from conftest import tiny_pipeline_recipe
from runlog import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _recipe(tmp_path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(tiny_pipeline_recipe(1, ""))
    return str(path)


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in folder.rglob("*")}


@pytest.mark.slow  # the dry run checks every stage's flags (~15 s on a busy 2-core machine)
def test_bad_eval_prompts_leave_nothing_and_the_corrected_command_is_not_another_recipe(tmp_path, capsys):
    """The eval prompts used to be read after pipeline.json and run.json were written, so the corrected command was
    refused as another recipe. Now the refusal writes nothing; the corrected command passes every check."""
    out = tmp_path / "run"
    recipe = _recipe(tmp_path)
    line = _refused(["--config", recipe, "--iterations", "1", "--out", str(out), "--eval-prompts", "no_such.jsonl"],
                    capsys)
    assert "--eval-prompts" in line
    assert not out.exists()
    # the corrected command: all checks pass (its dry run resolves the very same plan), and OUT is still absent
    main(["--config", recipe, "--iterations", "1", "--out", str(out), "--dry-run"])
    assert "all flags checked" in capsys.readouterr().out
    assert not out.exists()


def test_missing_default_policy_is_one_line_naming_the_sft_step(tmp_path, capsys):
    out = tmp_path / "run"
    line = _refused(["--config", str(REPO / "alignment/configs/toy.yaml"), "--out", str(out),
                     "--policy", str(tmp_path / "runs/alignment/sft/toy/model")], capsys)
    assert "--policy" in line and "alignment.sft" in line
    assert not out.exists()


def test_recipe_of_pipeline_keys_only_says_what_it_lacks(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("iterations: 2\nseed: 3\n")
    line = _refused(["--config", str(recipe), "--policy", "toy", "--out", str(tmp_path / "o")], capsys)
    assert "stage section" in line and "train:" in line
    assert "batch_size" not in line  # not train_dpo's key list


def test_fresh_refuses_a_folder_with_a_foreign_file_and_deletes_nothing(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "pipeline.json").write_text("{}")
    (thesis / "chapter1.tex").write_text("keep me")
    (thesis / "iter_0").mkdir()
    before = _tree(thesis)
    line = _refused(["--config", _recipe(tmp_path), "--out", str(thesis), "--fresh"], capsys)
    assert "--fresh" in line and "chapter1.tex" in line
    assert _tree(thesis) == before


def test_fresh_refuses_the_working_directory_and_its_ancestors(tmp_path, capsys, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "a" / "pipeline.json").write_text("{}")
    monkeypatch.chdir(work)
    for out in (".", "..", str(Path.home())):
        assert "working directory" in _refused(["--config", _recipe(tmp_path), "--out", out, "--fresh"], capsys)
    assert work.is_dir() and (tmp_path / "a" / "pipeline.json").exists()


@pytest.mark.parametrize("launch", ["rm -rf .", "bash -c 'echo hi'", "accelerate", "python -m pip install x", ""])
def test_unknown_launchers_are_refused(launch):
    with pytest.raises(ConfigError, match="known launcher.*accelerate launch, torchrun, deepspeed"):
        check_launcher(launch, "--launch")


@pytest.mark.parametrize("launch", ["accelerate launch --num_processes 2", "torchrun --nproc_per_node 8",
                                    "deepspeed --num_gpus 8", "python -m torch.distributed.run --nproc_per_node 2"])
def test_known_launchers_pass(launch):
    assert check_launcher(launch, "--launch")[0] in ("accelerate", "torchrun", "deepspeed", "python")


@pytest.mark.parametrize("name, text", [("run.json", '{"config": {"a": 1'), ("metrics.jsonl", '{"step": 1}\n{"st'),
                                        ("metrics.jsonl", '{"loss": NaN}\n')])
def test_finished_stage_whose_outputs_do_not_read_back_is_one_error(tmp_path, name, text):
    stage = tmp_path / "iter_1" / "train"
    stage.mkdir(parents=True)
    (stage / "run.json").write_text(json.dumps({"config": {}}))
    resume.mark_done(stage, stage="train")
    assert resume.is_done(stage)
    (stage / name).write_text(text)
    with pytest.raises(ConfigError, match=f"{name}.*remove"):
        resume.is_done(stage)
    assert (stage / name).read_text() == text and resume.marker(stage).exists()  # nothing deleted on a guess


@pytest.mark.parametrize("var, value", [("SEEDS", "-1"), ("JOBS", "0"), ("SEEDS", str(2**32))])
def test_toy_environment_variables_are_checked(tmp_path, monkeypatch, capsys, var, value):
    from alignment.pipeline import toy

    monkeypatch.chdir(REPO)
    monkeypatch.setenv(var, value)
    out = tmp_path / "toy"
    with pytest.raises(SystemExit) as e:
        toy.main(["toy", "--out", str(out)])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and var in lines[0], lines
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["toy.sh", "sams.sh", "safe_rlhf.sh"])  # one per runner: toy, offline, paper
def test_shell_script_refuses_an_unknown_flag_in_one_line(script):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHON=sys.executable)
    p = subprocess.run(["bash", f"alignment/{script}", "--bogus"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--bogus" in lines[0], lines
