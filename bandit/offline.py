"""The offline regime of DESIGN.md section 3: a fixed labelled dataset, a selector, one DPO step per step.

A dataset is N labelled pairs (x, y_w, y_l) per seed, drawn once from a behaviour sampler evaluated at
pi = pi_ref (ties y = y' excluded: a preference pair has two distinct responses), labelled by
Bradley-Terry with the true rewards, then each label flipped with probability `flip` (the `flipped`
flag records which ones; `misordered` pairs are those with r(y_w) < r(y_l), by noise or by a flip).

Each step a selector (bandit/selectors.py) returns a candidate batch of pairs with a mask of the B it
keeps; the policy then takes one gradient step of the empirical DPO loss on the kept pairs,

    L = (1 / B) sum_{kept n} -log sigmoid(Dh_n),   Dh_n = h(x_n, y_w,n) - h(x_n, y_l,n),

with a fixed step lr on L itself (not per context: all contexts share one mean over the B pairs). The
gradient with respect to the implicit reward h is scattered from the pairs, so both environments'
`apply_grad` turn it into a parameter step (tabular: theta -= lr beta grad_h; linear: w -= lr beta
Phi^T grad_h), exactly the gradient of L. Everything is batched over seeds (leading axis S), float64.

Uncertainty (for `us`, `ae`, `borda`) comes from the pairs the policy has trained on so far, counted
once per DPO step that used them (V is the design matrix of the gradient steps taken). Counting each
distinct label once instead leaves the width of a rare action pair fixed once its few labels are read,
so us/ae would train on the same few pairs forever and overfit them (we tried: the value gap grows).

- linear bandit: V = lam I + sum (phi - phi')(phi - phi')^T; the width of a pair is
  ||phi(x,y) - phi(x,y')||_{V^-1} (DESIGN.md), the width of a response is ||phi(x,y) - phibar(x)||_{V^-1}
  with phibar(x) the mean feature of context x (the centred implicit reward h(x,y) - mean_y' h(x,y')
  is the part of a response's reward that pairwise labels identify).
- tabular bandit: counts. A pair's width is 1 / sqrt(1 + n(x,{y,y'})), n the number of times that
  unordered action pair was trained on; a response's width is 1 / sqrt(1 + n(x,y)), n(x,y) the number
  of times a pair containing y was. This is the design-matrix width with lam = 1 for one-hot features
  *per pair* (resp. per response), where every pair is its own parameter; with one-hot features per
  action (the tabular policy's own parametrisation) widths would also shrink through chains of
  comparisons. A pair (y, y) has width 0.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from bandit.envs import DTYPE, LinearEnv
from bandit.metrics import METRICS, policy_metrics
from bandit.samplers import PairState, sampler_weights


# ---------------------------------------------------------------------------------------------- dataset

@dataclass
class Dataset:
    """N labelled pairs per seed: tensors [S, N]."""

    x: torch.Tensor        # context (long)
    yw: torch.Tensor       # chosen action (long)
    yl: torch.Tensor       # rejected action (long)
    flipped: torch.Tensor  # the label-flip noise swapped this pair (bool)
    misordered: torch.Tensor  # r(x, yw) < r(x, yl): a wrong label, by Bradley-Terry noise or a flip (bool)

    @property
    def size(self) -> int:
        return self.x.shape[1]


def behaviour_weights(env, behaviour: str) -> torch.Tensor:
    """The behaviour sampler's pair weights at pi = pi_ref, ties removed, normalised per context: [S, E, A, A]."""
    log_ref, r = env.log_ref, env.rewards
    w = sampler_weights(behaviour, PairState(log_ref, log_ref, torch.zeros_like(r), r)).clone()
    w.diagonal(dim1=-2, dim2=-1).zero_()
    return w / w.sum((-1, -2), keepdim=True)


def make_dataset(env, seeds, size: int, behaviour: str = "unif", flip: float = 0.0, tag: str = "") -> Dataset:
    """Draw the dataset of every seed; seed s gives the same pairs in any batch of seeds.

    Contexts are uniform; the pair (y, y') of context x is drawn from the behaviour weights; y wins with
    probability sigmoid(r(y) - r(y')); then the label is flipped with probability `flip`. The flip
    coins are drawn whatever `flip` is, so runs with different --flip share the same pairs and clean labels.
    """
    r = env.rewards.detach().cpu().numpy()
    w = behaviour_weights(env, behaviour).cpu().numpy()
    S, E, A = r.shape
    xs, yws, yls, flips = [], [], [], []
    for b, seed in enumerate(seeds):
        rng = np.random.default_rng([int(seed), zlib.crc32(tag.encode())])
        x = rng.integers(E, size=size)
        cdf = np.cumsum(w[b].reshape(E, A * A), axis=1)
        cell = np.minimum((cdf[x] <= rng.random(size)[:, None] * cdf[x, -1:]).sum(1), A * A - 1)  # no zero-weight cell
        y, y2 = cell // A, cell % A
        p_win = 1.0 / (1.0 + np.exp(-(r[b, x, y] - r[b, x, y2])))
        y_wins = rng.random(size) < p_win
        flipped = rng.random(size) < flip
        first = y_wins ^ flipped
        xs.append(x)
        yws.append(np.where(first, y, y2))
        yls.append(np.where(first, y2, y))
        flips.append(flipped)
    dev = env.rewards.device
    t = lambda a, dt=torch.long: torch.as_tensor(np.stack(a), dtype=dt, device=dev)
    x, yw, yl = t(xs), t(yws), t(yls)
    rew = env.rewards
    misordered = gather_actions(rew, x, yw) < gather_actions(rew, x, yl)
    return Dataset(x, yw, yl, t(flips, torch.bool), misordered)


# ------------------------------------------------------------------------------------ pairs and the loss

def gather_actions(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """v [S, E, A] at (x, y), index tensors [S, ...] -> [S, ...]."""
    S, E, A = v.shape
    idx = (x * A + y).reshape(S, -1)
    return v.reshape(S, E * A).gather(1, idx).reshape(x.shape)


def margins(h: torch.Tensor, x, yw, yl) -> torch.Tensor:
    """Implicit-reward margins Dh = h(x, yw) - h(x, yl) of pairs [S, ...]."""
    return gather_actions(h, x, yw) - gather_actions(h, x, yl)


def selected_loss(margin: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """DPO loss on the kept pairs: (1/k) sum_{mask} -log sigmoid(margin), per seed [S].

    The one normalisation every selector uses (sams and random_subset included): a mean over the k
    kept pairs, so a selector changes which pairs get gradient and never the gradient's scale.
    """
    return (F.softplus(-margin) * mask).sum(-1) / k


def selected_grad_h(h: torch.Tensor, x, yw, yl, mask: torch.Tensor, k: int) -> torch.Tensor:
    """d selected_loss / d h, [S, E, A]: each kept pair adds (sigmoid(Dh) - 1) / k at (x, yw) and minus that at (x, yl)."""
    S, E, A = h.shape
    g = (torch.sigmoid(margins(h, x, yw, yl)) - 1.0) * mask / k
    G = torch.zeros(S, E * A, dtype=h.dtype, device=h.device)
    G.scatter_add_(1, (x * A + yw).reshape(S, -1), g.reshape(S, -1))
    G.scatter_add_(1, (x * A + yl).reshape(S, -1), -g.reshape(S, -1))
    return G.reshape(S, E, A)


def implicit_reward(env, log_pi: torch.Tensor) -> torch.Tensor:
    return env.beta * (log_pi - env.log_ref)


def pair_features(env) -> torch.Tensor:
    """phi(x, y) [S, E, A, d]: the linear bandit's features, one-hot over (x, y) for the tabular bandit (d = E A)."""
    if isinstance(env, LinearEnv):
        return env.features
    S, E, A = env.rewards.shape
    eye = torch.eye(E * A, dtype=DTYPE, device=env.rewards.device).reshape(E, A, E * A)
    return eye.expand(S, E, A, E * A)


def gather_features(phi: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """phi [S, E, A, d] at (x, y) [S, C] -> [S, C, d]."""
    S, E, A, d = phi.shape
    idx = (x * A + y).reshape(S, -1, 1).expand(-1, -1, d)
    return phi.reshape(S, E * A, d).gather(1, idx)


# ---------------------------------------------------------------------------------------- uncertainty

class CountWidth:
    """Tabular widths from training counts (see the module docstring)."""

    def __init__(self, S: int, E: int, A: int, device):
        self.E, self.A = E, A
        self.n_pair = torch.zeros(S, E, A, A, dtype=DTYPE, device=device)
        self.n_resp = torch.zeros(S, E, A, dtype=DTYPE, device=device)

    def pair_width(self, x, y, y2) -> torch.Tensor:
        S = x.shape[0]
        E, A = self.E, self.A
        idx = ((x * A + y) * A + y2).reshape(S, -1)
        n = self.n_pair.reshape(S, E * A * A).gather(1, idx).reshape(x.shape)
        return torch.rsqrt(1.0 + n) * (y != y2)

    def response_width(self, x, y) -> torch.Tensor:
        return torch.rsqrt(1.0 + gather_actions(self.n_resp, x, y))

    def pair_width_table(self) -> torch.Tensor:
        """Width of every ordered pair of every context: [S, E, A, A]."""
        w = torch.rsqrt(1.0 + self.n_pair)
        w.diagonal(dim1=-2, dim2=-1).zero_()
        return w

    def add(self, x, y, y2, mask) -> None:
        """Count the pairs where mask is true (pairs [S, C]); ties (y = y') carry no label information."""
        S = x.shape[0]
        A = self.A
        m = (mask & (y != y2)).to(DTYPE).reshape(S, -1)
        for a, b in ((y, y2), (y2, y)):
            self.n_pair.view(S, -1).scatter_add_(1, ((x * A + a) * A + b).reshape(S, -1), m)
        for a in (y, y2):
            self.n_resp.view(S, -1).scatter_add_(1, (x * A + a).reshape(S, -1), m)


class DesignWidth:
    """Linear-bandit widths from the design matrix V = lam I + sum (phi - phi')(phi - phi')^T."""

    def __init__(self, phi: torch.Tensor, lam: float):
        self.phi = phi
        self.phic = phi - phi.mean(-2, keepdim=True)
        S, d = phi.shape[0], phi.shape[-1]
        self.V = lam * torch.eye(d, dtype=DTYPE, device=phi.device).expand(S, d, d).clone()
        self.Vinv = torch.linalg.inv(self.V)

    def _norm(self, v: torch.Tensor) -> torch.Tensor:  # ||v||_{V^-1} for v [S, C, d]
        return torch.einsum("scd,sde,sce->sc", v, self.Vinv, v).clamp_min(0.0).sqrt()

    def pair_width(self, x, y, y2) -> torch.Tensor:
        dphi = gather_features(self.phi, x, y) - gather_features(self.phi, x, y2)
        return self._norm(dphi).reshape(x.shape)

    def response_width(self, x, y) -> torch.Tensor:
        return self._norm(gather_features(self.phic, x, y)).reshape(x.shape)

    def pair_width_table(self) -> torch.Tensor:
        """Width of every ordered pair of every context: [S, E, A, A]."""
        # ||phi_y - phi_y'||^2 = q_yy + q_y'y' - 2 q_yy' with q = Phi V^-1 Phi^T per context
        q = torch.einsum("sead,sdf,sebf->seab", self.phi, self.Vinv, self.phi)
        diag = q.diagonal(dim1=-2, dim2=-1)
        return (diag[..., :, None] + diag[..., None, :] - 2 * q).clamp_min(0.0).sqrt()

    def add(self, x, y, y2, mask) -> None:
        dphi = (gather_features(self.phi, x, y) - gather_features(self.phi, x, y2)) * mask.reshape(x.shape[0], -1, 1)
        self.V = self.V + torch.einsum("scd,sce->sde", dphi, dphi)
        self.Vinv = torch.linalg.inv(self.V)


def make_uncertainty(env, lam: float = 1.0):
    if isinstance(env, LinearEnv):
        return DesignWidth(env.features, lam)
    S, E, A = env.rewards.shape
    return CountWidth(S, E, A, env.rewards.device)


# ------------------------------------------------------------------------------------------ the loop

@dataclass
class Batch:
    """What a selector hands the loop each step: candidate pairs [S, M] and the mask of the B it keeps.

    idx: the candidates' dataset indices (None for the online regime, whose pairs are fresh);
    flipped / misordered: flags of the candidates, for the kept/dropped statistics.
    """

    x: torch.Tensor
    yw: torch.Tensor
    yl: torch.Tensor
    mask: torch.Tensor
    idx: torch.Tensor | None = None
    flipped: torch.Tensor | None = None
    misordered: torch.Tensor | None = None


@dataclass
class OfflineResult:
    """metrics[t, k, s]: METRICS[k] of seed s after t steps; pairs_used[t, s]: distinct labelled pairs the
    policy has trained on after t steps (online: fresh pairs, so t B). stats: kept/dropped counts."""

    metrics: np.ndarray
    pairs_used: np.ndarray
    stats: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def series(self, name: str) -> np.ndarray:
        return self.metrics[:, METRICS.index(name), :]


STAT_KEYS = ("kept", "kept_flipped", "kept_misordered", "dropped", "dropped_flipped", "dropped_misordered")


class OfflineSim:
    """State of one selector's run on every seed: the policy, the dataset, the pairs used, the widths.

    make_generator(name) gives a fresh torch.Generator for a named stream (e.g. reward_gap trains its
    selection model on the `unif` stream, so that model is exactly the `unif` run's final policy).
    """

    def __init__(self, env, data: Dataset, steps: int, batch: int, lr: float, generator: torch.Generator,
                 make_generator=None, flip: float = 0.0, lam: float = 1.0):
        self.env, self.data = env, data
        self.steps, self.batch, self.lr, self.flip, self.lam = steps, batch, lr, flip, lam
        self.generator = generator
        self.make_generator = make_generator
        self.r = env.rewards
        self.S = self.r.shape[0]
        self.params = env.init_params()
        self.log_pi = env.log_policy(self.params)
        self.h = implicit_reward(env, self.log_pi)
        self.used = torch.zeros(self.S, data.size, dtype=torch.bool, device=self.r.device)
        self.pairs_used = torch.zeros(self.S, dtype=torch.long, device=self.r.device)
        self.unc = None
        self._phi = None
        self._stats = torch.zeros(len(STAT_KEYS), dtype=torch.long, device=self.r.device)
        self.stats: dict = {}  # set by one-shot selectors; else filled from _stats at the end of run()
        self.info: dict = {}

    @property
    def phi(self) -> torch.Tensor:
        if self._phi is None:
            self._phi = pair_features(self.env)
        return self._phi

    def uncertainty(self):
        if self.unc is None:
            self.unc = make_uncertainty(self.env, self.lam)
        return self.unc

    def rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, dtype=DTYPE, device=self.r.device)

    def uniform_indices(self, pool: int, m: int) -> torch.Tensor:
        """m distinct indices in [0, pool) per seed, uniformly at random: [S, m]."""
        return self.rand(self.S, pool).topk(m, dim=1).indices

    def dataset_batch(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> Batch:
        d = self.data
        g = lambda t: t.gather(1, idx)
        if mask is None:
            mask = torch.ones_like(idx, dtype=torch.bool)
        return Batch(g(d.x), g(d.yw), g(d.yl), mask, idx, g(d.flipped), g(d.misordered))

    def step(self, b: Batch) -> None:
        """One DPO step on the kept pairs of b, and the bookkeeping of pairs used and widths."""
        g = selected_grad_h(self.h, b.x, b.yw, b.yl, b.mask, self.batch)
        self.params = self.env.apply_grad(self.params, g, self.lr)
        self.log_pi = self.env.log_policy(self.params)
        self.h = implicit_reward(self.env, self.log_pi)
        if b.idx is None:
            self.pairs_used += b.mask.sum(1)
        else:
            self.used.scatter_(1, b.idx, b.mask | self.used.gather(1, b.idx))
            self.pairs_used = self.used.sum(1)
        if self.unc is not None:
            self.unc.add(b.x, b.yw, b.yl, b.mask)

    def record(self, b: Batch) -> None:
        """Count flipped / misordered pairs among the kept and the dropped candidates (on the device)."""
        keep, drop = b.mask, ~b.mask
        self._stats += torch.stack([keep.sum(), (b.flipped & keep).sum(), (b.misordered & keep).sum(),
                                    drop.sum(), (b.flipped & drop).sum(), (b.misordered & drop).sum()])

    def metrics(self) -> torch.Tensor:
        return policy_metrics(self.log_pi, self.env.log_ref, self.r, self.env.beta)

    def run(self, selector, pbar=None) -> OfflineResult:
        """Run `steps` selection + DPO steps of `selector` from pi_ref."""
        selector.setup(self)
        T = self.steps
        metrics = torch.empty(T + 1, len(METRICS), self.S, dtype=DTYPE, device=self.r.device)
        used = torch.zeros(T + 1, self.S, dtype=torch.long, device=self.r.device)
        metrics[0] = self.metrics()
        for t in range(1, T + 1):
            b = selector.batch(self)
            m0 = margins(self.h, b.x, b.yw, b.yl)
            self.step(b)
            if selector.per_step_stats and b.flipped is not None:
                self.record(b)
            selector.update(self, b, m0, margins(self.h, b.x, b.yw, b.yl))
            metrics[t] = self.metrics()
            used[t] = self.pairs_used
            if pbar is not None:
                pbar.update(1)
        stats = self.stats or dict(zip(STAT_KEYS, (int(v) for v in self._stats.cpu())))
        return OfflineResult(metrics.cpu().numpy(), used.cpu().numpy(), dict(stats), dict(self.info))


def candidates_for(batch: int, ratio: float) -> int:
    """Size of the candidate batch a selector keeping `batch` of it at keep-fraction `ratio` scores:
    round(batch / ratio), halves rounded up."""
    return max(batch, int(math.floor(batch / ratio + 0.5)))


def kept_count(n: int, ratio: float) -> int:
    """How many pairs a one-shot selection keeps of n at keep-fraction ratio: round(ratio n)
    (halves rounded up), at least 1."""
    return max(1, int(math.floor(ratio * n + 0.5)))
