"""The toy task: the embedded default that runs the whole pipeline on a laptop CPU.

Prompts ask for a few sentences about a topic; responses are sentences "the ADJ NOUN VERB ." built
from a 60-word vocabulary. The true reward (a Python function, so the optimum is known) scores
  +1 per good adjective, -1 per bad one, 0 per neutral one,
  +1 per noun of the prompt's topic, -0.5 per noun of another topic,
  -3 per sentence away from the requested count (more than a perfect sentence earns, so length matters),
  -2 once if the response is not a sequence of well-formed sentences ("not fluent").
The optimum for "write about ocean in 3 sentences :" is three sentences "the GOOD_ADJ OCEAN_NOUN VERB .",
worth 2 per sentence. Demonstrations (the SFT data) are fluent but pick adjectives, nouns and lengths
at random, so the SFT policy is mediocre (mean reward about -3) and samplers have room to differ.
Everything is seeded; the tokenizer and the tiny Llama model are built in-process from configs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

TOPICS = {
    "garden": ["rose", "tulip", "soil", "seed"],
    "ocean": ["wave", "coral", "tide", "shell"],
    "city": ["street", "tower", "bridge", "market"],
    "forest": ["oak", "moss", "fern", "owl"],
    "kitchen": ["bread", "soup", "spice", "oven"],
    "space": ["star", "comet", "orbit", "moon"],
    "music": ["song", "drum", "chord", "piano"],
    "winter": ["snow", "frost", "ice", "sled"],
}
GOOD = ["bright", "kind", "calm", "gentle", "lovely", "warm"]
BAD = ["dull", "cruel", "harsh", "ugly", "bitter", "cold"]
NEUTRAL = ["small", "tall", "old", "new", "round", "green"]
VERBS = ["shines", "grows", "moves", "rests", "sings", "waits"]
MAX_SENTENCES = 4
LENGTH_PENALTY = 3.0  # per sentence away from the requested count
PROMPT_WORDS = ["write", "about", "in", "sentence", "sentences", ":", "the", "."] + [str(n) for n in range(1, MAX_SENTENCES + 1)]
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]

ADJECTIVES = GOOD + BAD + NEUTRAL
NOUN_TOPIC = {noun: topic for topic, nouns in TOPICS.items() for noun in nouns}
ADJ_SCORE = {**{a: 1.0 for a in GOOD}, **{a: -1.0 for a in BAD}, **{a: 0.0 for a in NEUTRAL}}
VOCAB = SPECIAL + sorted(set(PROMPT_WORDS + list(TOPICS) + list(NOUN_TOPIC) + ADJECTIVES + VERBS))


def make_prompt(topic: str, n: int) -> str:
    return f"write about {topic} in {n} {'sentence' if n == 1 else 'sentences'} :"


def parse_prompt(prompt: str) -> tuple[str, int]:
    """(topic, requested sentence count) of a toy prompt; ValueError if it is not one."""
    words = prompt.split()
    ok = (len(words) == 7 and words[:2] == ["write", "about"] and words[2] in TOPICS and words[3] == "in"
          and words[4].isdigit() and words[5] in ("sentence", "sentences") and words[6] == ":")
    if not ok:
        raise ValueError(f"not a toy prompt: {prompt!r}")
    return words[2], int(words[4])


def split_sentences(response: str) -> tuple[list[list[str]], bool]:
    """Sentences of a response and whether every one is well-formed ("the ADJ NOUN VERB .")."""
    words = response.split()
    sentences, cur = [], []
    for w in words:
        cur.append(w)
        if w == ".":
            sentences.append(cur)
            cur = []
    fluent = not cur and bool(sentences) and all(
        len(s) == 5 and s[0] == "the" and s[1] in ADJ_SCORE and s[2] in NOUN_TOPIC and s[3] in VERBS for s in sentences)
    if cur:
        sentences.append(cur)
    return sentences, fluent


def true_reward(prompt: str, response: str) -> float:
    """The programmatic reward described in the module docstring."""
    topic, target = parse_prompt(prompt)
    sentences, fluent = split_sentences(response)
    score = 0.0
    for w in response.split():
        score += ADJ_SCORE.get(w, 0.0)
        if w in NOUN_TOPIC:
            score += 1.0 if NOUN_TOPIC[w] == topic else -0.5
    score -= LENGTH_PENALTY * abs(len(sentences) - target)
    return score - (0.0 if fluent else 2.0)


def optimal_reward(prompt: str) -> float:
    return 2.0 * parse_prompt(prompt)[1]


def is_fluent(response: str) -> bool:
    return split_sentences(response)[1]


@dataclass
class ToyTask:
    """Seeded prompts and demonstrations. Prompt ids are stable: the same seed gives the same set."""

    seed: int = 0

    def prompts(self, n: int, split: str = "train") -> list[dict]:
        """n prompt rows {"id", "prompt"}; splits draw from disjoint random streams."""
        rng = random.Random(f"{self.seed}/{split}/prompts")
        rows = []
        for i in range(n):
            topic = rng.choice(sorted(TOPICS))
            rows.append({"id": f"toy-{split}-{i}", "prompt": make_prompt(topic, rng.randint(1, MAX_SENTENCES))})
        return rows

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        """A fluent, mediocre response: random adjectives, half the nouns on topic, random length."""
        topic, _ = parse_prompt(prompt)
        words = []
        for _ in range(rng.randint(1, MAX_SENTENCES)):
            noun = rng.choice(TOPICS[topic]) if rng.random() < 0.5 else rng.choice(list(NOUN_TOPIC))
            words += ["the", rng.choice(ADJECTIVES), noun, rng.choice(VERBS), "."]
        return " ".join(words)

    def demonstrations(self, n: int, split: str = "train") -> list[dict]:
        """n prompt-completion rows for SFT: {"id", "prompt", "completion"}."""
        rng = random.Random(f"{self.seed}/{split}/demos")
        return [dict(row, completion=" " + self.demonstration(row["prompt"], rng)) for row in self.prompts(n, split)]


def build_tokenizer():
    """A word-level tokenizer over VOCAB, built in-process (no download), left-padded for generation."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left", model_max_length=128)


# toy:N prompts are ToyTask(TASK_SEED)'s and toy:SIZE models seed-TASK_SEED inits, whatever a stage's --seed
TASK_SEED = 0

SIZES = {  # hidden, layers, heads, intermediate
    "tiny": (32, 2, 2, 64),
    "small": (64, 2, 4, 256),
    "base": (128, 4, 4, 512),
}


def build_model(tokenizer, size: str = "small", seed: int = 0):
    """A freshly initialised Llama-class causal LM for the toy vocabulary. Built through from_config, so that under
    DeepSpeed ZeRO-3 (a live HfDeepSpeedConfig) transformers creates it partitioned, as it does from_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers, heads, inter = SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=inter,
                         max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def sample_toy(model, tokenizer, num: int, seed: int, max_new_tokens: int, batch_size: int = 64) -> list[dict]:
    """One plain sampled response (temperature 1, no top-k / top-p) per held-out toy prompt, seeded, with its
    fluency and true reward: {"id", "prompt", "response", "fluent", "reward"} (alignment.sft's check of a model)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    prompts = ToyTask(seed).prompts(num, "heldout")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    with torch.no_grad():
        for i in range(0, num, batch_size):
            chunk = prompts[i:i + batch_size]
            batch = tokenizer([r["prompt"] for r in chunk], return_tensors="pt", padding=True).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for r, text in zip(chunk, texts):
                text = " ".join(text.split())
                rows.append({"id": r["id"], "prompt": r["prompt"], "response": text, "fluent": is_fluent(text),
                             "reward": true_reward(r["prompt"], text)})
    return rows
