"""Issue 12 (helper A): each method as its authors define it. The bandit's AE-Borda widths (per-response widths
summed, as AE-Borda's code sums the two responses' dropout standard deviations), TRL's loss types through
--loss, and DPO training with the model's dropout on (AE / US)."""
import math

import pytest
import torch

from bandit.envs import LinearEnv, TabularEnv
from bandit.offline import CountWidth, DesignWidth, OfflineSim, make_dataset
from bandit.selectors import SelectorConfig, borda_widths, make_selector

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ------------------------------------------------------------------------------------ bandit AE-Borda widths

def test_borda_widths_are_response_widths_summed_tabular():
    """Counts: one context, A = 4; pairs (0, 1) twice and (0, 2) once trained on, so n(y) = 3, 2, 1, 0 and
    s(y) = 1 / sqrt(1 + n(y)) = 1/2, 1/sqrt 3, 1/sqrt 2, 1; w(y, y') = s(y) + s(y') (y = y' too)."""
    unc = CountWidth(1, 1, 4, "cpu")
    x = torch.zeros(1, 3, dtype=torch.long)
    unc.add(x, torch.tensor([[0, 1, 0]]), torch.tensor([[1, 0, 2]]), torch.ones(1, 3, dtype=torch.bool))
    s = [1 / 2, 1 / math.sqrt(3), 1 / math.sqrt(2), 1.0]
    w = borda_widths(unc, 1, 1, 4, "cpu")
    assert w.shape == (1, 1, 4, 4)
    for y in range(4):
        for y2 in range(4):
            assert w[0, 0, y, y2].item() == pytest.approx(s[y] + s[y2], abs=1e-15)


def test_borda_widths_are_response_widths_summed_linear():
    """Design matrix: s(x, y) = ||phi(x, y) - mean_y' phi(x, y')||_{V^-1}, written out with numpy-free loops."""
    env = LinearEnv.from_seeds([0], contexts=2, actions=3, dim=4, beta=1.0)
    unc = DesignWidth(env.features, lam=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, (1, 5), generator=g)
    unc.add(x, torch.randint(3, (1, 5), generator=g), torch.randint(3, (1, 5), generator=g),
            torch.ones(1, 5, dtype=torch.bool))
    phi, Vinv = env.features[0], torch.linalg.inv(unc.V[0])
    w = borda_widths(unc, 1, 2, 3, "cpu")
    for e in range(2):
        centred = phi[e] - phi[e].mean(0)
        s = [math.sqrt(float(c @ Vinv @ c)) for c in centred]
        for y in range(3):
            for y2 in range(3):
                assert w[0, e, y, y2].item() == pytest.approx(s[y] + s[y2], rel=1e-12)


def test_borda_selector_uses_the_summed_widths(monkeypatch):
    import bandit.selectors as sel_mod

    env = TabularEnv.from_seeds([0, 1], contexts=2, actions=5, beta=2.0)
    data = make_dataset(env, [0, 1], 50, tag="k")
    sim = OfflineSim(env, data, 3, 4, 0.1, torch.Generator().manual_seed(0))
    sel = make_selector("borda", SelectorConfig(ratio=0.5))
    sel.setup(sim)
    seen = {}
    real = sel_mod.borda_pick

    def spy(h, width, *a, **k):
        seen["width"] = width
        return real(h, width, *a, **k)

    monkeypatch.setattr(sel_mod, "borda_pick", spy)
    sel.batch(sim)
    s = sim.unc.response_width(torch.arange(2).repeat_interleave(5).expand(2, -1),
                               torch.arange(5).repeat(2).expand(2, -1)).reshape(2, 2, 5)
    torch.testing.assert_close(seen["width"], s[..., :, None] + s[..., None, :], rtol=0, atol=0)


# ------------------------------------------------------------------------------------ TRL's losses via --loss

PAIRS = [
    {"prompt": "write about winter in 1 sentences :", "chosen": " the calm ice rests .",
     "rejected": " the ugly star moves . the old moon shines .", "chosen_reward": 1.5, "rejected_reward": -0.5},
    {"prompt": "write about food in 2 sentences :", "chosen": " the good bread shines . the warm soup rests .",
     "rejected": " .", "chosen_reward": 0.25, "rejected_reward": 0.0},
]


def _one_step(tmp_path, policy, ref, **flags):
    """One optimizer step on PAIRS through train_dpo's Args -> dpo_config -> SamplerDPOTrainer; (step-0 loss,
    the trainer)."""
    from datasets import Dataset

    from alignment.core import toy
    from alignment.train_dpo import Args, dpo_config
    from alignment.training.data import training_rows
    from alignment.training.trainer import SamplerDPOTrainer

    args = Args(preferences="x", max_steps=1, batch_size=2, lr=0.1, warmup_ratio=0.0, device="cpu", **flags)
    config = dpo_config(args, torch.device("cpu"), tmp_path / "scratch")
    config.disable_tqdm = True
    trainer = SamplerDPOTrainer(model=policy, ref_model=ref, args=config, processing_class=toy.build_tokenizer(),
                                train_dataset=Dataset.from_list(training_rows(PAIRS, args.loss, args.margin_scale)))
    trainer.train()
    (loss,) = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return loss, trainer


@pytest.mark.parametrize("loss, beta, want", [
    ("ipo", 0.25, 1 / (4 * 0.25 ** 2)),  # (logits - 1 / (2 beta))^2 at logits = 0
    ("hinge", 0.25, 1.0),                # relu(1 - beta logits) at logits = 0
    ("sigmoid", 0.25, math.log(2)),      # -log sigmoid(0)
])
def test_trl_loss_trains_one_step_from_its_hand_value_at_pi_equal_ref(tmp_path, loss, beta, want):
    """pi = pi_ref (the same weights): every log-ratio is 0, so the step-0 loss is the loss's value at 0; the step
    then moves the weights, and the config carries TRL's loss_type of that name."""
    from tests.conftest import sharp_toy_model

    policy, ref = sharp_toy_model(seed=1, scale=2.0).float(), sharp_toy_model(seed=1, scale=2.0).float()
    init = {k: v.clone() for k, v in policy.state_dict().items()}
    got, trainer = _one_step(tmp_path, policy, ref, loss=loss, beta=beta)
    assert trainer.args.loss_type == [loss]
    assert got == pytest.approx(want, rel=1e-6)
    assert any(not torch.equal(v, init[k]) for k, v in trainer.model.state_dict().items())


def test_loss_names_are_trl_1_16s_loss_types():
    """Our list of TRL losses against the names in the installed TRL's own DPOConfig help text."""
    import dataclasses
    import re

    import trl
    from trl import DPOConfig

    from alignment.training.losses import TRAIN_LOSSES, TRL_LOSS_TYPES

    assert trl.__version__ == "1.16.0"
    help_ = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    assert set(TRL_LOSS_TYPES) == set(re.findall(r"`'([a-z_]+)'`", help_))
    assert set(TRAIN_LOSSES) == set(TRL_LOSS_TYPES) | {"rev_kl"}


def test_loss_errors_name_the_flag(tmp_path):
    from alignment.training.config import SamplerDPOConfig
    from runlog import ConfigError

    ok = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    for bad, flag, words in [
        ({"loss": "raft"}, "--loss", ["sigmoid", "rev_kl", "hinge", "ipo", "sigmoid_norm"]),  # one list of all
        ({"loss": "ipo", "selector": "ae"}, "--selector", ["sigmoid or rev_kl", "ipo"]),
        ({"loss": "exo_pair"}, "--loss", ["label_smoothing"]),
        ({"loss": "hinge", "loss_type": ["ipo"]}, "--loss", ["loss_type"]),
        ({"loss": "bco_pair", "f_divergence_type": "forward_kl"}, "--loss", ["f_divergence_type"]),
        ({"loss": "rev_kl", "loss_type": ["hinge"]}, "--loss", ["rev_kl"]),
    ]:
        with pytest.raises(ConfigError, match=flag) as e:
            SamplerDPOConfig(**ok, **bad)
        assert all(w in str(e.value) for w in words), str(e.value)
    assert SamplerDPOConfig(**ok, loss="exo_pair", label_smoothing=1e-3).loss_type == ["exo_pair"]
    assert SamplerDPOConfig(**ok, loss="rev_kl").loss_type == ["sigmoid"]  # rev_kl builds on TRL's sigmoid
    assert SamplerDPOConfig(**ok, loss="rev_kl", selector="us").selector == "us"


# ------------------------------------------------------------------------------- training with dropout on

def _gpt2(seed, p):
    """A tiny GPT-2 (nn.Dropout modules with probability p) for the toy vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignment.core import toy

    tok = toy.build_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2, resid_pdrop=p,
                     embd_pdrop=p, attn_pdrop=p, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg).float()


def _watch_dropout(model, seen, name):
    """Record, at every forward of each nn.Dropout of `model`, whether it changed its input."""
    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: seen.setdefault(name, []).append(
                    (mod.training, mod.p, not torch.equal(inp[0], out)))))
    return hooks


@pytest.mark.parametrize("disable", [False, True])
def test_no_disable_dropout_trains_with_the_policys_dropout_on_and_the_reference_without(tmp_path, disable):
    """--no-disable-dropout (AE / US's code: have_llm_dropout true): during the training step the policy's dropout
    modules are in train mode with p > 0 and change their inputs; the reference's never do. With the default
    (TRL's disable_dropout) neither model's dropout does anything."""
    policy, ref = _gpt2(0, 0.3), _gpt2(0, 0.3)
    seen = {}
    hooks = _watch_dropout(policy, seen, "policy") + _watch_dropout(ref, seen, "ref")
    try:
        _, trainer = _one_step(tmp_path, policy, ref, disable_dropout=disable)
    finally:
        for h in hooks:
            h.remove()
    assert trainer.args.disable_dropout is disable
    assert seen["policy"] and seen["ref"]
    if disable:
        assert not any(changed for _, _, changed in seen["policy"] + seen["ref"])
    else:
        assert all(training and p == 0.3 for training, p, _ in seen["policy"])
        assert any(changed for _, _, changed in seen["policy"])
        assert not any(changed for _, _, changed in seen["ref"])


def test_disable_dropout_flag_and_the_active_recipe(tmp_path):
    from pathlib import Path

    import yaml

    from alignment.train_dpo import OWN_FIELDS, Args, dpo_config
    from runlog.cli import parse_dataclass

    assert parse_dataclass(Args, ["--preferences", "x"]).disable_dropout is True  # TRL's default
    args = parse_dataclass(Args, ["--preferences", "x", "--no-disable-dropout"])
    assert args.disable_dropout is False
    assert dpo_config(args, torch.device("cpu"), tmp_path).disable_dropout is False
    assert "disable_dropout" in OWN_FIELDS  # set by the flag only, not a second way in dpo:
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "alignment/configs/active.yaml").read_text())
    assert recipe["train"]["disable_dropout"] is False  # the AE / US code trains with dropout on
