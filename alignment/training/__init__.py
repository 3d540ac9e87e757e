"""How the models are trained (TRL's trainers underneath), for the stages alignment.sft, .reward_model, .train_dpo:

    losses.py   the DPO losses as pure functions of log-prob tensors: sigmoid, the soft-label rev_kl, the masked mean
                over a selector's pairs
    config.py   SamplerDPOConfig: TRL's DPOConfig plus the loss and batch-selector fields, checked in __post_init__
    trainer.py  SamplerDPOTrainer (TRL's DPOTrainer with rev_kl and the batch selections random_subset, sams, us,
                ae) and fit(), one DPO training run
    data.py     the rows each trainer reads: DPO rows with soft labels, SFT rows, reward-model pairs
    reward.py   the Bradley-Terry sequence classifier, its scores and held-out pairwise accuracy
    common.py   what the three trainer stages share: flag checks, TrainingArguments, the metrics.jsonl callback,
                held-out splits, saving the model into the run

config.py and trainer.py import trl (slow): the stages import them when they train.
"""
