"""Invariants of alignment.training (in the spirit of TRL's tests/invariant): configurations that must train
identically do, and the pure loss functions equal hand computations.

    selector random_subset / sams / us / ae with --select-ratio 1   ==  selector all (every pair kept)
    rev_kl with a margin scale so large that q = 1                  ==  sigmoid (with and without a selector)
    losses.sigmoid_loss / rev_kl_loss / masked_mean / soft_target   ==  the formulas, computed by hand in float64

Tiny toy models built in-process, a few optimizer steps of plain SGD (so that the weights compare the gradients
themselves; AdamW would turn rounding noise on ~0 gradients into visible steps).
"""
import dataclasses
import math

import pytest
import torch

from alignment.core import toy
from alignment.train_dpo import Args, dpo_config
from alignment.training import losses
from alignment.training.config import SAMPLER_FIELDS, SamplerDPOConfig
from alignment.training.data import training_rows
from alignment.training.trainer import SamplerDPOTrainer
from runlog import ConfigError
from tests.conftest import sharp_toy_model

# eight pairs (two batches of 4), different lengths, chosen_reward > rejected_reward in every row
PAIRS = [
    {"prompt": f"write about {topic} in {n} sentences :", "chosen": chosen, "rejected": rejected,
     "chosen_reward": 1.0 + 0.25 * i, "rejected_reward": -0.5 * (i % 3)}
    for i, (topic, n, chosen, rejected) in enumerate([
        ("winter", 1, " the calm ice rests .", " the ugly star moves . the old moon shines ."),
        ("food", 2, " the good bread shines . the warm soup rests .", " ."),
        ("ocean", 1, " the kind wave sings .", " the cold tide waits . the dull shell grows ."),
        ("city", 3, " the bright tower rests . the calm street sings . the warm bridge grows .", " the market ."),
        ("forest", 1, " the gentle oak waits .", " the harsh owl ."),
        ("space", 2, " the lovely star shines . the calm moon rests .", " the cruel comet moves ."),
        ("music", 1, " the warm song sings .", " song song ."),
        ("garden", 2, " the kind rose grows . the calm seed waits .", " the bitter soil . ."),
    ])
]


# ------------------------------------------------------------------------------------------- pure losses

def _logps():
    g = torch.Generator().manual_seed(0)
    return [-(torch.rand(6, generator=g, dtype=torch.float64) * 20) for _ in range(4)]


def _hand_margin(c, r, c_ref, r_ref, beta):
    return beta * ((c - c_ref) - (r - r_ref))


def test_sigmoid_and_rev_kl_losses_equal_the_formulas():
    c, r, c_ref, r_ref = (x.tolist() for x in _logps())
    beta, q = 0.3, [0.0, 0.2, 0.5, 0.7, 0.99, 1.0]
    sig, d = losses.sigmoid_loss(*(torch.tensor(x, dtype=torch.float64) for x in (c, r, c_ref, r_ref)), beta)
    soft, d2 = losses.rev_kl_loss(*(torch.tensor(x, dtype=torch.float64) for x in (c, r, c_ref, r_ref)), beta,
                                  torch.tensor(q, dtype=torch.float64))
    for i in range(6):
        margin = _hand_margin(c[i], r[i], c_ref[i], r_ref[i], beta)
        s = lambda x: 1 / (1 + math.exp(-x))
        assert d[i].item() == pytest.approx(margin, rel=1e-12) and d2[i].item() == pytest.approx(margin, rel=1e-12)
        assert sig[i].item() == pytest.approx(-math.log(s(margin)), rel=1e-12)
        # the cross-entropy form, not the identity the code uses
        assert soft[i].item() == pytest.approx(-q[i] * math.log(s(margin)) - (1 - q[i]) * math.log(s(-margin)),
                                               rel=1e-10, abs=1e-12)


def test_rev_kl_gradient_is_sigmoid_minus_q_and_q_one_is_sigmoid_exactly():
    c, r, c_ref, r_ref = _logps()
    c = c.clone().requires_grad_(True)
    q = torch.tensor([0.1, 0.3, 0.5, 0.8, 0.9, 1.0])
    soft, d = losses.rev_kl_loss(c, r, c_ref, r_ref, 0.5, q)
    (grad,) = torch.autograd.grad(soft.sum(), [c])
    # d loss / dD = sigmoid(D) - q, and dD / dc = beta
    torch.testing.assert_close(grad, 0.5 * (torch.sigmoid(d.detach()) - q.double()), rtol=1e-10, atol=1e-12)
    one, _ = losses.rev_kl_loss(c, r, c_ref, r_ref, 0.5, torch.ones(6))
    sig, _ = losses.sigmoid_loss(c, r, c_ref, r_ref, 0.5)
    assert torch.equal(one, sig)


def test_preference_loss_picks_by_name_and_masked_mean_is_the_selected_mean():
    logps, q = _logps(), torch.full((6,), 0.25)
    for name, fn in [("sigmoid", losses.sigmoid_loss), ("rev_kl", losses.rev_kl_loss)]:
        got, want = losses.preference_loss(name, *logps, 0.2, q), fn(*logps, 0.2, q)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not torch.equal(losses.preference_loss("sigmoid", *logps, 0.2, q)[0],
                           losses.preference_loss("rev_kl", *logps, 0.2, q)[0])
    with pytest.raises(ValueError, match="unknown loss"):
        losses.preference_loss("ipo", *logps, 0.2)
    with pytest.raises(ValueError, match="target"):
        losses.rev_kl_loss(*logps, 0.2)
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    mask = torch.tensor([0, 1, 0, 1, 1, 0])
    assert losses.masked_mean(values, mask, 3).item() == pytest.approx((2 + 4 + 5) / 3)
    # two processes, each with its share of the K = 3 global picks: DDP's average of the two is the global mean
    assert losses.masked_mean(values, mask, 3, processes=2).item() == pytest.approx(2 * (2 + 4 + 5) / 3)
    assert losses.soft_target(1.0, 0.5, 2.0) == pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-15)
    assert losses.soft_target(100.0, 0.0, 1e4) == 1.0


# ------------------------------------------------------------------------------------------- the config

def test_config_defaults_are_the_stage_defaults_and_errors_name_the_flag(tmp_path):
    args_defaults = {f.name: f.default for f in dataclasses.fields(Args)}
    config_defaults = {f.name: f.default for f in dataclasses.fields(SamplerDPOConfig)}
    assert {k: config_defaults[k] for k in SAMPLER_FIELDS} == {k: args_defaults[k] for k in SAMPLER_FIELDS}
    ok = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert SamplerDPOConfig(**ok, selector="none").selector == "all"  # the canonical name
    for bad, flag in [({"select_ratio": 0.0}, "--select-ratio"), ({"loss": "raft"}, "--loss"),
                      ({"loss": "ipo", "selector": "us"}, "--selector"),
                      ({"sams_pretrain_steps": 2}, "--sams-pretrain-steps"), ({"dropout": 1.0}, "--dropout"),
                      ({"loss": "rev_kl", "use_weighting": True}, "--loss"),
                      ({"selector": "sams", "ld_alpha": 0.5}, "--selector")]:
        with pytest.raises(ConfigError, match=flag):
            SamplerDPOConfig(**ok, **bad)


# ------------------------------------------------------------------------------------------- training

INIT = {}


def _init(seed):
    if seed not in INIT:
        INIT[seed] = sharp_toy_model(seed=seed, scale=2.0).float().state_dict()
    model = toy.build_model(toy.build_tokenizer(), "tiny", seed=seed).float()
    model.load_state_dict(INIT[seed])
    return model


def _train(tmp_path, name, rows=PAIRS, **flags):
    """3 SGD steps of 4 pairs from the same policy and reference inits; (per-step losses, final weights)."""
    from datasets import Dataset

    args = Args(preferences="x", beta=0.5, lr=0.5, warmup_ratio=0.0, max_steps=3, batch_size=4, device="cpu",
                dpo={"optim": "sgd"}, **flags)
    config = dpo_config(args, torch.device("cpu"), tmp_path / name)
    config.disable_tqdm = True
    trainer = SamplerDPOTrainer(model=_init(1), ref_model=_init(2), args=config, processing_class=toy.build_tokenizer(),
                                train_dataset=Dataset.from_list(training_rows(rows, args.loss, args.margin_scale)))
    trainer.train()
    hist = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(hist) == 3
    return hist, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _same(a, b, exact=True):
    (loss_a, w_a), (loss_b, w_b) = a, b
    if exact:
        assert loss_a == loss_b
        assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    else:
        assert loss_a == pytest.approx(loss_b, rel=1e-6)
        for k in w_a:
            torch.testing.assert_close(w_a[k], w_b[k], rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    run = _train(tmp_path_factory.mktemp("plain"), "all")
    init = _init(1).state_dict()
    assert any(not torch.equal(run[1][k], init[k]) for k in init)  # it did train
    return run


@pytest.mark.parametrize("selector, extra", [("random_subset", {}), ("sams", {}), ("sams", {"sams_mode": "softmax"}),
                                             ("us", {"passes": 2}), ("ae", {"passes": 2})])
def test_every_selector_with_ratio_one_trains_like_selector_all(tmp_path, plain, selector, extra):
    """K = n: every candidate is kept, and the masked mean sum(l) x 1/4 is TRL's mean of the 4 losses (1/4 is exact
    in binary, so the numbers agree bit for bit); us / ae score with their own seeded dropout generators, leaving
    training's RNG alone, and slice the whole batch back in its order."""
    _same(_train(tmp_path, selector, selector=selector, select_ratio=1.0, **extra), plain)


def test_selector_with_ratio_below_one_does_not_train_like_all(tmp_path, plain):
    """The control of the test above: keeping half the pairs changes the training."""
    losses_half, weights = _train(tmp_path, "half", selector="random_subset", select_ratio=0.5)
    assert any(not torch.equal(weights[k], plain[1][k]) for k in weights)


@pytest.mark.parametrize("flags", [{}, {"selector": "random_subset", "select_ratio": 0.5}])
def test_rev_kl_with_q_one_trains_like_sigmoid(tmp_path, flags):
    """margin scale 1e4 with every reward gap >= 1: q = sigmoid(1e4 gap) = 1 exactly, the soft-label term (1 - q) D
    vanishes, and rev_kl is the sigmoid loss, bit for bit; a margin scale of 1 (q < 1) trains differently."""
    assert all(losses.soft_target(r["chosen_reward"], r["rejected_reward"], 1e4) == 1.0 for r in PAIRS)
    sigmoid = _train(tmp_path, "sigmoid", loss="sigmoid", **flags)
    _same(_train(tmp_path, "sure", loss="rev_kl", margin_scale=1e4, **flags), sigmoid)
    _, soft = _train(tmp_path, "soft", loss="rev_kl", margin_scale=1.0, **flags)
    assert any(not torch.equal(soft[k], sigmoid[1][k]) for k in soft)
