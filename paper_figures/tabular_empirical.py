"""Tabular bandit, empirical setting (sampled pairs): parameter error and value gap against iteration (log scale),
one line and 95% band per sampler (geometric mean over seeds), a figure per tabular task holding that setting.

    python paper_figures/tabular_empirical.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

from paper_figures import common
from runlog import exit_on_config_error

NAME = "tabular_empirical"
COMMAND = "python bandit/examples/tabular.py --setting empirical"


def make(tasks, out_dir, notes=None):
    return common.bandit_figures(NAME, COMMAND, tasks, "tabular", ["empirical"], "Tabular bandit", out_dir, notes)


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
