"""The paper's figures and tables, made from run logs only (run.json + metrics.jsonl; DESIGN.md section 5).

One module per figure, each runnable alone (`python paper_figures/tabular_exact.py --runs runs/ --out DIR`);
`python paper_figures/make_all.py --runs runs/ --out paper_figures/out/` makes every figure and the tables and
says what it skipped and which command produces the missing logs. `common` holds the shared pieces.
"""

# figure modules, in the order make_all runs and lists them
FIGURES = ("tabular_exact", "tabular_empirical", "linear_bandit", "offline_selection", "alignment_reward_vs_kl",
           "alignment_reward_per_iteration", "selection_toy", "alpha_p")
