"""AE-Borda prompt selection (Mehta et al., "Sample Efficient Preference Alignment in LLMs via Active Exploration"):
the online sampler `borda` of alignment.generate.

For each candidate prompt x, n responses y_1..y_n are sampled from pi and n responses y'_1..y'_n from pi_ref.
The implicit reward h(y) = beta * (log pi(y|x) - log pi_ref(y|x)) is evaluated under `passes` Monte Carlo
dropout draws of pi (alignment.selection.scores.dropout_logps: the model's own dropout plus dropout on the final
hidden state; pi_ref without dropout). Each response gets the mean m(y) and the standard deviation s(y) of its h
over the passes (n - 1 in the denominator, as torch.var), and the generalised Borda score of y_i (its probability
of beating a reference response) gets the bounds, optimistic on y_i and pessimistic on y'_j, averaged over j:
    U(y_i) = mean_j sigmoid(m(y_i) - m(y'_j) + gamma (s(y_i) + s(y'_j)))
    L(y_i) = mean_j sigmoid(m(y_i) - m(y'_j) - gamma (s(y_i) + s(y'_j)))
This is AE-Borda's code (belakaria/active-llm-alignment, data_selection.py, select_borda_elements): its
ucb_logits = beta ((log pi_ref(a) - UCB log pi(a)) + (LCB log pi(a') - log pi_ref(a'))) with UCB/LCB = mean +-
active_beta * std of log pi over the dropout passes, and U = mean over a' of 1 / (1 + exp(ucb_logits)). Its
beta * active_beta * std(log pi) is gamma * s here, because beta is already inside h and pi_ref is fixed. (Its
pi_ref log-probs also run with the reference's own dropout on and are averaged over passes; here pi_ref has no
dropout.) An earlier version here used the standard deviation of the per-pass difference h(y_i) - h(y'_j)
instead of s(y_i) + s(y'_j); no paper or code defines that form, so it is gone. The bandit package's `borda`
uses this formula with per-response widths (counts or the design matrix) in place of s. A prompt's value is its
best policy response's, and how much there is to learn at x is the width of that value's interval: gap(x) = max_i U(y_i) - max_i L(y_i) >= 0. The prompts with the largest gap are kept (a fraction
`keep` of the candidates, alignment.selection.scores.keep_count); each kept prompt's pair is its best optimistic
policy response argmax_i U(y_i) and one reference response drawn at random (seeded per prompt). The pair is
then labelled by alignment.annotate like any other.
"""
from __future__ import annotations

import random

import torch


def borda_bounds(h_policy: torch.Tensor, h_ref: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, L), each [P, n], from implicit rewards per dropout pass: h_policy [passes, P, n] of the policy's
    responses and h_ref [passes, P, m] of the reference's (module doc: each response's mean +- gamma times its own
    standard deviation over the passes, summed over the two responses of a comparison). Needs passes >= 2."""
    if h_policy.shape[0] < 2:
        raise ValueError(f"a spread over dropout passes needs passes >= 2, got {h_policy.shape[0]}")
    m_pi, s_pi = h_policy.mean(0), h_policy.std(0, correction=1)  # [P, n]
    m_ref, s_ref = h_ref.mean(0), h_ref.std(0, correction=1)  # [P, m]
    mu = m_pi[..., :, None] - m_ref[..., None, :]  # [P, n, m]
    width = gamma * (s_pi[..., :, None] + s_ref[..., None, :])
    return torch.sigmoid(mu + width).mean(-1), torch.sigmoid(mu - width).mean(-1)


def prompt_gaps(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """[P]: max_i U(y_i) - max_i L(y_i), the width of the interval on the prompt's best Borda score."""
    return upper.max(-1).values - lower.max(-1).values


@torch.no_grad()
def score_batch(policy, ref, prompt_ids: list[list[int]], policy_tokens: list[list[list[int]]],
                ref_tokens: list[list[list[int]]], pad_token_id: int, beta: float, gamma: float, passes: int,
                dropout: float, seed: int) -> tuple[list[list[float]], list[list[float]]]:
    """(U, L) as lists per prompt, for one batch of prompts with n policy and n reference responses each."""
    from alignment.selection.scores import dropout_logps, pad_sequences, sequence_logps

    n = len(policy_tokens[0])
    if any(len(t) != n for t in policy_tokens + ref_tokens):
        raise ValueError("borda needs the same number of policy and reference responses for every prompt")
    seqs = [(p, t) for p, ts in zip(prompt_ids, policy_tokens) for t in ts]
    seqs += [(p, t) for p, ts in zip(prompt_ids, ref_tokens) for t in ts]
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in pad_sequences(seqs, pad_token_id).items()}
    gen = torch.Generator().manual_seed(seed)
    logp_pi = dropout_logps(policy, batch, passes=passes, p=dropout, generator=gen).double().cpu()  # [passes, 2Pn]
    logp_ref = sequence_logps(ref, batch).double().cpu()  # [2Pn]
    h = beta * (logp_pi - logp_ref)
    half = h.shape[1] // 2
    shape = (passes, len(prompt_ids), n)
    upper, lower = borda_bounds(h[:, :half].reshape(shape), h[:, half:].reshape(shape), gamma)
    return upper.tolist(), lower.tolist()


def select_rows(rows: list[dict], keep: float, seed: int) -> list[dict]:
    """The kept prompts' rows (in their original order), each reduced to its pair: the best optimistic policy
    response and a random reference response. Rows carry borda_upper / borda_lower per policy response."""
    from alignment.selection.scores import keep_count, select_top

    if not rows:
        return []
    upper = [torch.tensor(r["borda_upper"], dtype=torch.float64) for r in rows]
    lower = [torch.tensor(r["borda_lower"], dtype=torch.float64) for r in rows]
    gaps = torch.stack([u.max() - l.max() for u, l in zip(upper, lower)])
    kept = sorted(select_top(gaps, keep_count(len(rows), keep)).tolist())
    out = []
    for i in kept:
        row = rows[i]
        pol = [j for j, c in enumerate(row["components"]) if c == "policy"]
        refs = [j for j, c in enumerate(row["components"]) if c == "ref"]
        best = pol[int(upper[i].argmax())]
        other = random.Random(f"{seed}/{row['id']}/borda").choice(refs)
        pick = [best, other]
        out.append({"id": row["id"], "prompt": row["prompt"], "responses": [row["responses"][j] for j in pick],
                    "components": ["policy", "ref"], "num_tokens": [row["num_tokens"][j] for j in pick],
                    "borda_gap": float(gaps[i]), "borda_candidates": len(pol)})
    return out
