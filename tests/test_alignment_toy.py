"""The toy task: the reward by hand, the optimum, fluency, determinism, the in-process tokenizer and model."""
import random

import pytest
import torch

from alignment.core import toy
from alignment.core.models import load_causal_lm, load_tokenizer
from runlog import ConfigError

P = "write about ocean in 2 sentences :"


@pytest.mark.parametrize("response,expected", [
    # good adj +1, on-topic noun +1, two sentences as asked: 2 per sentence
    ("the bright wave shines . the calm coral rests .", 4.0),
    # bad adj -1, off-topic noun -0.5, one sentence short: -3
    ("the cruel oven waits .", -1 - 0.5 - 3),
    # neutral adj 0, on-topic noun +1, four sentences: two too many
    ("the old tide moves . the old tide moves . the old tide moves . the old tide moves .", 4 * 1.0 - 6),
    # not fluent (no verb): -2, and a good adj +1, on-topic noun +1, one sentence short -3
    ("the warm shell .", 1 + 1 - 3 - 2),
    # unfinished sentence counts as a sentence and is not fluent
    ("the warm shell rests . the kind", 1 + 1 + 1 - 0 - 2),
])
def test_true_reward_by_hand(response, expected):
    assert toy.true_reward(P, response) == pytest.approx(expected)


def test_optimum_is_the_best_response():
    # k perfect sentences for a request of n earn 2k - 3|k - n|: best at k = n
    for n in range(1, 5):
        prompt = toy.make_prompt("ocean", n)
        scores = {k: toy.true_reward(prompt, "the kind wave sings . " * k) for k in range(1, 9)}
        assert max(scores, key=scores.get) == n and scores[n] == toy.optimal_reward(prompt)
    rng = random.Random(0)
    task = toy.ToyTask(0)
    for row in task.prompts(20):
        topic, n = toy.parse_prompt(row["prompt"])
        best = " ".join(["the", toy.GOOD[0], toy.TOPICS[topic][0], toy.VERBS[0], "."] * n)
        assert toy.true_reward(row["prompt"], best) == toy.optimal_reward(row["prompt"]) == 2 * n
        for _ in range(50):  # no demonstration beats it
            assert toy.true_reward(row["prompt"], task.demonstration(row["prompt"], rng)) <= 2 * n


def test_demonstrations_are_fluent_seeded_and_mediocre():
    a, b = toy.ToyTask(3).demonstrations(300), toy.ToyTask(3).demonstrations(300)
    assert a == b and a != toy.ToyTask(4).demonstrations(300)
    assert all(toy.is_fluent(r["completion"]) for r in a)
    mean = sum(toy.true_reward(r["prompt"], r["completion"]) for r in a) / len(a)
    assert -4.5 < mean < -2.0  # far below the optimum (2 to 8): room for DPO
    held = {r["id"] for r in toy.ToyTask(3).prompts(10, "heldout")}
    assert held.isdisjoint(r["id"] for r in a)


def test_parse_prompt_rejects_other_text():
    assert toy.parse_prompt("write about space in 1 sentence :") == ("space", 1)
    for bad in ["write about mars in 2 sentences :", "hello", "write about space in two sentences :"]:
        with pytest.raises(ValueError):
            toy.parse_prompt(bad)


def test_tokenizer_round_trip_and_padding():
    tok = toy.build_tokenizer()
    text = P + " the bright wave shines ."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    batch = tok(["write about ocean in 1 sentence :", text], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tok.pad_token_id and batch["attention_mask"][0, 0] == 0  # left padding


def test_models_load_by_name():
    tok = load_tokenizer("toy")
    m1, m2 = load_causal_lm("toy:tiny", seed=1), load_causal_lm("toy:tiny", seed=1)
    assert not m1.training and m1.config.vocab_size == len(tok)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)  # seeded init
    n = sum(p.numel() for p in load_causal_lm("toy:base").parameters())
    assert 3e5 < n < 5e6  # "a few hundred thousand to a few million parameters"
    with pytest.raises(ConfigError, match="--policy"):
        load_causal_lm("./no/such/folder", field="--policy")
    with pytest.raises(ConfigError, match="unknown toy size"):
        load_causal_lm("toy:huge")
