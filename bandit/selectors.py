"""The selector registry: which pairs of an offline dataset (or of fresh online draws) DPO trains on.

Every selector hands the loop of bandit/offline.py a candidate batch and a mask of exactly B kept pairs
per seed; the loop takes one DPO step on the mean loss over the kept pairs (`selected_loss`), the same
normalisation for every selector. B = --batch, so every selector puts the same number of pairs into
every step and only their choice differs.

| name | regime | each step |
|---|---|---|
| all | offline | B pairs uniformly from the whole dataset (all data, no selection) |
| random_subset | offline | a random B of a uniform candidate batch of B / sams_ratio: SamS's control |
| reward_gap | offline | one-shot (Qi et al.): a selection model trained by DPO on all N pairs (the `all` run's final policy) scores every pair by its signed gap Dh = h(y_w) - h(y_l); the round(ratio N) smallest are kept once; then B uniformly from that subset |
| reward_gap_step | offline | per-step variant: the B smallest signed gaps of a candidate batch of B / ratio, scored with the current policy |
| us | offline | uncertainty sampling: the B widest pairs (pair width) of B / ratio candidates |
| ae | offline | active exploration: the B pairs of B / ratio candidates with the widest optimistic-minus-pessimistic best implicit reward |
| sams | offline | SamS: exploitation + exploration MLPs score a candidate batch of B / sams_ratio; the top B are trained on; the reward (batch-loss change to the next step + a margin / log-prob term, alignment's formula) updates both nets one step later |
| borda | online | AE-Borda: B / ratio candidate contexts, each with m actions from pi and m from pi_ref; the B contexts with the widest optimistic-minus-pessimistic Borda score; pair = best optimistic policy action vs a random reference action, labelled fresh |

`--length-normalise` (alignment/: divide log-ratios by the response length) is the identity here: one
action is one token. reward_gap and reward_gap_step share `--abs` (sort by |Dh| instead of Dh).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bandit.envs import DTYPE
from bandit.vocabulary import PAIR_SAMPLER, SELECTOR, canonical, normalise
from bandit.offline import (Batch, OfflineSim, candidates_for, gather_actions, gather_features, kept_count,
                            margins, selected_loss)
from runlog import ConfigError


@dataclass
class SelectorConfig:
    ratio: float = 0.1           # reward_gap: kept fraction of N; reward_gap_step, us, ae, borda: B of B / ratio candidates
    sams_ratio: float = 0.5      # sams and random_subset: B of B / sams_ratio candidates (K = half the batch)
    abs: bool = False            # reward_gap(_step): sort by |gap|
    length_normalise: bool = False  # reward_gap(_step): identity in the bandit (one action = one token)
    gamma: float = 2.0           # ae, borda: confidence multiplier (mean +- gamma * width)
    borda_samples: int = 8       # borda: actions drawn from pi and from pi_ref per candidate context
    sams_hidden: int = 32        # sams: hidden units of each MLP
    sams_lr: float = 1e-2        # sams: Adam step of both networks
    sams_explore_weight: float = 0.1  # sams: score = f1 + this x f2 (alignment.train_dpo's --sams-explore-weight)
    sams_updates: int = 2        # sams: Adam steps per observed reward (alignment.selection.batch.SamsScheduler)


def top_mask(score: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Mask [S, M] of the k largest (or smallest) scores per row. Ties go to the earlier candidate (a
    stable sort); candidates come in random order, so ties are broken at random."""
    order = torch.sort(score, dim=1, descending=largest, stable=True).indices[:, :k]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, order, True)


class Selector:
    name = ""               # the canonical name (bandit/vocabulary.py)
    stream = None           # the name of its random stream, when not `name`
    regime = "offline"
    per_step_stats = True   # count flipped / misordered pairs among kept and dropped candidates each step

    def __init__(self, cfg: SelectorConfig | None = None):
        self.cfg = cfg or SelectorConfig()

    def setup(self, sim: OfflineSim) -> None:
        pass

    def batch(self, sim: OfflineSim) -> Batch:
        raise NotImplementedError

    def update(self, sim: OfflineSim, b: Batch, m0: torch.Tensor, m1: torch.Tensor) -> None:
        """After the DPO step: m0, m1 are the candidates' margins before and after it."""


class All(Selector):
    """All data: B pairs uniformly from the dataset each step (distinct within a step)."""

    name = "all"
    stream = "unif"  # its random stream keeps the name this selector had before, so its numbers do not move
    per_step_stats = False

    def batch(self, sim):
        return sim.dataset_batch(sim.uniform_indices(sim.data.size, sim.batch))


class RandomSubset(Selector):
    """SamS's control: a random B of a uniform candidate batch of B / sams_ratio, the same loss normalisation."""

    name = "random_subset"

    def batch(self, sim):
        idx = sim.uniform_indices(sim.data.size, candidates_for(sim.batch, self.cfg.sams_ratio))
        return sim.dataset_batch(idx, top_mask(sim.rand(*idx.shape), sim.batch))


def reward_gaps(h: torch.Tensor, x, yw, yl, use_abs: bool = False, length_normalise: bool = False) -> torch.Tensor:
    """Qi et al.'s implicit reward gap beta log(pi(y_w)/ref(y_w)) - beta log(pi(y_l)/ref(y_l)) = Dh, signed.

    length_normalise divides each log-ratio by its response's length, which is 1 in the bandit."""
    gap = margins(h, x, yw, yl)
    if length_normalise:
        gap = gap / 1.0  # one action = one token
    return gap.abs() if use_abs else gap


class RewardGap(Selector):
    """One-shot difficulty selection (Qi et al.): keep the round(ratio N) pairs with the smallest gap of a
    DPO model trained on all data, then train from pi_ref on minibatches of B from the kept subset.

    The selection model is trained with the `all` selector's loop and random stream (same steps, batch
    and lr), so it is the `all` run's final policy; sim.info["selection_pairs"] records the N labels
    it read (not counted in pairs_used, which counts the labels the trained policy reads).
    """

    name = "reward_gap"
    per_step_stats = False

    def select(self, sim: OfflineSim, h_sel: torch.Tensor) -> torch.Tensor:
        d = sim.data
        gap = reward_gaps(h_sel, d.x, d.yw, d.yl, self.cfg.abs, self.cfg.length_normalise)
        k = kept_count(d.size, self.cfg.ratio)
        return top_mask(gap, k, largest=False)

    def setup(self, sim):
        make = sim.make_generator or (lambda name: sim.generator)
        sel = OfflineSim(sim.env, sim.data, sim.steps, sim.batch, sim.lr, make(All.stream), flip=sim.flip, lam=sim.lam)
        sel.run(All(self.cfg))
        keep = self.select(sim, sel.h)
        k = int(keep[0].sum())
        if k < sim.batch:
            raise ConfigError(f"--ratio: reward_gap keeps round(ratio * N) = {k} pairs, fewer than --batch {sim.batch}")
        # subset indices [S, k], in dataset order
        self.subset = torch.sort(torch.where(keep, torch.arange(sim.data.size, device=keep.device), sim.data.size),
                                 dim=1).values[:, :k]
        d = sim.data
        sim.stats = dict(kept=int(keep.sum()), dropped=int((~keep).sum()),
                         kept_flipped=int((d.flipped & keep).sum()), dropped_flipped=int((d.flipped & ~keep).sum()),
                         kept_misordered=int((d.misordered & keep).sum()),
                         dropped_misordered=int((d.misordered & ~keep).sum()))
        sim.info.update(selection_pairs=d.size, selection_steps=sim.steps, subset_size=k)

    def batch(self, sim):
        pos = sim.uniform_indices(self.subset.shape[1], sim.batch)
        return sim.dataset_batch(self.subset.gather(1, pos))


class RewardGapStep(Selector):
    """Per-step difficulty selection: the B smallest gaps (current policy) of B / ratio uniform candidates."""

    name = "reward_gap_step"

    def batch(self, sim):
        idx = sim.uniform_indices(sim.data.size, candidates_for(sim.batch, self.cfg.ratio))
        b = sim.dataset_batch(idx)
        gap = reward_gaps(sim.h, b.x, b.yw, b.yl, self.cfg.abs, self.cfg.length_normalise)
        b.mask = top_mask(gap, sim.batch, largest=False)
        return b


class US(Selector):
    """Uncertainty sampling: the B candidates (of B / ratio) with the largest pair width."""

    name = "us"

    def setup(self, sim):
        sim.uncertainty()

    def score(self, sim, b: Batch) -> torch.Tensor:
        return sim.uncertainty().pair_width(b.x, b.yw, b.yl)

    def batch(self, sim):
        idx = sim.uniform_indices(sim.data.size, candidates_for(sim.batch, self.cfg.ratio))
        b = sim.dataset_batch(idx)
        b.mask = top_mask(self.score(sim, b), sim.batch)
        return b


def ae_score(h: torch.Tensor, unc, x, y, y2, gamma: float) -> torch.Tensor:
    """Width of the optimistic-minus-pessimistic best implicit reward of the pair {y, y'} of context x.

    Each response has an implicit reward h with a confidence interval h +- gamma s (s its response
    width); the pair's best response is worth U = max(h(y) + gamma s(y), h(y') + gamma s(y')) under
    the optimistic model and L = max(h(y) - gamma s(y), h(y') - gamma s(y')) under the pessimistic one;
    the score is U - L >= 0 (AE-DPO's acquisition with mean +- gamma std). Unlike US's width of the
    difference, it ignores the uncertainty of a response that is surely the worse one: if
    h(y) - gamma s(y) >= h(y') + gamma s(y'), U - L = 2 gamma s(y). A width on the *difference* alone
    (y' as a fixed baseline, Dh +- gamma w, symmetrised over the two orders) gives gamma w for every
    pair: US's ranking, so AE needs per-response widths to be a different method.
    """
    sy, sy2 = unc.response_width(x, y), unc.response_width(x, y2)
    hy, hy2 = gather_actions(h, x, y), gather_actions(h, x, y2)
    upper = torch.maximum(hy + gamma * sy, hy2 + gamma * sy2)
    lower = torch.maximum(hy - gamma * sy, hy2 - gamma * sy2)
    return upper - lower


class AE(US):
    """Active exploration (AE-DPO): the B candidates (of B / ratio) with the largest `ae_score`."""

    name = "ae"

    def score(self, sim, b):
        return ae_score(sim.h, sim.uncertainty(), b.x, b.yw, b.yl, self.cfg.gamma)


# ----------------------------------------------------------------------------------------------- SamS

class BatchedMLP:
    """One small MLP per seed (weights [S, ...]), so all seeds train in one batched call; seed s's networks see
    only seed s's samples, since the loss is a sum over seeds. Linear-ReLU-Linear-ReLU-Linear, as
    alignment.selection.batch's scheduler nets, each layer initialised as torch.nn.Linear initialises (weights and
    biases uniform in +-1/sqrt(fan_in)); forward returns the output and the last hidden activation."""

    def __init__(self, S: int, d_in: int, hidden: int, generator: torch.Generator, device):
        def uni(*shape, fan_in):
            return ((torch.rand(*shape, generator=generator, dtype=DTYPE, device=device) * 2 - 1)
                    / math.sqrt(fan_in)).requires_grad_(True)

        self.W1, self.b1 = uni(S, d_in, hidden, fan_in=d_in), uni(S, 1, hidden, fan_in=d_in)
        self.W2, self.b2 = uni(S, hidden, hidden, fan_in=hidden), uni(S, 1, hidden, fan_in=hidden)
        self.W3, self.b3 = uni(S, hidden, 1, fan_in=hidden), uni(S, 1, 1, fan_in=hidden)

    def parameters(self):
        return [self.W1, self.b1, self.W2, self.b2, self.W3, self.b3]

    def __call__(self, x: torch.Tensor):
        """x [S, M, d_in] -> (output [S, M], last hidden activations [S, M, hidden])."""
        a = torch.relu(torch.baddbmm(self.b2, torch.relu(torch.baddbmm(self.b1, x, self.W1)), self.W2))
        return torch.baddbmm(self.b3, a, self.W3).squeeze(-1), a


def min_max(v: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min) along the last axis (per seed); 0 where all values are equal."""
    lo, hi = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (v - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(v))


def sams_reward(loss_prev: torch.Tensor, loss_now: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """[S, K] SamS reward of a selection (alignment.selection.batch.SamsScheduler.observe; the released code's
    add_rm_logp, scheduler.py lines 33-48, sample term's sigmoid once):
        y = 0.5 sigmoid(50 (L_prev - L_now) + 0.5) + 0.5 sigmoid(sample),  sample = 0.5 mm(Dh) + 0.5 (1 - mm(log pi(y_w)))
    loss_prev, loss_now [S]: the candidate batch loss L = 1 - mean sigmoid(Dh) when the pairs were chosen and at
    the next step; sample [S, K]: the selected pairs' sample terms, min-max normalised over their candidate batch."""
    return 0.5 * torch.sigmoid(50.0 * (loss_prev - loss_now) + 0.5)[:, None] + 0.5 * torch.sigmoid(sample)


class SamS(Selector):
    """SamS batch scheduling (Huang et al., NeurIPS 2025): the definition of alignment.selection.batch.SamsScheduler
    (the LLM one), as far as a tabular or linear bandit can express it.

    context of candidate pair i: [phi(x, y_w), phi(x, y_l), Dh_i] (the LLM's: the policy's pooled hidden states of
    chosen and of rejected, and the margin; here the pair's features, one-hot over (x, y) in the tabular bandit).
    exploitation net f1(context) predicts the reward; exploration net f2 (EE-Net) takes f1's last hidden
    activation (the gradient of f1's output with respect to its output layer) and predicts the residual
    y - f1. Score u = f1 + sams_explore_weight f2 (0.1, alignment.train_dpo's default); the top K = B of the
    B / sams_ratio candidates are trained on (ties to the earlier candidate; candidates come in random order).
    Reward, observed one step later (the released code's lagged update): sams_reward, with L the batch loss
    1 - mean sigmoid(Dh) over the whole candidate batch, L_prev of the selection's batch before its DPO step,
    L_now of the next candidate batch before its step, and the sample term 0.5 mm(Dh_i) + 0.5 (1 - mm(log pi(y_w)))
    min-max normalised per seed over the selection's candidate batch. Update: `sams_updates` (2) Adam steps
    (weight decay 1e-5, step sams_lr) on mean_K (f1 - y)^2 + mean_K (f2 - (y - f1 at selection))^2 over the
    selected pairs; the last selection's reward is never observed.

    What differs from the LLM scheduler, and why: the contexts are the bandit's features, not hidden states; the
    Adam step (1e-2) and width (32) are the bandit's, sized for its one-hot features; the loss normalisation is the
    loop's (bandit/offline.py selected_loss, the mean over the K kept: alignment's `matched`). The released code's
    `anchor` normalisation (mean over all n candidates, unselected detached) is the matched step at lr K/n, so a
    bandit run of it is `--lr` x sams_ratio; the selector cannot change the loop's step. There is no scheduler
    pre-training stage in the bandit, so no frozen mode either (a frozen random scheduler is a fixed random
    ranking). The released code's own scheduler (16-layer residual MLPs over a sentence encoder) is the LLM
    module's reference, not the bandit's.
    """

    name = "sams"

    def setup(self, sim):
        d_in = 2 * sim.phi.shape[-1] + 1
        make = sim.make_generator or (lambda name: sim.generator)
        g = make("sams/init")
        self.f1 = BatchedMLP(sim.S, d_in, self.cfg.sams_hidden, g, sim.r.device)
        self.f2 = BatchedMLP(sim.S, self.cfg.sams_hidden, self.cfg.sams_hidden, g, sim.r.device)
        # one Adam over both nets: the two losses share no parameter, so this is two Adams in one backward pass
        self.opt = torch.optim.Adam(self.f1.parameters() + self.f2.parameters(), lr=self.cfg.sams_lr,
                                    weight_decay=1e-5)
        self.pending = None

    def features(self, sim, b: Batch) -> torch.Tensor:
        m = margins(sim.h, b.x, b.yw, b.yl)
        return torch.cat([gather_features(sim.phi, b.x, b.yw), gather_features(sim.phi, b.x, b.yl), m[..., None]], -1)

    def scores(self, feats: torch.Tensor):
        return self._score(feats)[0]

    def _score(self, feats: torch.Tensor):
        """(u, f1, f1's last hidden activation) of contexts [S, M, d]."""
        with torch.no_grad():
            u1, a = self.f1(feats)
            u2, _ = self.f2(a)
        return u1 + self.cfg.sams_explore_weight * u2, u1, a

    @staticmethod
    def batch_loss(m: torch.Tensor) -> torch.Tensor:
        """[S]: L = 1 - mean sigmoid(Dh) over the candidate batch."""
        return 1.0 - torch.sigmoid(m).mean(-1)

    def observe(self, loss_now: torch.Tensor) -> torch.Tensor | None:
        """The pending selection's reward [S, K] and the nets' update on it."""
        p, self.pending = self.pending, None
        if p is None:
            return None
        y = sams_reward(p["loss"], loss_now, p["sample"])
        for _ in range(self.cfg.sams_updates):
            self.opt.zero_grad()
            loss = ((self.f1(p["x"])[0] - y) ** 2).mean(1).sum() + ((self.f2(p["a"])[0] - (y - p["f1"])) ** 2).mean(1).sum()
            loss.backward()
            self.opt.step()
        return y

    def batch(self, sim):
        idx = sim.uniform_indices(sim.data.size, candidates_for(sim.batch, self.cfg.sams_ratio))
        b = sim.dataset_batch(idx)
        m = margins(sim.h, b.x, b.yw, b.yl)
        loss_now = self.batch_loss(m)
        self.last_reward = self.observe(loss_now)
        self._feats = self.features(sim, b)
        u, f1, a = self._score(self._feats)
        b.mask = top_mask(u, sim.batch)
        sample = 0.5 * min_max(m) + 0.5 * (1 - min_max(gather_actions(sim.log_pi, b.x, b.yw)))
        keep = lambda t: t[b.mask].reshape(sim.S, sim.batch, *t.shape[2:])  # the K kept, in candidate order
        self.pending = {"x": keep(self._feats), "a": keep(a), "f1": keep(f1), "sample": keep(sample),
                        "loss": loss_now}
        return b


# ---------------------------------------------------------------------------------------------- Borda

def borda_scores(h: torch.Tensor, width: torch.Tensor, x: torch.Tensor, y_pi: torch.Tensor, y_ref: torch.Tensor,
                 gamma: float):
    """Optimistic and pessimistic Borda scores of the policy samples, [S, M, m] each.

    h [S, E, A] implicit rewards, width [S, E, A, A] pair widths, x [S, M] candidate contexts,
    y_pi [S, M, m] actions from pi, y_ref [S, M, m] actions from pi_ref. The Borda score of y is its
    win probability against a reference action, estimated over the reference samples y'_j as
    mean_j sigmoid(h(y) - h(y'_j) +- gamma w(x, y, y'_j)); h includes beta, so this is AE-Borda's
    sigmoid(beta * implicit-reward difference), shifted by +- gamma widths. The `borda` selector passes
    w(x, y, y') = s(x, y) + s(x, y') (`borda_widths`), optimistic on y and pessimistic on y' by their own
    widths, as AE-Borda's code sums the two responses' dropout standard deviations
    (alignment/selection/borda.py).
    """
    S, E, A = h.shape
    M, m = y_pi.shape[1:]
    d = h[..., :, None] - h[..., None, :]
    tables = torch.stack([torch.sigmoid(d + gamma * width), torch.sigmoid(d - gamma * width)], 1)  # [S, 2, E, A, A]
    cell = (x[..., None, None] * A + y_pi[..., :, None]) * A + y_ref[..., None, :]  # [S, M, m, m]
    vals = tables.reshape(S, 2, E * A * A).gather(2, cell.reshape(S, 1, -1).expand(S, 2, -1))
    vals = vals.reshape(S, 2, M, m, m).mean(-1)
    return vals[:, 0], vals[:, 1]


def borda_widths(unc, S: int, E: int, A: int, device) -> torch.Tensor:
    """w(x, y, y') = s(x, y) + s(x, y') for every ordered pair, [S, E, A, A]: the per-response widths s of `unc`
    (the same response_width that `ae` uses) summed over the two actions of a comparison."""
    xs = torch.arange(E, device=device).repeat_interleave(A).expand(S, -1)
    ys = torch.arange(A, device=device).repeat(E).expand(S, -1)
    s = unc.response_width(xs, ys).reshape(S, E, A)
    return s[..., :, None] + s[..., None, :]


def borda_pick(h, width, x, y_pi, y_ref, gamma: float, keep: int):
    """(mask [S, M] of the `keep` contexts with the largest gap, each context's best optimistic policy
    action argmax_i U(y_i) [S, M], the gap max_i U(y_i) - max_i L(y_i) [S, M])."""
    upper, lower = borda_scores(h, width, x, y_pi, y_ref, gamma)
    gap = upper.max(-1).values - lower.max(-1).values
    best = y_pi.gather(-1, upper.argmax(-1, keepdim=True)).squeeze(-1)
    return top_mask(gap, keep), best, gap


def sample_actions(log_p: torch.Tensor, x: torch.Tensor, m: int, sim: OfflineSim) -> torch.Tensor:
    """m actions per context x [S, M] from the distribution exp(log_p) [S, E, A], by inverse CDF: [S, M, m]."""
    S, M = x.shape
    A = log_p.shape[-1]
    cdf = torch.cumsum(log_p.exp(), -1)
    cdf = cdf.gather(1, x[..., None].expand(S, M, A)).contiguous()
    u = sim.rand(S, M, m) * cdf[..., -1:]
    return (cdf[..., None, :] <= u[..., None]).sum(-1).clamp_max(A - 1)


class Borda(Selector):
    """AE-Borda in the online regime: fresh pairs each step, labelled by Bradley-Terry (then flipped with
    probability --flip), per-response widths from the pairs trained on so far, summed over a comparison's two
    actions (borda_widths). Ties (best action = the reference
    action) are kept: they add log 2 to the loss and nothing to its gradient."""

    name = "borda"
    regime = "online"
    per_step_stats = False

    def setup(self, sim):
        sim.uncertainty()

    def batch(self, sim):
        S, E = sim.S, sim.r.shape[1]
        M, m = candidates_for(sim.batch, self.cfg.ratio), self.cfg.borda_samples
        gen = sim.generator
        x = torch.randint(E, (S, M), generator=gen, device=sim.r.device)
        y_pi = sample_actions(sim.log_pi, x, m, sim)
        y_ref = sample_actions(sim.env.log_ref, x, m, sim)
        width = borda_widths(sim.unc, S, E, sim.r.shape[2], sim.r.device)
        mask, best, _ = borda_pick(sim.h, width, x, y_pi, y_ref, self.cfg.gamma, sim.batch)
        other = y_ref.gather(-1, torch.randint(m, (S, M, 1), generator=gen, device=sim.r.device)).squeeze(-1)
        p = torch.sigmoid(gather_actions(sim.r, x, best) - gather_actions(sim.r, x, other))
        best_wins = (sim.rand(S, M) < p) ^ (sim.rand(S, M) < sim.flip)
        yw, yl = torch.where(best_wins, best, other), torch.where(best_wins, other, best)
        # keep only the selected contexts, so the step's pairs are exactly the B kept ones
        order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, : sim.batch]
        g = lambda t: t.gather(1, order)
        keep = torch.ones(S, sim.batch, dtype=torch.bool, device=sim.r.device)
        return Batch(g(x), g(yw), g(yl), keep)


SELECTORS = {c.name: c for c in (All, RandomSubset, RewardGap, RewardGapStep, US, AE, SamS, Borda)}


def canonical_selector(name: str, field: str = "--selectors") -> str:
    """A selector's canonical name (aliases accepted: bandit/vocabulary.py). borda is a pair sampler in the
    vocabulary: the online baseline these runs compare the selectors with."""
    if normalise(name, PAIR_SAMPLER) in SELECTORS:
        return normalise(name, PAIR_SAMPLER)
    return canonical(name, SELECTOR, "bandit", field, allowed=tuple(SELECTORS))


def get_selector(name: str):
    return SELECTORS[canonical_selector(name)]


def make_selector(name: str, cfg: SelectorConfig | None = None) -> Selector:
    return get_selector(name)(cfg)
