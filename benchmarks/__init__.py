"""Speed and memory benchmarks: bench_bandit.py, bench_alignment.py, bench_sams.py (each `python benchmarks/NAME.py --help`)."""
