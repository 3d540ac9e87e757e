"""The vocabulary (bandit/vocabulary.py): one canonical name per method, aliases, where each package
implements it, and the README's table made from it."""
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bandit import vocabulary as v
from runlog import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_names_and_aliases_are_unambiguous_within_a_family():
    for family in v.FAMILIES:
        seen = [n for m in v.METHODS if m.family == family for n in (m.name, *m.aliases)]
        assert len(seen) == len(set(seen)), family
    assert len({m.name for m in v.METHODS}) == len(v.METHODS)  # a canonical name is one method, whatever the family


def test_design_names_and_aliases():
    # DESIGN.md section 2, the table "The vocabulary"
    assert v.names(v.PAIR_SAMPLER, "alignment") == ("offline", "on_policy", "gshf", "mix_p", "mix_p_seq", "borda")
    assert {"unif", "mix_r", "mix_p_star"} <= set(v.names(v.PAIR_SAMPLER, "bandit"))
    assert not {"unif", "mix_r", "mix_p_star"} & set(v.names(v.PAIR_SAMPLER, "alignment"))
    assert set(v.names(v.SELECTOR)) == {"all", "random_subset", "reward_gap", "reward_gap_step", "us", "ae", "sams"}
    for alias, name, family in (("online", "on_policy", v.PAIR_SAMPLER), ("mixp", "mix_p", v.PAIR_SAMPLER),
                                ("mixp_seq", "mix_p_seq", v.PAIR_SAMPLER), ("ref", "offline", v.PAIR_SAMPLER),
                                ("vanilla", "offline", v.PAIR_SAMPLER), ("none", "all", v.SELECTOR),
                                ("full", "all", v.SELECTOR)):
        assert v.canonical(alias, family) == name


def test_every_implementation_named_exists():
    for m in v.METHODS:
        assert m.bandit or m.alignment, m.name
        for where in (m.bandit, m.alignment):
            if where:
                module, attr = where.split(":")
                assert hasattr(importlib.import_module(module), attr), where


def test_unknown_name_is_one_error_listing_the_known_names():
    with pytest.raises(ConfigError) as e:
        v.canonical("nope", v.PAIR_SAMPLER, "alignment", "--sampler")
    msg = str(e.value)
    assert msg.startswith("--sampler: unknown sampler 'nope'") and "\n" not in msg
    for name in v.names(v.PAIR_SAMPLER, "alignment"):
        assert name in msg
    with pytest.raises(ConfigError, match="bandit-only sampler"):
        v.canonical("mix_r", v.PAIR_SAMPLER, "alignment")
    with pytest.raises(ConfigError, match="listed twice"):
        v.canonical_list("online,on_policy", v.PAIR_SAMPLER)
    assert v.normalise("my-label") == "my-label" and v.normalise("full") == "all" and v.normalise(None) is None


@pytest.mark.slow
def test_importing_the_vocabulary_loads_no_torch():
    code = "import sys, bandit.vocabulary, analysis.style; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.slow
def test_cli_prints_the_table_and_canonical_names():
    run = lambda *a: subprocess.run([sys.executable, "-m", "bandit.vocabulary", *a], capture_output=True, text=True)
    table = run()
    assert table.returncode == 0 and all(m.name in table.stdout for m in v.METHODS)
    assert run("--sampler", "mixp").stdout == "mix_p\n" and run("--selector", "none").stdout == "all\n"
    bad = run("--sampler", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "on_policy" in bad.stderr


def test_readme_table_is_the_registry():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- vocabulary: python -m bandit.vocabulary --markdown -->\n(.*?)\n<!-- /vocabulary -->",
                      text, re.S)
    assert block is not None, "README.md lacks the vocabulary block"
    assert block.group(1) == v.table(markdown=True)


def test_tabular_takes_aliases_and_logs_canonical_names(tmp_path):
    from bandit.examples import tabular

    path = tabular.main(["--samplers", "offline,online,mixp", "--seeds", "2", "--iters", "3", "--setting", "exact",
                         "--no-plots", "--out", str(tmp_path)])
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    assert list(dict.fromkeys(r["sampler"] for r in rows)) == ["offline", "on_policy", "mix_p"]
    assert json.loads((path / "run.json").read_text())["config"]["resolved"]["samplers"] == ["offline", "on_policy",
                                                                                              "mix_p"]
