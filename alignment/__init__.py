"""LLM DPO with the bandit package's samplers (DESIGN.md section 4). Part 1: up to a preference dataset.

Entry points (each `python -m alignment.NAME --help`):
    sft            supervised fine-tuning (toy: from scratch on synthetic demonstrations)
    reward_model   Bradley-Terry reward model on oracle-labelled pairs
    generate       K responses per prompt with a generation sampler: offline, online, gshf, mixp (fused
                   decoding), mixp_seq (sequence-level importance resampling; vLLM-compatible)
    annotate       score responses with a reward, pick pairs (max_min, random, mixed_max_min), write TRL rows

Shared modules:
    toy.py      the toy task: prompts, true reward, demonstrations, in-process tokenizer and tiny Llama
    models.py   load a tokenizer / causal LM by name: "toy", "toy:SIZE", a local folder, or a Hub name
    decoding.py batched sampling from one model or a per-token fusion of several (one KV cache each)
    vllm_backend.py  the vLLM path for GPU nodes (imported only when chosen)
    rewards.py  the reward interface: reward.score(prompts, responses) -> list[float]
    data.py     prompt / generation / preference sets: loading, validation, atomic JSONL writing

Row formats (JSONL files, loadable with `datasets.load_dataset("json", ...)`):
    prompts      {"id": str, "prompt": str | list[message]}
    generations  {"id", "prompt", "responses": [str], "components": [str], "num_tokens": [int]}
    preferences  {"id", "prompt", "chosen": str, "rejected": str, "chosen_reward": float,
                  "rejected_reward": float, "responses": [str], "rewards": [float]}   (TRL's DPO fields)
Runs go to runs/alignment/<entry>/<name>/ through runlog.RunDir; a trained model is saved under model/.
"""
