"""alignment/generation/decoding.py: fused sampling with one KV cache per model.

The strongest checks are against independent references: Hugging Face's own `model.generate(do_sample=True)`
(the same tokens under the same seed, since the same warpers and the same torch.multinomial calls consume
the random stream identically), and a naive decoder written here that reruns both models on the whole
prefix at every step, without any cache. Models are tiny Llamas from alignment.core.toy, with the embedding
(tied to the output layer) scaled up so their next-token distributions are far from uniform.
"""
import math

import pytest
import torch

from alignment.core import toy
from conftest import sharp_toy_model
from alignment.generation.decoding import (effective_sample_size, importance_weights, left_pad, position_ids_from_mask,
                                resample, sample)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TOK = toy.build_tokenizer()
PAD = TOK.pad_token_id


@pytest.fixture(scope="module")
def models():
    return sharp_toy_model(seed=1), sharp_toy_model(seed=2)


def prompts(lengths=(7, 3, 5, 1)):
    """Left-padded prompts of different lengths (real toy words after <bos>)."""
    words = toy.ToyTask(0).prompts(len(lengths))
    seqs = [TOK(w["prompt"])["input_ids"][:n] for w, n in zip(words, lengths)]
    return seqs, left_pad(seqs, PAD)


def frequent_token(model, input_ids, mask, steps=12):
    """A token the model emits often: used as EOS so that rows stop at different steps."""
    out = sample([model], [1.0], input_ids, mask, max_new_tokens=steps, eos_token_id=None, pad_token_id=PAD,
                 generator=torch.Generator(device=input_ids.device).manual_seed(0))
    return int(torch.mode(out.tokens.flatten().cpu()).values)


# ------------------------------------------------------------------------------------------------ helpers

def test_position_ids_and_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], PAD)
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


# ------------------------------------------------------------------------------------- against generate

@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
@pytest.mark.parametrize("fused", [True, False])
def test_weights_1_0_give_exactly_the_tokens_of_hf_generate(models, temperature, top_p, fused):
    pi, ref = models
    _, (ids, mask) = prompts()
    eos = frequent_token(pi, ids, mask)
    torch.manual_seed(123)
    hf = pi.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_p=top_p,
                     top_k=0, max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD)[:, ids.shape[1]:]
    ms, ws = ([pi, ref], [1.0, 0.0]) if fused else ([pi], [1.0])
    out = sample(ms, ws, ids, mask, max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD,
                 temperature=temperature, top_p=top_p, generator=torch.Generator().manual_seed(123))
    width = out.tokens.shape[1]
    assert torch.equal(out.tokens, hf[:, :width])
    assert (hf[:, width:] == PAD).all()  # generate may run a step further when the stop check is deferred
    # rows stopped at different steps (so EOS handling was exercised), and lengths count the EOS
    assert len(set(out.lengths.tolist())) > 1 and out.finished.any()
    for i in range(ids.shape[0]):
        row = out.row(i)
        assert (row[-1] == eos) == bool(out.finished[i]) and eos not in row[:-1]
        assert (out.tokens[i, len(row):] == PAD).all()


# --------------------------------------------------------------------------------- against a naive decoder

def naive_step_logits(models, weights, ids, mask, new_tokens):
    """Both models on the full prefix (prompt + tokens so far) at every step, no cache: the fused logits."""
    steps = []
    for t in range(new_tokens.shape[1]):
        full = torch.cat([ids, new_tokens[:, :t]], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(new_tokens[:, :t])], dim=1)
        pos = position_ids_from_mask(full_mask)
        fused = 0
        for m, w in zip(models, weights):
            with torch.no_grad():
                logits = m(input_ids=full, attention_mask=full_mask, position_ids=pos, use_cache=False).logits[:, -1]
            w = w[:, None] if isinstance(w, torch.Tensor) else w
            fused = fused + w * logits.float()
        steps.append(fused)
    return steps


@pytest.mark.parametrize("per_row", [False, True])
def test_fused_logits_equal_naive_full_prefix_recomputation(models, per_row):
    pi, ref = models
    _, (ids, mask) = prompts()
    a = 0.5
    if per_row:  # mix+ and mix- rows in one batch
        weights = torch.tensor([[1 + a, -a], [1 - a, a], [1 + a, -a], [2.0, -1.0]])
        naive_w = [weights[:, 0], weights[:, 1]]
    else:
        weights = naive_w = [1 + a, -a]
    eos = frequent_token(pi, ids, mask)
    out = sample([pi, ref], weights, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD,
                 generator=torch.Generator().manual_seed(0), return_step_logits=True)
    naive = naive_step_logits([pi, ref], naive_w, ids, mask, out.tokens)
    assert len(naive) == len(out.step_logits) == out.tokens.shape[1]
    for t, (got, want) in enumerate(zip(out.step_logits, naive)):
        live = out.lengths > t  # rows still generating at step t
        torch.testing.assert_close(got[live], want[live], rtol=0, atol=1e-5, msg=f"step {t}")


def test_fused_sampling_follows_the_fused_distribution(models):
    """Step 0 of (1+a) l_pi - a l_ref sampled many times: token frequencies match softmax of the fused logits."""
    pi, ref = models
    seqs, _ = prompts((7,))
    n = 4000
    ids, mask = left_pad(seqs * n, PAD)
    out = sample([pi, ref], [1.5, -0.5], ids, mask, max_new_tokens=1, eos_token_id=None, pad_token_id=PAD,
                 generator=torch.Generator().manual_seed(1), return_step_logits=True)
    p = torch.softmax(out.step_logits[0][0].double(), -1)
    freq = torch.bincount(out.tokens[:, 0], minlength=p.numel()).double() / n
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n)


# ---------------------------------------------------------------------------------------- left padding

def test_left_padded_batch_equals_one_prompt_at_a_time(models):
    pi, ref = models
    seqs, (ids, mask) = prompts((7, 2, 5, 1))
    eos = frequent_token(pi, ids, mask)
    kw = dict(max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD, temperature=0.0, return_step_logits=True)
    batch = sample([pi, ref], [1.5, -0.5], ids, mask, **kw)
    for i, s in enumerate(seqs):
        one = sample([pi, ref], [1.5, -0.5], *left_pad([s], PAD), **kw)
        assert one.row(0) == batch.row(i)
        for t in range(len(one.row(0))):
            torch.testing.assert_close(batch.step_logits[t][i], one.step_logits[t][0], rtol=0, atol=1e-5)


def test_extra_left_padding_changes_nothing(models):
    """The same prompts padded further to the left (a wider batch) give the same greedy tokens."""
    pi, ref = models
    seqs, (ids, mask) = prompts()
    wide_ids = torch.cat([torch.full((ids.shape[0], 4), PAD), ids], 1)
    wide_mask = torch.cat([torch.zeros((ids.shape[0], 4), dtype=torch.long), mask], 1)
    kw = dict(max_new_tokens=10, eos_token_id=None, pad_token_id=PAD, temperature=0.0)
    a = sample([pi, ref], [0.5, 0.5], ids, mask, **kw)
    b = sample([pi, ref], [0.5, 0.5], wide_ids, wide_mask, **kw)
    assert torch.equal(a.tokens, b.tokens)


# ------------------------------------------------------------------------------------- stopping, seeds

def test_ignore_eos_runs_the_full_length_and_seeds_reproduce(models):
    pi, ref = models
    _, (ids, mask) = prompts()
    eos = frequent_token(pi, ids, mask)
    kw = dict(max_new_tokens=15, eos_token_id=eos, pad_token_id=PAD)
    full = sample([pi], [1.0], ids, mask, ignore_eos=True, generator=torch.Generator().manual_seed(5), **kw)
    assert full.tokens.shape == (4, 15) and (full.lengths == 15).all() and not full.finished.any()
    again = sample([pi], [1.0], ids, mask, ignore_eos=True, generator=torch.Generator().manual_seed(5), **kw)
    other = sample([pi], [1.0], ids, mask, ignore_eos=True, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(full.tokens, again.tokens) and not torch.equal(full.tokens, other.tokens)
    # several EOS ids: a row stops at whichever comes first
    two = sample([pi], [1.0], ids, mask, generator=torch.Generator().manual_seed(5),
                 **{**kw, "eos_token_id": [eos, int(full.tokens[0, 0])]})
    assert two.lengths[0] == 1 and two.finished[0]


def test_sequence_logprobs_equal_a_teacher_forced_pass(models):
    pi, ref = models
    seqs, (ids, mask) = prompts()
    eos = frequent_token(pi, ids, mask)
    out = sample([pi, ref], [1.0, 0.0], ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD,
                 generator=torch.Generator().manual_seed(2), return_logprobs=True)
    for i, s in enumerate(seqs):
        y = out.row(i)
        x = torch.tensor([s + y])
        for m, model in enumerate((pi, ref)):
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
            want = sum(float(lp[len(s) - 1 + j, tok]) for j, tok in enumerate(y))
            assert out.logprobs[i, m].item() == pytest.approx(want, abs=1e-4)


# ------------------------------------------------------------------------------------ sequence-level Mix-P

def test_importance_weights_by_hand():
    # pi = (1/2, 1/4, 1/4), pi_ref = (1/4, 1/2, 1/4) on three candidates; a = 1/2:
    # (pi/pi_ref)^{1/2} = (sqrt 2, sqrt 1/2, 1) -> normalised (2, 1, sqrt 2) / (3 + sqrt 2)
    lp_pi = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]])
    lp_ref = torch.tensor([[math.log(0.25), math.log(0.5), math.log(0.25)]])
    plus, minus = importance_weights(lp_pi, lp_ref, 0.5)
    r2 = math.sqrt(2)
    assert plus[0].tolist() == pytest.approx([2 / (3 + r2), 1 / (3 + r2), r2 / (3 + r2)], abs=1e-7)
    assert minus[0].tolist() == pytest.approx([1 / (3 + r2), 2 / (3 + r2), r2 / (3 + r2)], abs=1e-7)
    # a = 1: ratios (2, 1/2, 1) -> (4/7, 1/7, 2/7) and (1/4, 1, 1/2) / (7/4) = (1/7, 4/7, 2/7)
    plus, minus = importance_weights(lp_pi, lp_ref, 1.0)
    assert plus[0].tolist() == pytest.approx([4 / 7, 1 / 7, 2 / 7], abs=1e-7)
    assert minus[0].tolist() == pytest.approx([1 / 7, 4 / 7, 2 / 7], abs=1e-7)
    # equal models: uniform weights, effective sample size M
    u, _ = importance_weights(lp_pi, lp_pi, 0.5)
    assert u[0].tolist() == pytest.approx([1 / 3] * 3) and effective_sample_size(u)[0] == pytest.approx(3)
    assert effective_sample_size(torch.tensor([[1.0, 0.0, 0.0]]))[0] == pytest.approx(1)


def test_resample_draws_distinct_candidates_in_proportion():
    w = torch.tensor([[0.6, 0.3, 0.1]] * 20000, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    first = resample(w, 1, generator=g)[:, 0]
    freq = torch.bincount(first, minlength=3).double() / len(first)
    assert freq.tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.015)
    two = resample(w[:200], 2, generator=g)
    assert (two[:, 0] != two[:, 1]).all()
    # without replacement: the second draw is from the rest, renormalised; P(second = 1 | first = 0) = 0.75
    pairs = resample(w, 2, generator=g)
    sel = pairs[:, 0] == 0
    assert (pairs[sel, 1] == 1).double().mean().item() == pytest.approx(0.75, abs=0.02)
    with pytest.raises(ValueError):
        resample(w[:1], 4)


# ------------------------------------------------------------------------------------------------ CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_generate_and_the_naive_decoder():
    pi, ref = sharp_toy_model(seed=1).cuda(), sharp_toy_model(seed=2).cuda()
    _, (ids, mask) = prompts()
    ids, mask = ids.cuda(), mask.cuda()
    eos = frequent_token(pi, ids, mask)
    torch.manual_seed(7)
    hf = pi.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.9, top_k=0,
                     max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD)[:, ids.shape[1]:]
    out = sample([pi, ref], [1.0, 0.0], ids, mask, max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD,
                 temperature=0.8, top_p=0.9, generator=torch.Generator(device="cuda").manual_seed(7))
    assert torch.equal(out.tokens, hf[:, :out.tokens.shape[1]])
    out = sample([pi, ref], [1.5, -0.5], ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD,
                 generator=torch.Generator(device="cuda").manual_seed(0), return_step_logits=True)
    naive = naive_step_logits([pi, ref], [1.5, -0.5], ids, mask, out.tokens)
    for t, (got, want) in enumerate(zip(out.step_logits, naive)):
        live = out.lengths > t
        torch.testing.assert_close(got[live], want[live], rtol=0, atol=1e-4, msg=f"step {t}")
