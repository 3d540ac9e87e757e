"""What every stage stands on: the toy task, model loading, data sets, rewards.

    toy.py      the toy task: prompts, true reward, demonstrations, in-process tokenizer and tiny Llama configs,
                a model's sampled held-out responses (sample_toy)
    models.py   load a tokenizer / causal LM by name: "toy", "toy:SIZE", a local folder, or a Hub name
    data.py     prompt / generation / preference sets: loading, validation, atomic JSONL writing
    rewards.py  the reward interface: reward.score(prompts, responses) -> list[float]
"""
