"""Bad inputs of the training stages (alignment.sft, alignment.reward_model, alignment.train_dpo)."""
from __future__ import annotations

from tests.bad_inputs import Row, pairs_file, write

PAIR = {"prompt": "a", "chosen": "b", "rejected": "c"}


def _file_out(folder):
    write(folder / "taken", "not a folder\n")


def _recipe(text: str | bytes):
    def setup(folder):
        write(folder / "recipe.yaml", text)
        pairs_file(folder, [PAIR])
    return setup


def _pairs(folder):
    pairs_file(folder, [PAIR])


def _not_utf8(folder):
    write(folder / "data.jsonl", b'{"prompt": "\xff\xfe", "chosen": "b", "rejected": "c"}\n')


DPO = "alignment.train_dpo"
ROWS = [
    Row("out-is-a-file", DPO, ["--preferences", "pairs.jsonl", "--out", "taken"], "--out", 1,
        setup=lambda f: (_file_out(f), _pairs(f))),
    Row("seed-2-to-32", DPO, ["--preferences", "pairs.jsonl", "--seed", str(2**32)], "--seed", 2, setup=_pairs),
    Row("max-steps-0", DPO, ["--preferences", "pairs.jsonl", "--max-steps", "0"], "--max-steps", 2, setup=_pairs),
    Row("recipe-beta-true", DPO, ["--config", "recipe.yaml", "--preferences", "pairs.jsonl"], "beta", 3,
        setup=_recipe("train:\n  beta: true\n")),
    Row("recipe-dpo-bool-number", DPO, ["--config", "recipe.yaml", "--preferences", "pairs.jsonl"],
        "dpo.max_grad_norm", 3, setup=_recipe("dpo:\n  max_grad_norm: true\n")),
    Row("recipe-max-steps-float", DPO, ["--config", "recipe.yaml", "--preferences", "pairs.jsonl"], "max_steps", 2,
        setup=_recipe("train:\n  max_steps: 1e29\n")),
    Row("recipe-not-utf8", DPO, ["--config", "recipe.yaml", "--preferences", "pairs.jsonl"], "recipe.yaml", 3,
        setup=_recipe(b"train:\n  beta: \xff\xfe\n")),
]

for entry in ("alignment.sft", "alignment.reward_model"):
    ROWS += [
        Row("out-is-a-file", entry, ["--out", "taken"], "--out", 1, setup=_file_out),
        Row("seed-2-to-32", entry, ["--seed", str(2**32)], "--seed", 2),
        Row("max-steps-0", entry, ["--max-steps", "0"], "--max-steps", 2),
        Row("batch-size-0", entry, ["--batch-size", "0"], "--batch-size", 2),
        Row("data-not-utf8", entry, ["--data", "data.jsonl"], "data.jsonl", 3, setup=_not_utf8),
    ]

ROWS += [
    Row("identical-pair", "alignment.reward_model", ["--data", "pairs.jsonl"], "2 such pairs", 5,
        setup=lambda f: pairs_file(f, [PAIR, dict(PAIR, rejected="b"), dict(PAIR, rejected="b")])),
]
