"""alignment.pipeline.resume: the one resume rule (a run folder, then its FOLDER.done marker) and what a rerun
cleans; alignment.pipeline.commands: how a recipe script reads its command line."""
import json

import pytest

from alignment.pipeline import resume
from alignment.pipeline.commands import Command, check_uint, parse_script, run_commands, script_parser
from alignment.pipeline.paper import split_override
from runlog import ConfigError


def test_done_needs_the_run_folder_and_its_marker(tmp_path):
    run = tmp_path / "out" / "train"
    assert resume.marker(run) == tmp_path / "out" / "train.done"
    assert not resume.is_done(run)
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    assert not resume.is_done(run)  # a finished run.json alone is not done: the marker comes last
    resume.mark_done(run, stage="train", iteration=1)
    assert resume.is_done(run) and json.loads(resume.marker(run).read_text())["stage"] == "train"
    resume.forget(run)
    assert not resume.is_done(run) and (run / "run.json").exists()  # forgetting deletes only the marker


def test_clean_partial_removes_only_the_stages_temporary_folders(tmp_path):
    (tmp_path / ".train.abc123.tmp").mkdir()         # RunDir's temporary folder of a killed train stage
    (tmp_path / ".train.trainer").mkdir()            # the trainer's scratch: the trainer's own
    (tmp_path / ".generate.x.tmp").mkdir()           # another stage's
    (tmp_path / ".train.done.y.tmp").write_text("")  # a file, not a folder
    removed = resume.clean_partial(tmp_path / "train")
    assert [p.name for p in removed] == [".train.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".generate.x.tmp", ".train.done.y.tmp", ".train.trainer"]


def test_a_done_command_is_skipped_and_a_fresh_one_reruns(tmp_path, capsys, monkeypatch):
    """run_commands: the check first (stubbed here: the command is no alignment module), then each command that is
    not done; a rerun skips it; fresh reruns it."""
    import sys

    import alignment.pipeline.commands as commands

    folder = tmp_path / "runs" / "stage"
    script = ("import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); "
              "(p / 'run.json').write_text('{}'); open(sys.argv[2], 'a').write('ran\\n')")
    log = tmp_path / "log"
    cmd = Command("a stage", folder, [sys.executable, "-c", script, str(folder), str(log)])
    checked = []
    monkeypatch.setattr(commands, "check_commands", lambda cs, dry_run, show: checked.append(len(cs)))
    run_commands([cmd], dry_run=False, fresh=False)
    assert resume.is_done(folder)
    run_commands([cmd], dry_run=False, fresh=False)
    assert log.read_text() == "ran\n" and "done: a stage" in capsys.readouterr().out
    run_commands([cmd], dry_run=False, fresh=True)
    assert log.read_text() == "ran\nran\n" and resume.is_done(folder) and checked == [1, 1, 1]


def test_script_command_line(capsys):
    parser = script_parser("x.sh")
    parser.add_argument("--out", default="runs/x")
    parser.add_argument("--dry-run", action="store_true")
    args, extra = parse_script(parser, ["--out", "o", "--", "--lr", "1"], "usage: x.sh")
    assert (args.out, args.dry_run, extra) == ("o", False, ["--lr", "1"])
    for argv, word in ((["--bogus"], "--bogus"), (["--out"], "--out"), (["--out", ""], "--out needs a value"),
                       (["--ou", "o"], "--ou")):  # no abbreviations
        with pytest.raises(SystemExit) as e:
            parse_script(parser, argv, "usage")
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("x.sh: error:") and word in err[0], err
    with pytest.raises(SystemExit) as e:
        parse_script(parser, ["--bogus", "--help"], "usage: x.sh [--out DIR]")
    assert e.value.code == 0 and capsys.readouterr().out == "usage: x.sh [--out DIR]\n"
    assert check_uint("--seed", "7") == 7
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ConfigError, match="--seed"):
            check_uint("--seed", bad)


def test_a_users_override_joins_the_scripts():
    assert split_override(["--iterations", "1", "--override", "a.b=1", "--override=c.d=2", "--fresh"]) == \
        ("a.b=1 c.d=2", ["--iterations", "1", "--fresh"])
    assert split_override(["--override"]) == ("", ["--override"])  # no value: the pipeline refuses it
