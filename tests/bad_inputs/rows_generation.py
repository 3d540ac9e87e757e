"""Issue 14 rows of the generation stages (prepare_data, generate, annotate, select, evaluate): each fails in argument
checking or, for sizes, in the memory estimate made once the toy models are built and before anything is drawn."""
from __future__ import annotations

from tests.bad_inputs import Row, pairs_file, write

HUGE = str(10 ** 400)


def _file(tmp):
    write(tmp / "taken", "a file, not a folder\n")


def _gens_file(tmp):
    write(tmp / "gens", "not a folder\n")


def _latin1(tmp):
    write(tmp / "gens" / "generations.jsonl", b'{"prompt": "caf\xe9"}\n')


def _same_pairs(tmp):
    pairs_file(tmp, [{"prompt": "p", "chosen": "same", "rejected": "same"}] * 3)


def _empty(tmp):
    write(tmp / "pairs.jsonl", "")


def _bad_json(tmp):
    write(tmp / "pairs.jsonl", '{"prompt": "p", "chosen": "a"\n')


def _pairs(tmp):
    pairs_file(tmp, [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(4)])


def _gens(tmp):
    write(tmp / "gens.jsonl", '{"prompt": "p", "responses": ["a", "b"]}\n')


def _taken_and(setup):
    def both(tmp):
        _file(tmp)
        setup(tmp)
    return both


# the flags each stage requires, so a row reaches the check it is about (inputs are valid, nothing loads first)
BASE = {
    "alignment.prepare_data": (["--data", "pairs.jsonl"], _pairs),
    "alignment.generate": (["--policy", "toy:tiny", "--prompts", "toy:4"], None),
    "alignment.annotate": (["--generations", "gens.jsonl", "--reward", "toy"], _gens),
    "alignment.select": (["--method", "reward_gap", "--policy", "toy:tiny", "--ref", "toy:small",
                          "--data", "pairs.jsonl"], _pairs),
    "alignment.evaluate": (["--policy", "toy:tiny", "--prompts", "toy:4", "--export", "none"], None),
}


def _row(id, entry, argv, match, klass, setup=None):
    base, base_setup = BASE[entry]
    if setup is None:
        setup = base_setup
    return Row(id, entry, base + argv, match, klass, setup=setup)


ROWS: list[Row] = []
for entry, (_, base_setup) in BASE.items():
    ROWS += [
        _row("out-is-a-file", entry, ["--out", "taken"], "--out", 1,
             setup=_taken_and(base_setup) if base_setup else _file),
        _row("out-under-proc", entry, ["--out", "/proc/gen-runs"], "--out", 1),
        _row("seed-2-32", entry, ["--seed", str(2 ** 32)], "--seed", 2),
        _row("seed-negative", entry, ["--seed", "-1"], "--seed", 2),
        _row("blank-name", entry, ["--name", " "], "--name", 5),
    ]
ROWS += [
    _row("sft-fraction-nan", "alignment.prepare_data", ["--sft-fraction", "nan"], "--sft-fraction", 2),
    _row("data-not-utf8", "alignment.prepare_data", ["--data", "latin1.jsonl"], "latin1.jsonl", 3,
         setup=lambda tmp: write(tmp / "latin1.jsonl", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')),
    _row("sft-fraction-over-one", "alignment.prepare_data", ["--sft-fraction", "1.5"], "--sft-fraction", 2),
    _row("num-responses-400-digits", "alignment.generate", ["--num-responses", HUGE], "--num-responses", 2),
    _row("max-new-tokens-400-digits", "alignment.generate", ["--max-new-tokens", HUGE], "--max-new-tokens", 2),
    _row("alpha-nan", "alignment.generate", ["--sampler", "mix_p", "--alpha", "nan"], "--alpha", 2),
    _row("temperature-inf", "alignment.generate", ["--temperature", "inf"], "--temperature", 2),
    _row("unknown-sampler", "alignment.generate", ["--sampler", "bogus"], "--sampler", 5),
    _row("generations-is-a-file", "alignment.annotate", ["--generations", "gens"], "--generations", 3,
        setup=_gens_file),
    _row("generations-not-utf8", "alignment.annotate", ["--generations", "gens"], "gens", 3, setup=_latin1),
    _row("flip-nan", "alignment.annotate", ["--flip", "nan"], "--flip", 2),
    _row("ratio-inf", "alignment.select", ["--ratio", "inf"], "--ratio", 2),
    _row("beta-nan", "alignment.select", ["--beta", "nan"], "--beta", 2),
    _row("ratio-zero", "alignment.select", ["--ratio", "0"], "--ratio", 2),
    _row("chosen-equals-rejected", "alignment.select", ["--data", "pairs.jsonl"], "pairs.jsonl", 5,
        setup=_same_pairs),
    _row("empty-pairs", "alignment.select", ["--data", "pairs.jsonl"], "pairs.jsonl", 3, setup=_empty),
    _row("broken-json", "alignment.select", ["--data", "pairs.jsonl"], "pairs.jsonl", 3, setup=_bad_json),
    _row("max-new-tokens-400-digits", "alignment.evaluate", ["--max-new-tokens", HUGE], "--max-new-tokens", 2),
    _row("prompts-broken-json", "alignment.evaluate", ["--prompts", "p.jsonl"], "p.jsonl", 3,
         setup=lambda tmp: write(tmp / "p.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt"\n')),
    _row("temperature-nan", "alignment.evaluate", ["--temperature", "nan"], "--temperature", 2),
    _row("kl-samples-zero", "alignment.evaluate", ["--kl-samples", "0"], "--kl-samples", 2),
    _row("kl-samples-400-digits", "alignment.evaluate", ["--kl-samples", HUGE], "--kl-samples", 2),
]
