"""Which pairs get gradient (DESIGN.md section 3, the offline regime), in one place per method:

    scores.py   reward_gap (signed DPO implicit-reward gaps), us and ae (Monte Carlo dropout scores), keep counts,
                length-bucketed scoring batches: what `python -m alignment.select` runs once over a data set
    batch.py    per training batch (train_dpo --selector): random_subset, the SamS scheduler, us / ae per step
    borda.py    AE-Borda's bounds and prompt selection (the online sampler `borda` of alignment.generate)
"""
