"""The vectorised simulation loop: all seeds of one sampler advance together as one batch of tensors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bandit import dpo
from bandit.metrics import METRICS, policy_metrics
from bandit.samplers import PairState, pair_diff, sampler_weights

DIVERGENCE_THRESHOLD = 1e6  # param_diff beyond this (the start is O(1)) counts as exploding


@dataclass
class Trajectory:
    """metrics[t, k, b]: metric METRICS[k] of seed b after t iterations (t = 0 is the start).

    diverged_at[b] is the first iteration whose iterate was non-finite or exploding, -1 if none;
    rows from that iteration on are not valid (the seed was frozen there).
    """

    metrics: np.ndarray
    diverged_at: np.ndarray

    def valid_steps(self, b: int) -> int:
        d = self.diverged_at[b]
        return self.metrics.shape[0] if d < 0 else int(d)

    def series(self, name: str) -> np.ndarray:
        """[T+1, B] of one metric, NaN after divergence."""
        x = self.metrics[:, METRICS.index(name), :].copy()
        for b in np.flatnonzero(self.diverged_at >= 0):
            x[self.diverged_at[b]:, b] = np.nan
        return x


def simulate(env, sampler: str, setting: str, iters: int, lr: float = 0.0, step_rule: str = "fixed",
             num_samples: int = 8192, generator: torch.Generator | None = None, pbar=None) -> Trajectory:
    """Run `iters` DPO updates of every seed of `env` under one sampler.

    setting "exact" takes the expected loss under the sampler; "empirical" draws `num_samples` labelled
    pairs per context and step. `pbar` (a tqdm bar, optional) is advanced once per iteration.
    """
    if setting not in ("exact", "empirical"):
        raise ValueError(f"setting must be 'exact' or 'empirical', got {setting!r}")
    if step_rule not in ("fixed", "newton"):
        raise ValueError(f"step_rule must be 'fixed' or 'newton', got {step_rule!r}")
    r, log_ref, beta = env.rewards, env.log_ref, env.beta
    p = torch.sigmoid(pair_diff(r))  # P(y beats y')
    step = env.step_size(step_rule, lr)

    params = env.init_params()
    log_pi = env.log_policy(params)
    B = env.batch
    metrics = torch.empty(iters + 1, len(METRICS), B, dtype=r.dtype, device=r.device)
    metrics[0] = policy_metrics(log_pi, log_ref, r, beta)
    alive = torch.ones(B, dtype=torch.bool, device=r.device)
    diverged_at = torch.full((B,), -1, dtype=torch.long, device=r.device)
    frozen_shape = (B,) + (1,) * (params.dim() - 1)

    for t in range(1, iters + 1):
        h = beta * (log_pi - log_ref)
        w = sampler_weights(sampler, PairState(log_pi, log_ref, h, r))
        if setting == "exact":
            g = dpo.exact_grad_h(w, p, h)
        else:
            g = dpo.grad_h(*dpo.empirical_targets(w, p, num_samples, generator), h)
        new_params = env.apply_grad(params, g, step)
        new_log_pi = env.log_policy(new_params)
        m = policy_metrics(new_log_pi, log_ref, r, beta)
        # per-seed divergence check, on the device: no host sync inside the loop
        bad = ~torch.isfinite(new_params).flatten(1).all(1) | ~torch.isfinite(m).all(0) | (m[0] > DIVERGENCE_THRESHOLD)
        diverged_at = torch.where(alive & bad, t, diverged_at)
        alive = alive & ~bad
        keep = alive.view(frozen_shape)
        params = torch.where(keep, new_params, params)
        log_pi = torch.where(alive[:, None, None], new_log_pi, log_pi)
        metrics[t] = m
        if pbar is not None:
            pbar.update(1)
    return Trajectory(metrics.cpu().numpy(), diverged_at.cpu().numpy())
