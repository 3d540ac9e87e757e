"""The bandit entry points: tabular.py, linear.py, offline.py (each `python bandit/examples/NAME.py --help`), and
what they share: common.py (arguments, the run loop, logs, summary) and plots.py (figures, in analysis' style).
The bandit library (the modules of bandit/ itself) imports nothing from analysis; these entry points may."""
