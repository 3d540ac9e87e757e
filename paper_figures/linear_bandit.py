"""Linear bandit: parameter error and value gap against iteration (log scale), one line and 95% band per sampler
(geometric mean over seeds); a row per setting the task holds (exact, empirical), a figure per linear task.

    python paper_figures/linear_bandit.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

from paper_figures import common
from runlog import exit_on_config_error

NAME = "linear_bandit"
COMMAND = "python bandit/examples/linear.py"


def make(tasks, out_dir, notes=None):
    return common.bandit_figures(NAME, COMMAND, tasks, "linear", ["exact", "empirical"], "Linear bandit", out_dir,
                                 notes)


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
