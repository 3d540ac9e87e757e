"""The bandit entry points: tabular.py, linear.py, offline.py (each `python bandit/examples/NAME.py --help`)."""
