"""The shared sampler interface end to end: on a one-token language model, alignment's generation (its plan built
from the sampler's spec, realised by fused decoding) draws pairs with the bandit's exact weight for that spec.

The actions of the bandit are the vocabulary's tokens, pi and pi_ref the two models' next-token distributions
after one prompt; the bandit computes spec_weights exactly, alignment samples 4000 pairs of one-token responses
through HFBackend, and a chi-square test compares the counts over unordered pairs with the exact weight. A wrong
weight (another sampler's) must be rejected by the same test on the same draws: the test has power."""
import pytest
import torch
from scipy import stats

from alignment.core import toy
from alignment.generate import Args, resolve
from alignment.generation.backend import HFBackend, encode_prompts
from alignment.generation.samplers import component_tilts, sampler_spec
from bandit.samplers import PairState, spec_weights
from conftest import sharp_toy_model

PAIRS = 4000
CASES = [("offline", 0.5, 1.0, "on_policy"), ("on_policy", 0.5, 1.0, "gshf"), ("gshf", 0.5, 1.0, "on_policy"),
         ("mix_p", 0.5, 1.0, "gshf"), ("mix_p", 1.0, 0.7, "on_policy")]


@pytest.fixture(scope="module")
def setup():
    tok = toy.build_tokenizer()
    pi, ref = sharp_toy_model(seed=0), sharp_toy_model(seed=1)  # peaked next-token laws: power with few pairs
    rows = toy.ToyTask(0).prompts(1)
    ids = encode_prompts(tok, rows)
    with torch.no_grad():
        x = torch.tensor(ids)
        log_pi = torch.log_softmax(pi(x).logits[0, -1].double(), -1)
        log_ref = torch.log_softmax(ref(x).logits[0, -1].double(), -1)
    return tok, pi, ref, ids, PairState(log_pi, log_ref, torch.zeros_like(log_pi), torch.zeros_like(log_pi))


def exact(name, alpha, temperature, state):
    w = spec_weights(sampler_spec(name, alpha).at_temperature(temperature), state)
    return w / w.sum()


def unordered(w):
    """Probabilities [V, V] over ordered pairs -> over unordered ones, the upper triangle with the diagonal."""
    return torch.triu(w + w.T, 1) + torch.diag(torch.diagonal(w))


def chi_square_p(counts, probs):
    """p-value of the counts (unordered pairs) against the probabilities, cells with < 5 expected pooled."""
    counts, expected = counts.flatten().double(), probs.flatten() * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    assert (obs[~keep] == 0).all()  # a pair of probability 0 was never drawn
    return stats.chisquare(obs[keep].numpy(), exp[keep].numpy() * obs[keep].sum().item() / exp[keep].sum().item()).pvalue


@pytest.mark.parametrize("name,alpha,temperature,wrong", CASES)
def test_one_token_pair_frequencies_match_the_bandit_weight(setup, name, alpha, temperature, wrong):
    tok, pi, ref, ids, state = setup
    args = Args(policy="toy:tiny", ref="toy:small", sampler=name, alpha=alpha, temperature=temperature,
                max_new_tokens=1, num_responses=2)
    resolve(args)
    backend = HFBackend({"policy": pi, "ref": ref}, tok, args, torch.device("cpu"))
    branch = sampler_spec(name, alpha).branches[0]
    first, second = branch.first, branch.second
    assert {first, second} <= set(component_tilts(name, alpha).values())  # the generation plan draws these tilts
    if first == second:  # both responses from one tilt: consecutive draws make the pairs
        toks = backend.draw(ids, first, 2 * PAIRS, seed=11).tokens[0]
        y, y2 = toks[0::2], toks[1::2]
    else:
        y, y2 = backend.draw(ids, first, PAIRS, seed=11).tokens[0], backend.draw(ids, second, PAIRS, seed=12).tokens[0]
    assert all(len(t) == 1 for t in y + y2)  # one-token responses (EOS counts as a token of the vocabulary)
    V = state.log_pi.shape[-1]
    counts = torch.zeros(V, V, dtype=torch.long)
    for (a,), (b,) in zip(y, y2):
        counts[min(a, b), max(a, b)] += 1
    w = exact(name, alpha, temperature, state)
    assert chi_square_p(counts, unordered(w)) > 1e-3
    assert chi_square_p(counts, unordered(exact(wrong, alpha, temperature, state))) < 1e-6
