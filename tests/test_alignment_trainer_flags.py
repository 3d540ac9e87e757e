"""What TRL users expect of the three trainer stages (sft, reward_model, train_dpo): --gradient-checkpointing turns
transformers' gradient checkpointing on and leaves the training itself unchanged, --report-to takes a list of
trackers (checked by name and installation) with --run-name, and every saved model folder has a model card naming
its base model, data and settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PAIRS = [{"prompt": f"write about {t} in {n} sentences :", "chosen": " the calm ice rests .",
          "rejected": " the ugly star moves . the old moon shines ."} for t in ("winter", "food", "sea") for n in (1, 2)]


def _prefs(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return path


def _dpo(tmp_path, name, *extra):
    from alignment.train_dpo import main

    return main(["--preferences", str(_prefs(tmp_path)), "--policy", "toy:tiny", "--max-steps", "2", "--batch-size",
                 "3", "--lr", "0.01", "--device", "cpu", "--out", str(tmp_path / "out"), "--name", name, *extra])


def _sft(tmp_path, *extra):
    from alignment.sft import main

    return main(["--model", "toy:tiny", "--num-train", "12", "--num-heldout", "4", "--max-steps", "2", "--batch-size",
                 "4", "--eval-every", "0", "--num-samples", "0", "--out", str(tmp_path / "sft"), *extra])


def _rm(tmp_path, *extra):
    from alignment.reward_model import main

    return main(["--model", "toy:tiny", "--num-pairs", "12", "--num-heldout", "4", "--max-steps", "2", "--batch-size",
                 "4", "--eval-every", "0", "--out", str(tmp_path / "rm"), *extra])


@pytest.fixture
def checkpointing_calls(monkeypatch):
    """Records each model the Trainer turns gradient checkpointing on for (transformers' own switch)."""
    from transformers import PreTrainedModel

    calls, enable = [], PreTrainedModel.gradient_checkpointing_enable

    def recording(self, *a, **k):
        calls.append(type(self).__name__)
        return enable(self, *a, **k)

    monkeypatch.setattr(PreTrainedModel, "gradient_checkpointing_enable", recording)
    return calls


def test_gradient_checkpointing_is_on_with_the_flag_only(tmp_path, checkpointing_calls):
    _sft(tmp_path)
    _rm(tmp_path)
    plain = _dpo(tmp_path, "plain")
    assert checkpointing_calls == []  # off by default (TRL's own default would be on)
    _sft(tmp_path, "--gradient-checkpointing", "--name", "gc")
    assert checkpointing_calls == ["LlamaForCausalLM"]
    _rm(tmp_path, "--gradient-checkpointing", "--name", "gc")
    assert checkpointing_calls[1:] == ["LlamaForSequenceClassification"]
    gc = _dpo(tmp_path, "gc", "--gradient-checkpointing")
    assert len(checkpointing_calls) > 2 and set(checkpointing_calls[2:]) == {"LlamaForCausalLM"}  # TRL and the Trainer
    # recomputing the activations in the backward pass is the same arithmetic: the same weights after training
    from alignment.core.models import load_causal_lm

    a, b = load_causal_lm(str(plain / "model")).state_dict(), load_causal_lm(str(gc / "model")).state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7)


def test_report_to_takes_a_list_of_known_installed_trackers(tmp_path, monkeypatch, capsys):
    import importlib.util

    from alignment.training import common

    for spec, message in (("wandb,nonsense", "unknown tracker 'nonsense'"), ("wandb,wandb", "twice")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # every tracker "installed"
        with pytest.raises(SystemExit) as e:
            _dpo(tmp_path, "bad", "--report-to", spec)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert common.reporters("wandb, tensorboard") == ["wandb", "tensorboard"]
    assert common.reporters("none") == []

    class Flags:  # the fields trainer_kwargs reads, as the three stages' Args carry them
        lr, batch_size, epochs, max_steps, seed, max_length, trust_remote_code = 1e-3, 2, 1.0, None, 0, 64, False
        gradient_checkpointing, report_to, run_name, name = False, "wandb,tensorboard", None, "dpo"

    kw = common.trainer_kwargs(Flags, torch.device("cpu"), tmp_path)
    assert kw["report_to"] == ["wandb", "tensorboard"] and kw["run_name"] == "dpo"  # --run-name defaults to --name
    Flags.run_name = "mix_p-seed0"
    assert common.trainer_kwargs(Flags, torch.device("cpu"), tmp_path)["run_name"] == "mix_p-seed0"
    monkeypatch.undo()
    with pytest.raises(SystemExit) as e:  # a real tracker that this machine lacks (the tests install none)
        _sft(tmp_path, "--report-to", "trackio", "--name", "bad")
    assert e.value.code == 2 and "trackio is not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _rm(tmp_path, "--run-name", " ", "--name", "bad")
    assert e.value.code == 2 and "--run-name" in capsys.readouterr().err
    assert not (tmp_path / "sft" / "bad").exists() and not (tmp_path / "rm" / "bad").exists()


def test_every_saved_model_has_a_model_card(tmp_path):
    from huggingface_hub import ModelCard

    cards = {"sft": _sft(tmp_path), "reward_model": _rm(tmp_path),
             "train_dpo": _dpo(tmp_path, "dpo", "--loss", "hinge", "--beta", "0.2")}
    for stage, run in cards.items():
        card = ModelCard.load(str(run / "model" / "README.md"))
        assert stage in card.data.tags and card.data.library_name == "transformers"
        assert "base model: `toy:tiny`" in card.text
        assert card.data.base_model is None  # a toy model is not a Hub id: no false metadata
    text = ModelCard.load(str(cards["train_dpo"] / "model" / "README.md")).text
    assert "| loss | hinge |" in text and "| beta | 0.2 |" in text and f"data: `{_prefs(tmp_path)}`" in text


def test_pair_provenance_follows_the_run_folders(tmp_path):
    """select -> annotate -> generate: the card of a model trained on a pipeline's pairs names their sampler."""
    from alignment.training.common import pair_provenance, _hub_id

    def run(name, config):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"config": config}))
        return str(tmp_path / name)

    gen = run("generate", {"sampler": "mix_p", "policy": "toy:tiny"})
    ann = run("annotate", {"rule": "max_min", "generations": gen, "reward": "toy-oracle"})
    sel = run("select", {"method": "reward_gap", "data": ann})
    assert pair_provenance(sel) == {"selection": "reward_gap", "rule": "max_min", "reward": "toy-oracle",
                                    "sampler": "mix_p"}
    assert pair_provenance(_prefs(tmp_path)) == {}
    assert _hub_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B" and _hub_id("toy:tiny") is None
    assert _hub_id(str(tmp_path)) is None


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "alignment" /
                                                             "configs").glob("*.yaml") if not p.name.startswith("zero")))
def test_every_recipes_train_section_passes_train_dpos_checks(recipe):
    """A recipe may not set a field train_dpo owns through its dpo: mapping (gradient_checkpointing is a flag now)."""
    import yaml

    from alignment.pipeline.dryrun import parse_command
    from alignment.train_dpo import resolve

    path = Path(__file__).resolve().parents[1] / "alignment" / "configs" / recipe
    if "train" not in yaml.safe_load(path.read_text()):
        pytest.skip(f"{recipe} has no train: section")
    _, args = parse_command("alignment.train_dpo", ["--config", str(path), "--preferences", "pairs.jsonl"])
    resolve(args)
