"""Issue 14 rows of the bandit examples (tabular, linear, offline, alpha_p): each fails in argument checking."""
from __future__ import annotations

from tests.bad_inputs import Row, write

HUGE = str(10 ** 400)          # a size check_positive must see exactly (float() of it is inf)
ENTRIES = ("bandit.examples.tabular", "bandit.examples.linear", "bandit.examples.offline", "bandit.examples.alpha_p")


def _file(tmp):
    write(tmp / "taken", "a file, not a folder\n")


ROWS: list[Row] = []
for entry in ENTRIES:
    ROWS += [
        Row("out-is-a-file", entry, ["--out", "taken"], "--out", 1, setup=_file),
        Row("out-under-proc", entry, ["--out", "/proc/bandit-runs"], "--out", 1),
        Row("seed-2-32", entry, ["--seed", str(2 ** 32)], "--seed", 2),
        Row("actions-400-digits", entry, ["--actions", HUGE], "--actions", 2),
        Row("beta-inf", entry, ["--beta", "inf"], "--beta", 2),
        Row("lr-nan", entry, ["--lr", "nan"], "--lr", 2),
        Row("huge-actions-x-seeds", entry, ["--actions", str(10 ** 9), "--seeds", "1000"], "estimated", 2),
    ]
for entry in ENTRIES[:2]:
    ROWS += [
        Row("unknown-sampler", entry, ["--samplers", "offline,bogus"], "--samplers", 5),
        Row("alpha-nan", entry, ["--samplers", "mix_p", "--alpha", "nan"], "--alpha", 2),
        Row("huge-contexts-x-actions", entry, ["--contexts", str(10 ** 5), "--actions", str(10 ** 5),
                                               "--setting", "exact"], "estimated", 2),
    ]
ROWS += [
    Row("huge-dim", "bandit.examples.linear", ["--dim", str(10 ** 12)], "--dim", 2),
    Row("dim-zero", "bandit.examples.linear", ["--dim", "0"], "--dim", 2),
    Row("unknown-behaviour", "bandit.examples.offline", ["--behaviour", "bogus"], "--behaviour", 5),
    Row("batch-over-dataset", "bandit.examples.offline", ["--batch", "64", "--dataset", "8"], "--batch", 5),
    Row("flip-over-one", "bandit.examples.offline", ["--flip", "1.5"], "--flip", 2),
    Row("huge-dataset", "bandit.examples.offline", ["--dataset", HUGE], "estimated", 2),
    Row("alpha-nan", "bandit.examples.alpha_p", ["--alphas", "nan"], "--alphas", 2),
    Row("temperature-inf", "bandit.examples.alpha_p", ["--temperatures", "inf"], "--temperatures", 2),
    Row("unknown-base", "bandit.examples.alpha_p", ["--bases", "pi,bogus"], "--bases", 5),
    Row("unknown-step-rule", "bandit.examples.alpha_p", ["--steps", "bogus"], "--steps", 5),
]
