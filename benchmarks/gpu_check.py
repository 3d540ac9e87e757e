"""GPU check of the GPU recipes: every recipe's stages end to end on random-init models of its real architectures.

    python benchmarks/gpu_check.py                          # one CUDA GPU, bf16, ~1B-parameter models, < 8 minutes
    python benchmarks/gpu_check.py --recipes sams,difficulty --dpo-steps 10 --out gpu_check.json
    python benchmarks/gpu_check.py --tiny --device cpu      # the same code path at toy scale on a CPU, seconds

For each recipe (alignment/configs/{iterative_prompt,safe_rlhf,active,sams,difficulty}.yaml) this reads the model
names in the recipe, builds each model's config in-process from its known architecture (ARCHITECTURES below: the
family, vocabulary and shape ratios of the real model; nothing is downloaded), scaled so one GPU holds two of them
(hidden --hidden, --layers layers, the real head size and GQA ratio, the real vocabulary), initialises it at random,
and saves it with a word-level tokenizer of the real vocabulary size (built in-process) as a model folder. Then it
runs the recipe's stages through their own entry points (`main(argv)`, in this process) with the recipe's own
stage sections, on synthetic prompts and preference pairs:
    iterative_prompt, safe_rlhf   generate mix_p (fused decoding, alignment/generation/decoding.py; plus the recipe's
                                  on-policy pair where it asks for one), generate on_policy (plain sampling), annotate
                                  (the recipe's reward model, a sequence classifier), train_dpo (the recipe's loss)
    active                        train_dpo with the recipe's selector (ae: Monte Carlo dropout scoring per batch)
    sams                          train_dpo with the SamS scheduler (a few pre-training batches first)
    difficulty                    train_dpo (the selection model), then select --method reward_gap
                                  (alignment/selection/scores.py) with the trained model against the base
Every stage runs in bf16 (--dtype) on --device, --max-steps DPO steps. Not run here: alignment.sft (active's first
stage), alignment.evaluate, alignment.reward_model (difficulty's last stage), vLLM, and several processes / ZeRO.

The table: per stage, the tokens it processed, the seconds the stage itself reports (generate: sampling time;
train_dpo: TRL's train_runtime; annotate and select: the whole call, model loading included), tokens/s, and the peak
GPU memory of the stage (torch.cuda.max_memory_allocated, reset before each stage). Tokens: generate counts new
tokens; annotate, train_dpo and select count the tokens of every sequence the model reads (prompt + response; DPO:
both sequences of every candidate pair of every step; the reference model's passes over the same tokens are not
counted again). A stage that raises or exits is a FAILED row (the recipe's later stages are skipped) and the
script exits 1 after the table; stages past --budget-s are skipped (exit 0, marked in the table). --out FILE also
writes the rows as JSON, with each stage's wall time and held_before_gib (GPU memory still allocated when the stage
started: it should be ~0, since the peak includes it). Model folders live under --work (default: a temporary folder)
and are removed after each recipe.
Exit 2 with one line when --device cuda finds no CUDA device (or on a bad flag); --device cpu needs --tiny.
"""
from __future__ import annotations

import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/gpu_check.py` from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # GPU nodes have no network; nothing here downloads

from runlog import ConfigError, arg, check_number, entry_point  # noqa: E402

RECIPES = ("iterative_prompt", "safe_rlhf", "active", "sams", "difficulty")
CONFIGS = Path(__file__).resolve().parents[1] / "alignment" / "configs"

# The real models' architectures, from their published config.json files (shapes only: rope settings, sliding
# windows and soft-capping do not change the parameter count or the tensor shapes and are left at the defaults).
ARCHITECTURES = {
    "openlm-research/open_llama_3b_v2": ("llama", dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26,
                                                       num_attention_heads=32, num_key_value_heads=32,
                                                       vocab_size=32000, max_position_embeddings=2048)),
    "PKU-Alignment/alpaca-7b-reproduced": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                                         num_attention_heads=32, num_key_value_heads=32,
                                                         vocab_size=32001, max_position_embeddings=2048)),
    "openai-community/gpt2-large": ("gpt2", dict(n_embd=1280, n_layer=36, n_head=20, vocab_size=50257, n_positions=1024)),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                          num_attention_heads=32, num_key_value_heads=8,
                                                          vocab_size=128256, max_position_embeddings=8192)),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                       num_attention_heads=32, num_key_value_heads=8,
                                                       vocab_size=128256, max_position_embeddings=131072)),
    "sfairXC/FsfairX-LLaMA3-RM-v0.1": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                                     max_position_embeddings=8192)),
    "mistralai/Mistral-7B-Instruct-v0.2": ("mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                           num_attention_heads=32, num_key_value_heads=8,
                                                           vocab_size=32000, max_position_embeddings=32768)),
    "google/gemma-2-9b-it": ("gemma2", dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                                            num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                                            vocab_size=256000, max_position_embeddings=8192)),
    "google/gemma-2b-it": ("gemma", dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                                         num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                                         vocab_size=256000, max_position_embeddings=8192)),
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                               max_position_embeddings=32768, tie_word_embeddings=False)),
}
TINY_VOCAB = 320  # --tiny: the toy words plus filler, so a CPU step takes milliseconds


@dataclass
class Args:
    recipes: str = arg(",".join(RECIPES), "comma-separated recipes to check (alignment/configs/NAME.yaml)")
    device: str = arg("cuda", "cuda (the default: exits 2 without a CUDA device) or cpu (needs --tiny)",
                      choices=["cuda", "cpu"])
    tiny: bool = arg(False, "toy scale (hidden 64, 2 layers, a 320-word vocabulary, a few tokens): the same code "
                     "path in seconds, on a CPU too")
    dtype: str = arg("bfloat16", "dtype of every model and stage", choices=["bfloat16", "float32"])
    hidden: int = arg(2048, "hidden size of the scaled models (the real head size and GQA ratio are kept)")
    layers: int = arg(16, "layers of the scaled models")
    gen_batches: int = arg(2, "generation batches per generate stage (the recipe's batch size each)")
    new_tokens: int | None = arg(None, "new tokens per response (default: the recipe's max_new_tokens)")
    prompt_tokens: int = arg(64, "tokens per synthetic prompt")
    response_tokens: int = arg(256, "tokens per synthetic response of the preference pairs")
    dpo_steps: int = arg(20, "optimizer steps per train_dpo stage (the recipe's batch size and grad-accum)")
    select_pairs: int = arg(128, "pairs scored by the reward_gap selection")
    budget_s: float = arg(400.0, "time budget in seconds: stages that would start after it are skipped (the last one "
                          "started may run a minute past it: the default keeps the check under 8 minutes)")
    seed: int = arg(0, "seed of the inits, the synthetic data and every stage")
    work: str | None = arg(None, "scratch folder for the model folders and runs (default: a temporary folder, "
                           "removed at the end)")
    out: str | None = arg(None, "also write the results as JSON to this file")


def scaled_config(name: str, hidden: int, layers: int, vocab: int | None = None, **token_ids):
    """The transformers config of the real architecture `name` at hidden size `hidden` and `layers` layers, keeping
    its family, head size, query-to-key/value head ratio and MLP ratio; vocab None keeps the real vocabulary;
    token_ids: bos_token_id, eos_token_id, pad_token_id of the tokenizer."""
    import transformers

    family, real = ARCHITECTURES[name]
    if family == "gpt2":
        heads = max(1, hidden // (real["n_embd"] // real["n_head"]))
        return transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=real["n_positions"],
                                       vocab_size=vocab or real["vocab_size"], **token_ids)
    head_dim = min(real.get("head_dim", real["hidden_size"] // real["num_attention_heads"]), max(hidden // 4, 1))
    if hidden % head_dim:  # e.g. OpenLLaMA-3B's 100: the largest power of two below it that divides the hidden size
        head_dim = 1 << (head_dim.bit_length() - 1)
        while hidden % head_dim:
            head_dim //= 2
    heads = hidden // head_dim
    kv = max(1, heads * real["num_key_value_heads"] // real["num_attention_heads"])
    while heads % kv:  # grouped-query attention needs whole groups
        kv -= 1
    inter = max(32, round(real["intermediate_size"] * hidden / real["hidden_size"] / 32) * 32)
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig, "gemma": transformers.GemmaConfig,
           "gemma2": transformers.Gemma2Config, "qwen2": transformers.Qwen2Config}[family]
    extra = {"head_dim": head_dim} if "head_dim" in real or head_dim * heads != hidden else {}
    return cls(**(real | dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab or real["vocab_size"])
                  | extra | token_ids))


def full_config(name: str):
    """The transformers config of the real model `name` (no scaling), for parameter counts on the meta device."""
    import transformers

    family, real = ARCHITECTURES[name]
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig, "gemma": transformers.GemmaConfig,
           "gemma2": transformers.Gemma2Config, "qwen2": transformers.Qwen2Config, "gpt2": transformers.GPT2Config}[family]
    return cls(**real)


def words_of(vocab_size: int) -> list[str]:
    """The tokenizer's words: the toy task's vocabulary (specials first), then filler words w0, w1, ..."""
    from alignment.core.toy import VOCAB

    return VOCAB + [f"w{i}" for i in range(max(vocab_size - len(VOCAB), 0))]


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly vocab_size tokens (the real model's vocabulary size), built in-process."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words_of(vocab_size))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left", model_max_length=1 << 20)


def save_model(name: str, folder: Path, a: Args, device, seed: int, reward: bool = False) -> int:
    """A random init of `name`'s scaled architecture (causal LM, or a one-logit sequence classifier for a reward
    model) and its tokenizer, saved to `folder`; returns the parameter count."""
    import torch
    import transformers

    hidden, layers, vocab = (64, 2, TINY_VOCAB) if a.tiny else (a.hidden, a.layers, None)
    tok = build_tokenizer(vocab or ARCHITECTURES[name][1]["vocab_size"])
    config = scaled_config(name, hidden, layers, vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    if reward:
        config.num_labels = 1
        cls = transformers.AutoModelForSequenceClassification
    else:
        cls = transformers.AutoModelForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: a 1B init on the CPU takes longer than the check
        model = cls.from_config(config, dtype=getattr(torch, a.dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


def recipe_models(recipe: dict) -> tuple[str, str | None]:
    """(policy, reward model) names of a recipe, where each recipe keeps them."""
    policy = recipe.get("policy") or recipe.get("base") or (recipe.get("sft") or {}).get("model")
    if policy is None and "models" in recipe:
        policy = next(iter(recipe["models"].values()))["policy"]  # sams: its first (default) model
    return policy, recipe.get("reward")


def flags(section: dict) -> list[str]:
    """A recipe section as command-line flags (bool: --x / --no-x; None: left out; dicts: recipe-only, left out)."""
    out = []
    for k, v in section.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        elif v is not None and not isinstance(v, dict):
            out += [flag, str(v)]
    return out


def data_words(a: Args) -> list[str]:
    """The words of the synthetic text: those every tokenizer here knows (the smallest vocabulary), no specials."""
    from alignment.core.toy import SPECIAL

    smallest = TINY_VOCAB if a.tiny else min(real["vocab_size"] for _, real in ARCHITECTURES.values())
    return words_of(smallest)[len(SPECIAL):]


def synthetic_words(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def write_prompts(path: Path, n: int, length: int, words: list[str], seed: int) -> None:
    rng = random.Random(f"{seed}/prompts")
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": synthetic_words(rng, words, length)}) + "\n"
                            for i in range(n)))


def write_pairs(path: Path, n: int, a: Args, words: list[str]) -> None:
    rng = random.Random(f"{a.seed}/pairs")
    prompt, response = lengths(a)
    rows = []
    for i in range(n):
        rc, rr = sorted((rng.gauss(0, 1) for _ in range(2)), reverse=True)
        rows.append({"id": f"q{i}", "prompt": synthetic_words(rng, words, prompt),
                     "chosen": " " + synthetic_words(rng, words, response),
                     "rejected": " " + synthetic_words(rng, words, response),
                     "chosen_reward": rc, "rejected_reward": rr})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def lengths(a: Args) -> tuple[int, int]:
    """(prompt, response) words of the synthetic data; --tiny caps both at 8."""
    return (min(a.prompt_tokens, 8), min(a.response_tokens, 8)) if a.tiny else (a.prompt_tokens, a.response_tokens)


def pair_tokens(max_length: int, a: Args) -> int:
    """Tokens of one pair's two sequences as TRL builds them: <bos> + prompt + response + <eos>, cut at max_length."""
    prompt, response = lengths(a)
    return 2 * min(1 + prompt + response + 1, max_length)


def summary_of(run_dir) -> dict:
    from runlog.rundir import read_run

    return read_run(run_dir)["summary"]


# --------------------------------------------------------------------------------------------- the stages
# Each stage: (ctx) -> (tokens, seconds); ctx holds the recipe, the model folders, the scratch folder and Args.

@dataclass
class Context:
    name: str
    recipe: dict
    a: Args
    device: str
    work: Path
    policy: Path
    reward: Path | None = None
    ref: Path | None = None
    runs: dict = field(default_factory=dict)


def _generate(ctx: Context, sampler: str):
    from alignment import generate

    a, section = ctx.a, dict(ctx.recipe.get("generate") or {})
    section |= ((ctx.recipe.get("per_sampler") or {}).get(sampler) or {}).get("generate", {})
    batch = 4 if a.tiny else int(section.get("batch_size") or 16)
    new = a.new_tokens or (4 if a.tiny else int(section.get("max_new_tokens", 128)))
    prompts = ctx.work / "prompts.jsonl"
    write_prompts(prompts, batch * a.gen_batches, lengths(a)[0], data_words(a), a.seed)
    section |= dict(backend="hf", batch_size=batch, max_new_tokens=new, device=ctx.device, dtype=a.dtype)
    # pi_ref is a second init: with the policy's own folder generate would load one model and skip the fusion
    path = generate.main(flags(section) + ["--policy", str(ctx.policy), "--ref", str(ctx.ref), "--prompts", str(prompts), "--sampler", sampler,
                                           "--seed", str(a.seed), "--out", str(ctx.work / "generate"), "--name", sampler])
    ctx.runs[f"generate/{sampler}"] = path
    s = summary_of(path)
    return s["new_tokens"], s["seconds"]


def stage_generate_mix_p(ctx: Context):
    return _generate(ctx, "mix_p")


def stage_generate_on_policy(ctx: Context):
    return _generate(ctx, "on_policy")


def stage_annotate(ctx: Context):
    from alignment import annotate
    from transformers import AutoTokenizer

    gen = ctx.runs["generate/mix_p"]
    section = dict(ctx.recipe.get("annotate") or {}) | dict(device=ctx.device)
    if ctx.a.tiny:
        section["batch_size"] = 8
    t0 = time.perf_counter()
    path = annotate.main(flags(section) + ["--generations", str(gen), "--reward", str(ctx.reward), "--seed",
                                           str(ctx.a.seed), "--out", str(ctx.work / "annotate"), "--name", "mix_p"])
    seconds = time.perf_counter() - t0
    ctx.runs["annotate"] = path
    tok = AutoTokenizer.from_pretrained(ctx.reward)
    rows = [json.loads(line) for line in Path(gen, "generations.jsonl").read_text().splitlines()]
    tokens = sum(len(tok(r["prompt"])["input_ids"]) + n for r in rows for n in r["num_tokens"])
    return tokens, seconds


def stage_train_dpo(ctx: Context):
    from alignment import train_dpo
    from alignment.pipeline.recipes import stage_defaults

    a = ctx.a
    train = stage_defaults(train_dpo.Args, ["--config", str(CONFIGS / f"{ctx.name}.yaml")], "train")
    batch, accum = int(train.get("batch_size", 16)), int(train.get("grad_accum", 1))
    pretrain = min(int(train.get("sams_pretrain_steps", 0)), 1 if a.tiny else 2)
    pairs = ctx.work / "pairs.jsonl"
    write_pairs(pairs, batch * accum * (a.dpo_steps + pretrain) + batch, a, data_words(a))
    path = train_dpo.main(["--config", str(CONFIGS / f"{ctx.name}.yaml"), "--preferences", str(pairs),
                           "--policy", str(ctx.policy), "--max-steps", str(a.dpo_steps), "--dtype", a.dtype,
                           "--device", ctx.device, "--seed", str(a.seed), "--out", str(ctx.work / "train_dpo"),
                           "--name", "dpo"] + (["--sams-pretrain-steps", str(pretrain)] if pretrain else []))
    ctx.runs["train_dpo"] = path
    s = summary_of(path)
    return s["steps"] * batch * accum * pair_tokens(int(train.get("max_length", 512)), a), s["train_runtime_s"]


def stage_select_reward_gap(ctx: Context):
    from alignment import select

    a = ctx.a
    section = dict(ctx.recipe.get("select") or {}) | dict(method="reward_gap", device=ctx.device, dtype=a.dtype)
    pairs = ctx.work / "select_pairs.jsonl"
    write_pairs(pairs, a.select_pairs, a, data_words(a))
    path = select.main(flags(section) + ["--policy", str(Path(ctx.runs["train_dpo"], "model")), "--ref",
                                         str(ctx.policy), "--data", str(pairs), "--out", str(ctx.work / "select"),
                                         "--name", "reward_gap"])
    run = json.loads(Path(path, "run.json").read_text())
    return run["config"]["resolved"]["tokens"], run["summary"]["wall_s"]


STAGES = {"generate_mix_p": stage_generate_mix_p, "generate_on_policy": stage_generate_on_policy,
          "annotate": stage_annotate, "train_dpo": stage_train_dpo, "select_reward_gap": stage_select_reward_gap}
RECIPE_STAGES = {
    "iterative_prompt": ("generate_mix_p", "generate_on_policy", "annotate", "train_dpo"),
    "safe_rlhf": ("generate_mix_p", "generate_on_policy", "annotate", "train_dpo"),
    "active": ("train_dpo",),
    "sams": ("train_dpo",),
    "difficulty": ("train_dpo", "select_reward_gap"),
}


# ----------------------------------------------------------------------------------------------- the run

def resolve(a: Args) -> list[str]:
    names = [r.strip() for r in a.recipes.split(",") if r.strip()]
    bad = [r for r in names if r not in RECIPES]
    if not names or bad:
        raise ConfigError(f"--recipes: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(RECIPES)}")
    for flag in ("hidden", "layers", "gen_batches", "prompt_tokens", "response_tokens", "dpo_steps", "select_pairs"):
        check_number(flag.replace("_", "-"), getattr(a, flag), low=1, integer=True)
    if a.new_tokens is not None:
        check_number("new-tokens", a.new_tokens, low=1, integer=True)
    check_number("budget-s", a.budget_s, low=0, low_open=True)
    if a.out is not None and not Path(a.out).resolve().parent.is_dir():
        raise ConfigError(f"--out: the folder of {a.out!r} does not exist")
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: no CUDA device here; this check is for GPU nodes (--device cpu --tiny runs it "
                          "at toy scale on a CPU)")
    if a.device == "cpu" and not a.tiny:
        raise ConfigError("--device cpu: only with --tiny (the ~1B models of the full check need a GPU)")
    return names


def measure(stage, ctx: Context) -> dict:
    """Run one stage; its tokens, seconds, tokens/s and peak GPU memory, or the error that stopped it."""
    import torch

    cuda = ctx.device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # what earlier stages left allocated (should be ~0: the peak below would include it)
    held = torch.cuda.memory_allocated() / 2**30 if cuda else None
    t0 = time.perf_counter()
    try:
        tokens, seconds = stage(ctx)
        row = {"status": "ok", "tokens": int(tokens), "seconds": float(seconds),
               "tokens_per_s": tokens / seconds if seconds > 0 else None}
    except (Exception, SystemExit) as e:  # a stage's ConfigError exits 2 through its entry point
        row = {"status": "FAILED", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    row["wall_s"] = time.perf_counter() - t0
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    row["held_before_gib"] = held
    return row


def table(rows: list[dict]) -> str:
    lines = ["| recipe | stage | model (scaled) | params | tokens | seconds | tokens/s | peak GPU GiB | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda k, f: format(r[k], f) if r.get(k) is not None else "-"
        lines.append(f"| {r['recipe']} | {r['stage']} | {r['model']} | {fmt('params_m', '.1f')}M | {fmt('tokens', 'd')} "
                     f"| {fmt('seconds', '.2f')} | {fmt('tokens_per_s', '.0f')} | {fmt('peak_gib', '.1f')} "
                     f"| {r['status'] if r['status'] != 'FAILED' else 'FAILED: ' + r['error']} |")
    return "\n".join(lines)


def check_recipe(ctx: Context, base: dict, policy_name: str, reward_name: str | None, stages: tuple,
                 t_start: float) -> list[dict]:
    """Build one recipe's models, then run its stages in order: its table rows."""
    a, work = ctx.a, ctx.work
    rows = []
    try:
        base["params_m"] = save_model(policy_name, ctx.policy, a, a.device, a.seed) / 1e6
        if "generate_mix_p" in stages:
            ctx.ref = work / "ref"
            save_model(policy_name, ctx.ref, a, a.device, a.seed + 2)
        if "annotate" in stages:
            ctx.reward = work / "reward"
            save_model(reward_name, ctx.reward, a, a.device, a.seed + 1, reward=True)
    except Exception as e:
        return [base | {"stage": s, "status": "FAILED", "error": f"building the models: {type(e).__name__}: "
                        f"{e}".splitlines()[0][:300]} for s in stages]
    failed = False
    for stage in stages:
        row = base | {"stage": stage}
        if failed:
            rows.append(row | {"status": "skipped (an earlier stage failed)"})
        elif time.perf_counter() - t_start > a.budget_s:
            rows.append(row | {"status": "skipped (--budget-s)"})
        else:
            print(f"== gpu_check: {ctx.name} / {stage}", flush=True)
            rows.append(row | measure(STAGES[stage], ctx))
            failed = rows[-1]["status"] == "FAILED"
    return rows


def run(a: Args) -> Path | None:
    from alignment.pipeline.recipes import load_yaml

    names = resolve(a)
    import torch

    t_start = time.perf_counter()
    scratch = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    rows = []
    try:
        for name in names:
            recipe = load_yaml(str(CONFIGS / f"{name}.yaml"))
            policy_name, reward_name = recipe_models(recipe)
            stages = RECIPE_STAGES[name]
            base = {"recipe": name, "model": policy_name, "params_m": None}
            work = scratch / name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            ctx = Context(name, recipe, a, a.device, work, work / "policy")
            try:
                rows += check_recipe(ctx, base, policy_name, reward_name, stages, t_start)
            finally:
                shutil.rmtree(work, ignore_errors=True)  # the next recipe's models need the disk
    finally:
        if not a.work:
            shutil.rmtree(scratch, ignore_errors=True)
    device = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"\ngpu_check on {device}, {a.dtype}, {'tiny' if a.tiny else f'hidden {a.hidden}, {a.layers} layers'}, "
          f"{time.perf_counter() - t_start:.0f} s\n")
    print(table(rows))
    path = None
    if a.out:
        from runlog.rundir import atomic_write_json

        path = Path(a.out)
        atomic_write_json(path, {"device": device, "dtype": a.dtype, "tiny": a.tiny, "hidden": a.hidden,
                                 "layers": a.layers, "seconds": time.perf_counter() - t_start, "rows": rows})
    failures = [r for r in rows if r["status"] == "FAILED"]
    if failures:
        print(f"gpu_check: {len(failures)} stage(s) failed", file=sys.stderr)
        if path is not None:
            print(f"wrote {path}")
        raise SystemExit(1)
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
