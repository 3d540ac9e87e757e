"""Export a public preference set as this package's files: one checked, seeded copy that every later stage reads.

    python -m alignment.prepare_data --data princeton-nlp/llama3-ultrafeedback --out runs/alignment/data --name uf
    python -m alignment.prepare_data --data HuggingFaceH4/ultrafeedback_binarized --split train_prefs --out D
    python -m alignment.prepare_data --data Anthropic/hh-rlhf --sft-fraction 0.3 --out D   # AE-DPO's pretrain_fraction

Why a separate step (alignment.train_dpo, alignment.select and alignment.reward_model also read a Hub set directly,
with --split / --data-config / --data-dir): every process of a launched training would load the Hub set again, and a
public set's few identical or unsplittable pairs would stop each of them at its start.
Here the set is loaded once (--split: any split name, or datasets' slicing such as "train[:2000]"), checked by
alignment.core.data's rules, and written as plain JSON Lines that every later stage reads offline.

Rows accepted:
    TRL preference rows (prompt, chosen, rejected; text or chat messages). A conversational set without a prompt
        (chosen and rejected are whole conversations, e.g. Skywork-Reward-Preference-80K) gets the shared leading
        messages as its prompt, as TRL does (alignment.core.data.validate_preferences).
    Anthropic HH text rows (chosen and rejected are "\\n\\nHuman: ... \\n\\nAssistant: ..." strings, no prompt): the
        prompt is chosen up to and including its last "\\n\\nAssistant:", the responses are what follows, as the
        DPO reference code (eric-mitchell/direct-preference-optimization, extract_anthropic_prompt) splits them.
Dropped and counted (not errors: public sets have a few): pairs whose chosen and rejected are the same (no
preference, zero DPO gradient), HH rows that cannot be split that way and conversation pairs that share no first
message or leave one response empty. Anything else malformed is one error line.

--sft-fraction f (AE-DPO's pretrain_fraction, offline setting): the pairs are grouped by prompt, the groups put
in a seeded random order, and whole groups go to the SFT part until it holds round(f x pairs) pairs; the rest
are the preference pairs (so no prompt is in both parts). The SFT part is one row per prompt, {"prompt",
"completion"} with the chosen response of the prompt's last pair (the DPO reference code's sft_target), as
alignment.sft reads it; prompts whose response is blank are left out of the SFT rows (counted).

Writes OUT/NAME/{run.json, metrics.jsonl (one row of counts), preferences.jsonl (the pairs in their original
order: id (the row's own, else its row number in the source), prompt, chosen, rejected and the row's other scalar
fields, e.g. source or scores; list fields are left out), sft.jsonl (with --sft-fraction > 0)}, all at once or
not at all. `python -m alignment.train_dpo --preferences OUT/NAME` and
`python -m alignment.select --data OUT/NAME` read the folder; alignment.sft and alignment.reward_model take the
files (--data OUT/NAME/sft.jsonl, --data OUT/NAME/preferences.jsonl).
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from runlog import ConfigError, RunDir, arg, check_name, check_out, check_seed, entry_point

SFT_FILE = "sft.jsonl"
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
KEPT_FIELDS = ("id", "prompt", "chosen", "rejected")


@dataclass
class Args:
    data: str | None = arg(None, "preference set: a Hub dataset name or a local .json/.jsonl/.parquet file (TRL "
                           "preference rows, conversations with an implicit prompt, or Anthropic HH text) (required)",
                           metavar="NAME_OR_PATH")
    split: str = arg("train", "Hub split to load, e.g. train_prefs, or a slice such as train[:2000] (a local file is "
                     "read whole)")
    sft_fraction: float = arg(0.0, "fraction of the pairs, by whole prompts in a seeded random order, set aside as "
                              "SFT rows (sft.jsonl) and left out of preferences.jsonl; in [0, 1)")
    seed: int = arg(0, "seed of the prompt order behind the SFT split")
    out: str = arg("runs/alignment/data", "output folder; the files are written to OUT/NAME")
    name: str = arg("data", "run name; an older run of that name is replaced")


def resolve(args: Args) -> None:
    """Check every flag before anything is loaded or written (no network: a Hub name is only checked for form)."""
    from alignment.core.data import LOCAL_FORMATS

    if not args.data or not args.data.strip():
        raise ConfigError("--data: required (a Hub dataset name or a .json, .jsonl or .parquet file)")
    path = Path(args.data).expanduser()
    if path.suffix in LOCAL_FORMATS and not path.is_file():
        raise ConfigError(f"--data: no such file {args.data!r}")
    if not args.split or not args.split.strip():
        raise ConfigError("--split: must be a split name such as train or train_prefs")
    f = args.sft_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0.0 <= f < 1.0:
        raise ConfigError(f"--sft-fraction: must be a number in [0, 1), got {f}")
    check_seed("seed", args.seed)
    check_name(args.name)
    check_out(args.out)


# ------------------------------------------------------------------------------------------------ rows

def is_hh_text(row: dict) -> bool:
    """An Anthropic HH row: chosen and rejected are whole text dialogues and there is no prompt."""
    return row.get("prompt") is None and isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str)


def split_hh(row: dict) -> dict | None:
    """The prompt (through the last "\\n\\nAssistant:" of chosen) and the two responses, or None when the row
    cannot be split that way (no "\\n\\nAssistant:", or rejected does not share the prompt)."""
    chosen, rejected = row["chosen"], row["rejected"]
    i = chosen.rfind(HH_ASSISTANT)
    if i < 0:
        return None
    prompt = chosen[:i + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt) or not prompt.lstrip().startswith(HH_HUMAN.strip()):
        return None
    return dict(row, prompt=prompt, chosen=chosen[len(prompt):], rejected=rejected[len(prompt):])


def is_implicit_conversation(row: dict) -> bool:
    """Whole conversations as chosen and rejected, the prompt implicit (a text prompt column beside them is a copy)."""
    from alignment.core.data import is_messages

    return (is_messages(row.get("chosen")) and is_messages(row.get("rejected"))
            and (row.get("prompt") is None or isinstance(row["prompt"], str)))


def split_conversation(row: dict) -> dict | None:
    """The shared leading messages as the prompt and the rest as the responses (TRL's rule, as
    alignment.core.data.validate_preferences applies it), or None when they share no message or one response would be
    empty (e.g. chosen is the start of rejected)."""
    from alignment.core.data import split_shared_prefix

    if row["chosen"] == row["rejected"]:
        return dict(row)  # counted as identical below
    prompt, chosen, rejected = split_shared_prefix(row["chosen"], row["rejected"])
    if not prompt or not chosen or not rejected:
        return None
    return dict(row, prompt=prompt, chosen=chosen, rejected=rejected)


def _blank(completion) -> bool:
    if isinstance(completion, str):
        return not completion.strip()
    return all(not str(m.get("content", "")).strip() for m in completion)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def clean_pairs(rows: list[dict], source: str, field: str = "--data") -> tuple[list[dict], dict]:
    """(checked pairs with the kept fields, counts). HH text rows are split first; identical pairs are dropped."""
    from alignment.core.data import validate_preferences

    if not rows:
        raise ConfigError(f"{field}: {source} has no rows")
    counts = {"rows": len(rows), "hh_text_rows": 0, "dropped_unsplit": 0, "dropped_identical": 0}
    converted = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if v is not None}  # datasets fills a field missing from a row with None
        row.setdefault("id", i)  # the row number in the source, kept through the rows dropped below
        if is_hh_text(row):
            counts["hh_text_rows"] += 1
            row = split_hh(row)
        elif is_implicit_conversation(row):
            row = split_conversation(row)
        if row is None:
            counts["dropped_unsplit"] += 1
            continue
        if row.get("chosen") is not None and row.get("chosen") == row.get("rejected"):
            counts["dropped_identical"] += 1  # before the check: a conversation pair would have no responses left
            continue
        converted.append(row)
    if not converted and counts["dropped_identical"]:
        raise ConfigError(f"{field}: every pair of {source} has the same chosen and rejected response")
    if not converted:
        raise ConfigError(f"{field}: none of the {len(rows)} rows of {source} could be split into prompt and "
                          f"responses (HH text rows need '\\n\\nHuman: ... \\n\\nAssistant: ...' dialogues, "
                          f"conversations a shared first message)")
    checked = validate_preferences(converted, source, field, allow_identical=True)
    pairs = []
    for row in checked:
        if row["chosen"] == row["rejected"]:
            counts["dropped_identical"] += 1
            continue
        extra = {k: v for k, v in row.items() if k not in KEPT_FIELDS and _scalar(v)}
        pairs.append({"id": row["id"], "prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
                      **extra})
    if not pairs:
        raise ConfigError(f"{field}: every pair of {source} has the same chosen and rejected response")
    counts["pairs"] = len(pairs)
    return pairs, counts


def prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def sft_split(pairs: list[dict], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(indices of the SFT pairs, indices of the preference pairs), both ascending: whole prompt groups in a seeded
    random order go to the SFT part until it holds round(fraction x len(pairs)) pairs."""
    if fraction <= 0:
        return [], list(range(len(pairs)))
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(prompt_key(p["prompt"]), []).append(i)
    order = list(groups.values())  # first appearance order: deterministic before the seeded shuffle
    random.Random(f"{seed}/prepare_data/sft").shuffle(order)
    target = round(fraction * len(pairs))
    sft = []
    for members in order:
        if len(sft) >= target:
            break
        sft += members
    chosen = set(sft)
    return sorted(sft), [i for i in range(len(pairs)) if i not in chosen]


def sft_rows(pairs: list[dict], indices: list[int]) -> tuple[list[dict], int]:
    """One {"id", "prompt", "completion"} row per prompt of the SFT pairs (the chosen response of its last pair, in
    file order), prompts in order of first appearance; returns (rows, prompts left out for a blank response)."""
    last: dict[str, dict] = {}
    for i in indices:
        last[prompt_key(pairs[i]["prompt"])] = pairs[i]
    rows, blank = [], 0
    for p in last.values():
        if _blank(p["chosen"]):
            blank += 1
            continue
        rows.append({"id": p["id"], "prompt": p["prompt"], "completion": p["chosen"]})
    return rows, blank


# ------------------------------------------------------------------------------------------------ main

def prepare(args: Args, rows: list[dict], source: str) -> tuple[list[dict], list[dict], dict]:
    """(preference pairs, SFT rows, counts) of loaded rows."""
    pairs, counts = clean_pairs(rows, source)
    sft_idx, pref_idx = sft_split(pairs, args.sft_fraction, args.seed)
    sft, blank = sft_rows(pairs, sft_idx) if sft_idx else ([], 0)
    if not pref_idx:
        raise ConfigError(f"--sft-fraction: {args.sft_fraction} leaves no preference pairs ({len(pairs)} pairs, "
                          f"{len({prompt_key(p['prompt']) for p in pairs})} prompts); use a smaller fraction")
    if sft_idx and not sft:
        raise ConfigError(f"--sft-fraction: the {len(sft_idx)} SFT pairs all have a blank chosen response")
    counts |= {"preference_pairs": len(pref_idx), "sft_pairs": len(sft_idx), "sft_rows": len(sft),
               "sft_blank_dropped": blank,
               "prompts": len({prompt_key(p["prompt"]) for p in pairs})}
    return [pairs[i] for i in pref_idx], sft, counts


def run(args: Args) -> Path | None:
    """The prepare_data stage on parsed arguments (what `python -m alignment.prepare_data` runs; the pipeline calls it too)."""
    resolve(args)
    t0 = time.perf_counter()

    from alignment.core.data import PREFERENCES_FILE, load_rows_located, write_jsonl

    rows, source, _ = load_rows_located(args.data, "--data", args.split,
                                         "a .json, .jsonl or .parquet file or a Hub dataset name")
    prefs, sft, counts = prepare(args, rows, source)
    conversational = isinstance(prefs[0]["prompt"], list)
    config = {**vars(args), "resolved": {"source": source, "format": "conversational" if conversational else "text"}}
    with RunDir(args.out, args.name, config, [args.seed]) as run:
        write_jsonl(run.path(PREFERENCES_FILE), prefs)
        if sft:
            write_jsonl(run.path(SFT_FILE), sft)
        run.log({"stage": "prepare_data", "seed": args.seed, "step": 0, **counts})
        path = run.finish(summary=counts | {"wall_s": time.perf_counter() - t0})
    dropped = counts["dropped_identical"] + counts["dropped_unsplit"]
    sft_text = f", {counts['sft_rows']} SFT rows ({counts['sft_pairs']} pairs, fraction {args.sft_fraction})"
    print(f"prepare_data: {counts['rows']} rows of {source} -> {counts['preference_pairs']} preference pairs"
          + (sft_text if sft else "")
          + f"; dropped {dropped} ({counts['dropped_identical']} identical, {counts['dropped_unsplit']} without a "
          f"prompt / response split)")
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
