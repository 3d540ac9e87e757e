"""Prompt, generation and preference sets: loading (toy, local JSON/JSONL/Parquet, Hub), validation, writing.

Every problem found is a ConfigError naming the flag, the file and the row (rows count from 0, in file
order; JSON Lines errors give the line number too), so a command line stops with one clear line and
exit code 2. Rows come back as plain dicts; `as_dataset(rows)` makes a `datasets.Dataset` of them.

Sources:
    prompts       "toy" / "toy:N", a .json / .jsonl / .parquet file, or a Hub dataset name (connected machine)
    generations   a generate run folder (its generations.jsonl) or a .jsonl / .json / .parquet file
    preferences   an annotate run folder (its preferences.jsonl), a local file, or a Hub dataset name
A Hub dataset, or a local dataset folder (a folder that is not a run folder, e.g. a downloaded copy of a Hub
dataset repository), is read by datasets.load_dataset with its `split` (default train), config `name`
(--data-config) and `data_dir` (--data-dir); a split it lacks is one error listing the splits it has.
--data-config and --data-dir are an error for a local file or a run folder (they have one split and no
configs; a local file is read whole, whatever the split).

A .jsonl file is read line by line (blank lines skipped); a .json file is a JSON array of row objects or
JSON Lines. A field set to null counts as missing. `id` is optional everywhere: a row without one gets
its row number (as a string); ids are strings (integers are converted) and must be unique.

Text fields:
    prompt     a non-empty string, or a non-empty list of {"role", "content"} messages (conversational);
               one set is all plain text or all conversational (datasets and TRL need one column type).
    responses, chosen, rejected
               completions: strings that may be empty (a model may stop at once, and that is a response
               the reward can score and DPO can learn from); in a conversational preference set chosen and
               rejected are lists of messages (TRL's format), e.g. [{"role": "assistant", "content": ...}].
Preference sets:
    chosen == rejected is an error by default: the pair carries no preference (zero DPO gradient), and
    annotate never writes one, so it signals a broken file. Pass allow_identical=True to keep such rows
    (some public sets have a few). A conversational set without a prompt (chosen and rejected are whole
    conversations, as on the Hub) gets the shared leading messages as its prompt, as TRL does; a text
    prompt beside such conversations (UltraFeedback-binarized's `prompt` column) is a copy of the first user
    message and is replaced by the shared messages.
    Anthropic HH text rows (no prompt; chosen and rejected are whole "\\n\\nHuman: ...\\n\\nAssistant: ..."
    transcripts) stay plain text: the prompt is their shared leading text up to and including its last
    "\\n\\nAssistant:", the responses are the rest of each (with their leading space), so prompt + chosen is
    the original chosen transcript (TRL's DPOTrainer tokenizes plain text as prompt + completion). Kept as
    text rather than turned into messages: the model sees the transcript as written, and a tokenizer without
    a chat template (a base model) trains on it.
    Optional: chosen_reward, rejected_reward (finite numbers), responses (strings) and rewards (finite
    numbers, one per response). Rewards are not required to order chosen above rejected.
    UltraFeedback's scores: a row with both score_chosen and score_rejected (finite numbers, checked as
    the rewards are) and neither chosen_reward nor rejected_reward gets chosen_reward = score_chosen and
    rejected_reward = score_rejected (what --loss rev_kl reads and alignment.annotate writes); the score
    fields stay as well. Both or neither: a lone score is left as it is, and never mapped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from runlog import ConfigError, atomic_write_text
from runlog.rundir import dumps

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
GENERATIONS_FILE = "generations.jsonl"
PREFERENCES_FILE = "preferences.jsonl"


# ------------------------------------------------------------------------------------------------ reading

def _where(field: str, source: str, i: int, lines: list[int] | None = None) -> str:
    line = f" (line {lines[i]})" if lines is not None else ""
    return f"{field}: {source} row {i}{line}"


class _NotJSON(str):
    """Where Python's json would read NaN / Infinity / -Infinity, which strict JSON (and other readers) refuse: the
    token, kept as json's parse_constant so that _not_json_at can say where it stood."""


def _not_json_at(obj, path: str = "") -> tuple[str, str] | None:
    """(path, token) of the first NaN or Infinity in a parsed row, e.g. ('rewards[3]', 'Infinity'), else None."""
    if isinstance(obj, _NotJSON):
        return path, str(obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = _not_json_at(value, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key)
        if found:
            return found
    return None


def _refuse_not_json(obj, where: str) -> None:
    found = _not_json_at(obj)
    if found:
        raise ConfigError(f"{where}: {found[0]!r} is {found[1]}, which is not JSON (strict JSON has no NaN or "
                          f"Infinity)")


def _read_jsonl(path: Path, field: str, source: str) -> tuple[list[dict], list[int]]:
    """Rows of a JSON Lines text and the line number of each; one error per malformed line."""
    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        try:
            text_lines = list(f)
        except UnicodeDecodeError as e:
            raise ConfigError(f"{field}: {source} is not UTF-8 text ({e.reason})") from None
    for n, line in enumerate(text_lines, start=1):
        if not line.strip():
            continue
        where = f"{field}: {source} row {len(rows)} (line {n})"
        try:
            row = json.loads(line, parse_constant=_NotJSON)
            _refuse_not_json(row, where)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:  # json's parser recurses per level of nesting
            raise ConfigError(f"{where}: nested too deeply to be a row") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        rows.append(row)
        lines.append(n)
    return rows, lines


def _read_json(path: Path, field: str, source: str) -> tuple[list[dict], list[int] | None]:
    """A JSON array of row objects, or JSON Lines (what datasets' json loader accepts too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{field}: {source} is not UTF-8 text ({e.reason})") from None
    if not text.lstrip().startswith("["):
        return _read_jsonl(path, field, source)
    try:
        data = json.loads(text, parse_constant=_NotJSON)
        if isinstance(data, list):
            for i, row in enumerate(data):
                _refuse_not_json(row, _where(field, source, i))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{field}: {source} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ConfigError(f"{field}: {source}: nested too deeply to be a list of rows") from None
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise ConfigError(f"{_where(field, source, i)}: a row must be a JSON object, got {type(row).__name__}")
    return data, None


def _read_parquet(path: Path, field: str, source: str) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # not a parquet file, truncated, ...
        raise ConfigError(f"{field}: cannot read {source} as Parquet ({str(e).splitlines()[0]})") from None


def _read_local(path: Path, field: str) -> tuple[list[dict], str, list[int] | None]:
    """(rows, source label, line numbers or None) of a local .json / .jsonl / .parquet file."""
    source = repr(str(path))
    if not path.is_file():
        raise ConfigError(f"{field}: no such file {source}")
    if path.suffix == ".jsonl":
        rows, lines = _read_jsonl(path, field, source)
    elif path.suffix == ".json":
        rows, lines = _read_json(path, field, source)
    else:
        rows, lines = _read_parquet(path, field, source), None
    return rows, source, lines


FILE_SUFFIXES = {".csv", ".tsv", ".txt", ".arrow", ".gz", ".bz2", ".zip", ".xz", ".zst", ".xlsx", ".pkl", ".pt", ".npy"}


def _looks_local(spec: str) -> bool:
    """Hub dataset names are "org/name" or a bare name without a dot; anything else is taken as a path."""
    p = Path(spec)
    return (spec.startswith((".", "/", "~")) or p.exists() or spec.count("/") > 1
            or ("/" not in spec and "." in spec) or p.suffix.lower() in FILE_SUFFIXES)


def _bad_suffix(spec: str, field: str, what: str) -> ConfigError:
    return ConfigError(f"{field}: {spec!r} must be {what}")


CONFIG_FLAG, DATA_DIR_FLAG = "--data-config", "--data-dir"
RUN_FILE = "run.json"  # every runlog run folder has one: such a folder is never read as a dataset folder


def load_rows(spec: str, field: str, split: str, config: str | None = None, data_dir: str | None = None) -> list[dict]:
    """Rows of a local file (by suffix) or of a Hub dataset / dataset folder (config, data_dir: its config
    name and data_dir, for datasets.load_dataset)."""
    return load_rows_located(spec, field, split, "a .json, .jsonl or .parquet file, 'toy[:N]' or a Hub dataset name",
                             config=config, data_dir=data_dir)[0]


def _hub_only(config: str | None, data_dir: str | None, field: str, spec: str, kind: str) -> None:
    """--data-config / --data-dir name a Hub dataset's config and folder: an error for a local file or run folder."""
    for flag, value in ((CONFIG_FLAG, config), (DATA_DIR_FLAG, data_dir)):
        if value is not None:
            raise ConfigError(f"{flag}: only for a Hub dataset (or a local dataset folder); {field} {spec!r} is {kind}")


def load_rows_located(spec: str, field: str, split: str, what: str, run_file: str | None = None,
                      config: str | None = None, data_dir: str | None = None, dataset_folders: bool = True):
    """(rows, source label, line numbers or None). `run_file`: a folder holding that file is accepted (a run
    folder). Any other folder (none with run.json) is, with `dataset_folders`, a dataset folder that
    datasets.load_dataset reads like a Hub dataset; `config` and `data_dir` go to load_dataset."""
    path = Path(spec).expanduser()
    if run_file is not None and path.is_dir() and (
            (path / run_file).is_file() or (path / RUN_FILE).is_file() or not dataset_folders):
        if not (path / run_file).is_file():
            raise ConfigError(f"{field}: folder {spec!r} has no {run_file}")
        _hub_only(config, data_dir, field, spec, "a run folder")
        return _read_local(path / run_file, field)
    if path.suffix in LOCAL_FORMATS and not path.is_dir():
        _hub_only(config, data_dir, field, spec, "a local file")
        return _read_local(path, field)
    if path.is_dir() and dataset_folders and not (path / RUN_FILE).is_file():
        return _load_dataset(str(path), field, split, config, data_dir, f"dataset folder {spec!r}")
    if path.exists():
        raise _bad_suffix(spec, field, what)
    if _looks_local(spec):
        raise ConfigError(f"{field}: no such file {spec!r} (give {what})")
    return _load_dataset(spec, field, split, config, data_dir, f"Hub dataset {spec!r}")


def _load_dataset(spec: str, field: str, split: str, config: str | None, data_dir: str | None, label: str):
    """One split of a Hub dataset or dataset folder; a split it lacks is one error listing the ones it has."""
    import re

    import datasets

    options = "".join(f" {k} {v!r}" for k, v in (("config", config), ("data_dir", data_dir)) if v is not None)
    try:
        ds = datasets.load_dataset(spec, name=config, data_dir=data_dir, split=split)
    except Exception as e:
        try:  # why it failed: a split the dataset lacks gets its own error (what --split may be)
            names = datasets.get_dataset_split_names(spec, config_name=config, data_dir=data_dir)
        except Exception:
            names = None
        base = re.split(r"[\[+]", split, maxsplit=1)[0]  # "train[:100]" (datasets' slicing) is of split train
        if names and base not in names:
            raise ConfigError(f"--split: {label}{options} has no split {base!r}; its splits: "
                              f"{', '.join(names)}") from None
        raise ConfigError(f"{field}: cannot load {label}{options} split {split!r} "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return [dict(r) for r in ds], f"{label}{options} split {split!r}", None


# ------------------------------------------------------------------------------------------------ checks

def is_messages(x) -> bool:
    return isinstance(x, list) and bool(x) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)


def check_text(value, where: str, name: str):
    """A non-empty string, or a non-empty list of {"role", "content"} messages."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: field {name!r} is empty")
        return
    if not is_messages(value):
        raise ConfigError(f"{where}: field {name!r} must be a non-empty string or a list of "
                          f"{{'role', 'content'}} messages, got {type(value).__name__}")


def check_completion(value, where: str, name: str, conversational: bool = False):
    """A string (possibly empty), or in a conversational set a non-empty list of messages."""
    if conversational:
        if not is_messages(value):
            raise ConfigError(f"{where}: field {name!r} must be a non-empty list of {{'role', 'content'}} "
                              f"messages (the prompt is conversational), got {type(value).__name__}")
    elif not isinstance(value, str):
        raise ConfigError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")


def check_reward(value, where: str, name: str) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float))  # JSON true is not 1
    if not bad:
        try:  # a 400-digit JSON integer overflows float(); math.isfinite on it raises, not returns False
            bad = not math.isfinite(float(value))
        except OverflowError:
            bad = True
    if bad:
        shown = f"an integer of {len(str(abs(value)))} digits" if isinstance(value, int) and not isinstance(
            value, bool) and abs(value) > 10**30 else repr(value)
        raise ConfigError(f"{where}: field {name!r} must be a finite number (a float), got {shown}")
    return float(value)


def _require(row: dict, name: str, where: str):
    if row.get(name) is None:
        raise ConfigError(f"{where}: missing field {name!r}")
    return row[name]


def _row_id(row: dict, i: int, where: str, seen: set) -> str:
    rid = row.get("id")
    if rid is None:
        rid = i
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise ConfigError(f"{where}: field 'id' must be a string or an integer, got {type(rid).__name__}")
    rid = str(rid)
    if not rid.strip():
        raise ConfigError(f"{where}: field 'id' is empty")
    if rid in seen:
        raise ConfigError(f"{where}: duplicate id {rid!r}")
    seen.add(rid)
    return rid


def _check_kind(prompt, where: str, first: list) -> bool:
    """All prompts of a set plain text, or all conversational; returns whether this one is conversational."""
    conv = isinstance(prompt, list)
    if not first:
        first.append(conv)
    elif first[0] != conv:
        kinds = {True: "conversational", False: "plain text"}
        raise ConfigError(f"{where}: field 'prompt' is {kinds[conv]} but row 0's is {kinds[first[0]]}; "
                          f"a set must be all plain text or all conversational")
    return conv


def _check_list(value, where: str, name: str, n: int | None = None) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field {name!r} must be a list, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise ConfigError(f"{where}: field {name!r} has {len(value)} entries but 'responses' has {n}")
    return value


def _check_rewards(value, where: str, name: str, n: int | None) -> list[float]:
    return [check_reward(v, where, f"{name}[{j}]") for j, v in enumerate(_check_list(value, where, name, n))]


def _check_responses(value, where: str) -> list[str]:
    responses = _check_list(value, where, "responses")
    if not responses:
        raise ConfigError(f"{where}: field 'responses' is an empty list")
    for j, r in enumerate(responses):
        check_completion(r, where, f"responses[{j}]")
    return responses


# ------------------------------------------------------------------------------------------------ prompts

def _rows(rows: list[dict], source: str, field: str, lines):
    """(index, row, where-string) for each row; a set with no rows is an error."""
    if not rows:
        raise ConfigError(f"{field}: {source} has no rows")
    for i, row in enumerate(rows):
        yield i, row, _where(field, source, i, lines)


def _checked_prompt(row: dict, where: str, kind: list):
    """The row's prompt: present, non-empty text or messages, of the same kind as the rows before."""
    prompt = _require(row, "prompt", where)
    check_text(prompt, where, "prompt")
    _check_kind(prompt, where, kind)
    return prompt


def validate_prompts(rows: list[dict], source: str, field: str = "--prompts", lines: list[int] | None = None) -> list[dict]:
    """Give each row an id (its index if missing), check texts and id uniqueness."""
    seen, kind, out = set(), [], []
    for i, row, where in _rows(rows, source, field, lines):
        _checked_prompt(row, where, kind)
        out.append(dict(row, id=_row_id(row, i, where, seen)))
    return out


# --data-config / --data-dir of every entry point that reads a Hub dataset (datasets.load_dataset's name, data_dir)
DATA_CONFIG_HELP = "config (subset) name of a Hub dataset (datasets.load_dataset's name)"
DATA_DIR_HELP = "data_dir of a Hub dataset, e.g. helpful-base for Anthropic/hh-rlhf (datasets.load_dataset's data_dir)"

TOY_SPLITS = ("train", "heldout")  # the toy prompts' user-facing splits: training and held-out evaluation


def load_prompts(spec: str, field: str = "--prompts", split: str = "train", seed: int = 0,
                 config: str | None = None, data_dir: str | None = None) -> list[dict]:
    """"toy" / "toy:N" (N toy prompts of `split`, default 64), a local file, or a Hub dataset name (config,
    data_dir: its config name and data_dir)."""
    if spec == "toy" or spec.startswith("toy:"):
        from alignment.core.toy import ToyTask

        n = spec.split(":", 1)[1] if ":" in spec else "64"
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"{field}: 'toy:N' needs a count N >= 1, got {spec!r}")
        _hub_only(config, data_dir, field, spec, "the toy task")
        if split not in TOY_SPLITS:  # any other name would silently draw another, valid-looking prompt set
            raise ConfigError(f"--split: the toy task's prompt splits are {', '.join(TOY_SPLITS)}, not {split!r} "
                              f"(for {field} {spec!r})")
        return ToyTask(seed).prompts(int(n), split)
    rows, source, lines = load_rows_located(
        spec, field, split, "a .json, .jsonl or .parquet file, 'toy[:N]' or a Hub dataset name",
        config=config, data_dir=data_dir)
    return validate_prompts(rows, source, field, lines)


# ------------------------------------------------------------------------------------------------ generations

def validate_generations(rows: list[dict], source: str, field: str = "--generations",
                         lines: list[int] | None = None) -> list[dict]:
    """Rows {"id", "prompt", "responses", optional "components", "num_tokens", "rewards"}, checked."""
    seen, kind, out = set(), [], []
    for i, row, where in _rows(rows, source, field, lines):
        _checked_prompt(row, where, kind)
        responses = _check_responses(_require(row, "responses", where), where)
        n = len(responses)
        if row.get("components") is not None:
            for j, c in enumerate(_check_list(row["components"], where, "components", n)):
                if not isinstance(c, str) or not c:
                    raise ConfigError(f"{where}: field 'components[{j}]' must be a non-empty string, got {c!r}")
        if row.get("num_tokens") is not None:
            for j, t in enumerate(_check_list(row["num_tokens"], where, "num_tokens", n)):
                if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                    raise ConfigError(f"{where}: field 'num_tokens[{j}]' must be an integer >= 0, got {t!r}")
        if row.get("rewards") is not None:
            _check_rewards(row["rewards"], where, "rewards", n)
        out.append(dict(row, id=_row_id(row, i, where, seen)))
    return out


def load_generations(spec: str, field: str = "--generations") -> list[dict]:
    """A generate run folder (its generations.jsonl) or a local .jsonl / .json / .parquet file."""
    if not spec:
        raise ConfigError(f"{field}: give a generate run folder or a {GENERATIONS_FILE} file")
    path = Path(spec).expanduser()
    what = "a generate run folder or a .jsonl, .json or .parquet file"
    if not path.is_dir() and path.suffix not in LOCAL_FORMATS:
        if path.exists():
            raise _bad_suffix(spec, field, what)
        raise ConfigError(f"{field}: no such file or folder {spec!r} (give {what})")
    rows, source, lines = load_rows_located(spec, field, "train", what, run_file=GENERATIONS_FILE,
                                            dataset_folders=False)
    return validate_generations(rows, source, field, lines)


# ------------------------------------------------------------------------------------------------ preferences

def split_shared_prefix(chosen: list, rejected: list) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) of two whole conversations: the shared leading messages are the prompt."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    return chosen[:k], chosen[k:], rejected[k:]


HH_ASSISTANT = "\n\nAssistant:"


def split_hh_text(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen, rejected) of two Anthropic HH transcripts: the prompt is their shared leading text up to
    and including its last "\\n\\nAssistant:"; None when the shared text has none. Cutting the shared text (not
    chosen alone) keeps a response that itself contains "\\n\\nAssistant:" whole."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    i = chosen.rfind(HH_ASSISTANT, 0, k)
    if i < 0:
        return None
    cut = i + len(HH_ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _scores_as_rewards(row: dict, where: str) -> dict:
    """UltraFeedback's score_chosen / score_rejected as chosen_reward / rejected_reward, when the row has both
    scores and neither reward (module doc)."""
    scores = row.get("score_chosen"), row.get("score_rejected")
    if None in scores or row.get("chosen_reward") is not None or row.get("rejected_reward") is not None:
        return row  # both or neither: a lone score is no reward pair; the row's own rewards win
    return dict(row, chosen_reward=check_reward(scores[0], where, "score_chosen"),
                rejected_reward=check_reward(scores[1], where, "score_rejected"))


def identical_pairs(where: str, count: int) -> ConfigError:
    """The one error every stage gives for pairs whose chosen == rejected (where: the first such row)."""
    more = f" ({count} such pairs in all)" if count > 1 else ""
    return ConfigError(f"{where}: 'chosen' and 'rejected' are the same text; such a pair carries no preference{more}")


def validate_preferences(rows: list[dict], source: str, field: str = "--preferences",
                         lines: list[int] | None = None, allow_identical: bool = False) -> list[dict]:
    """TRL preference rows {"prompt", "chosen", "rejected"} plus optional rewards, checked (see module doc)."""
    seen, kind, out = set(), [], []
    for i, row, where in _rows(rows, source, field, lines):
        chosen, rejected = _require(row, "chosen", where), _require(row, "rejected", where)
        prompt = row.get("prompt")
        if is_messages(chosen) and is_messages(rejected) and (prompt is None or isinstance(prompt, str)):
            prompt, chosen, rejected = split_shared_prefix(chosen, rejected)  # implicit prompt (TRL's rule)
            if not prompt:
                raise ConfigError(f"{where}: missing field 'prompt' (and 'chosen' and 'rejected' share no leading "
                                  f"messages to take it from)")
            if not chosen or not rejected:
                raise ConfigError(f"{where}: field 'chosen' or 'rejected' has nothing after the shared prompt messages")
            row = dict(row, prompt=prompt, chosen=chosen, rejected=rejected)
        elif prompt is None and isinstance(chosen, str) and isinstance(rejected, str) and HH_ASSISTANT in chosen:
            parts = split_hh_text(chosen, rejected)  # an Anthropic HH transcript pair (module doc)
            if parts is None:
                raise ConfigError(f"{where}: missing field 'prompt' (and 'chosen' and 'rejected' share no leading text "
                                  f"through a '\\n\\nAssistant:' to take it from, as Anthropic HH rows do)")
            prompt, chosen, rejected = parts
            row = dict(row, prompt=prompt, chosen=chosen, rejected=rejected)
        elif prompt is None:
            raise ConfigError(f"{where}: missing field 'prompt'")
        check_text(prompt, where, "prompt")
        conv = _check_kind(prompt, where, kind)
        check_completion(chosen, where, "chosen", conv)
        check_completion(rejected, where, "rejected", conv)
        if chosen == rejected and not allow_identical:
            raise identical_pairs(where, sum(r.get("chosen") == r.get("rejected") for r in rows[i:]))
        row = _scores_as_rewards(row, where)
        for name in ("chosen_reward", "rejected_reward"):
            if row.get(name) is not None:
                check_reward(row[name], where, name)
        n = None
        if row.get("responses") is not None:
            n = len(_check_responses(row["responses"], where))
        if row.get("rewards") is not None:
            _check_rewards(row["rewards"], where, "rewards", n)
        out.append(dict(row, id=_row_id(row, i, where, seen)))
    return out


def load_preferences(spec: str, field: str = "--preferences", split: str = "train",
                     allow_identical: bool = False, config: str | None = None,
                     data_dir: str | None = None) -> list[dict]:
    """An annotate run folder (its preferences.jsonl), a local .json / .jsonl / .parquet file, or a Hub name
    (or dataset folder) read with `split`, config name `config` and `data_dir`. The rows are checked and
    normalised as the module doc says: an implicit prompt (whole conversations, Anthropic HH transcripts)
    is split off, and UltraFeedback's score_chosen / score_rejected become chosen_reward / rejected_reward."""
    if not spec:
        raise ConfigError(f"{field}: give an annotate run folder, a {PREFERENCES_FILE} file or a Hub dataset name")
    rows, source, lines = load_rows_located(
        spec, field, split, "an annotate run folder, a .json, .jsonl or .parquet file or a Hub dataset name",
        run_file=PREFERENCES_FILE, config=config, data_dir=data_dir)
    return validate_preferences(rows, source, field, lines, allow_identical)


# ------------------------------------------------------------------------------------------------ writing

def as_dataset(rows: list[dict]):
    """A `datasets.Dataset` of checked rows (what TRL's trainers take)."""
    import datasets

    return datasets.Dataset.from_list(rows)


def write_jsonl(path, rows) -> None:
    """All rows at once, atomically: a temporary file renamed into place."""
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))
