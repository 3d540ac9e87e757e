"""alignment.pipeline.dryrun: a command is checked by its own module's parser and checks, and nothing runs."""
import pytest

from alignment.pipeline.dryrun import main


def test_good_command_is_printed_and_nothing_written(tmp_path, capsys):
    cmd = ["accelerate", "launch", "--config_file", "alignment/configs/zero3.yaml", "-m", "alignment.sft",
           "--model", "toy:tiny", "--out", str(tmp_path / "sft")]
    main(cmd)
    assert capsys.readouterr().out.split() == cmd
    assert not (tmp_path / "sft").exists()


@pytest.mark.parametrize("cmd, words", [
    (["python", "-m", "alignment.sft", "--lr", "-1"], ["--lr"]),
    (["python", "-m", "alignment.train_dpo", "--preferences", "p.jsonl", "--beta", "0"], ["--beta"]),
    (["python", "-m", "alignment.train_dpo", "--preferences", "p.jsonl", "--no-such-flag"], ["rejects", "--no-such-flag"]),
    (["python", "-m", "alignment.nope"], ["no such module"]),
    (["python", "-m", "os"], ["only alignment"]),
    (["python", "alignment/sft.py"], ["-m alignment.MODULE"]),
])
def test_bad_command_exits_2_with_one_line(cmd, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(cmd)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
