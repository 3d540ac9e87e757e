"""Tabular and linear preference bandits, each batched over seeds: every tensor has a leading seed axis B.

An environment owns the true rewards r [B, E, A], the reference policy log pi_ref [B, E, A] and the
policy's parametrisation: how parameters map to log pi, and how a gradient with respect to the
implicit reward h moves them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bandit.dpo import mix_r_normaliser
from runlog import ConfigError

DTYPE = torch.float64


def load_rewards(path) -> np.ndarray:
    """A rewards file: .npy or .json array of shape [A] (one context) or [E, A]; returned as [E, A]."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--rewards: no such file {str(path)!r}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            arr = np.asarray(json.loads(path.read_text()))
        else:
            raise ConfigError(f"--rewards: {str(path)!r} must end in .npy or .json")
        arr = np.asarray(arr, dtype=np.float64)
    except ConfigError:
        raise
    except Exception as e:  # unreadable file, ragged or non-numeric array
        raise ConfigError(f"--rewards: cannot read {str(path)!r} as a numeric array ({e})") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] < 1:
        raise ConfigError(f"--rewards: array must have shape [A] or [E, A] with A >= 2 actions, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ConfigError("--rewards: all rewards must be finite (found NaN or inf)")
    return arr


def _uniform_log_ref(shape, device):
    return torch.full(shape, -math.log(shape[-1]), dtype=DTYPE, device=device)


@dataclass
class TabularEnv:
    """One free logit per (context, action): pi(.|x) = softmax(theta[x])."""

    rewards: torch.Tensor  # [B, E, A]
    log_ref: torch.Tensor  # [B, E, A]
    beta: float

    @classmethod
    def from_seeds(cls, seeds, contexts: int, actions: int, beta: float, device="cpu", rewards=None):
        """Rewards N(0, 1) drawn per seed (seed s gives the same draw in any batch), or one given array [E, A]."""
        if rewards is None:
            r = np.stack([np.random.default_rng(s).standard_normal((contexts, actions)) for s in seeds])
        else:
            r = np.broadcast_to(np.asarray(rewards, dtype=np.float64), (len(seeds),) + np.shape(rewards))
        r = torch.tensor(np.asarray(r), dtype=DTYPE, device=device)  # a copy: later edits of `rewards` don't leak in
        return cls(rewards=r, log_ref=_uniform_log_ref(r.shape, device), beta=beta)

    @property
    def batch(self) -> int:
        return self.rewards.shape[0]

    def init_params(self) -> torch.Tensor:
        return self.log_ref.clone()  # pi_0 = pi_ref

    def log_policy(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(theta, dim=-1)

    def step_size(self, rule: str, lr: float):
        if rule == "fixed":
            return lr
        # newton: lr = S / (2 A beta^2) per context, the inverse of Mix-R's curvature at the optimum
        A = self.rewards.shape[-1]
        return (mix_r_normaliser(self.rewards) / (2 * A * self.beta**2))[..., None]

    def apply_grad(self, theta, grad_h, step):
        # dL/dtheta = beta * grad_h, because grad_h sums to 0 over actions (the softmax Jacobian's mean term drops)
        return theta - step * self.beta * grad_h

    def select(self, idx):
        return dataclasses.replace(self, rewards=self.rewards[idx], log_ref=self.log_ref[idx])


@dataclass
class LinearEnv:
    """Log-linear policy pi_w(y|x) proportional to pi_ref(y|x) exp(<w, phi(x, y)>), true r = <theta*, phi>.

    Gradients are summed over contexts (lr per context, as in the tabular case), so one-hot features
    give exactly the tabular bandit.
    """

    features: torch.Tensor    # [B, E, A, d]
    theta_star: torch.Tensor  # [B, d]
    log_ref: torch.Tensor     # [B, E, A]
    beta: float

    @classmethod
    def from_seeds(cls, seeds, contexts: int, actions: int, dim: int, beta: float, device="cpu"):
        """phi ~ N(0, I/d) and theta* ~ N(0, I) per seed, so rewards have variance about 1."""
        feats, thetas = [], []
        for s in seeds:
            rng = np.random.default_rng(s)
            feats.append(rng.standard_normal((contexts, actions, dim)) / math.sqrt(dim))
            thetas.append(rng.standard_normal(dim))
        features = torch.as_tensor(np.stack(feats), dtype=DTYPE, device=device)
        theta_star = torch.as_tensor(np.stack(thetas), dtype=DTYPE, device=device)
        return cls(features, theta_star, _uniform_log_ref(features.shape[:-1], device), beta)

    @property
    def rewards(self) -> torch.Tensor:
        return torch.einsum("bead,bd->bea", self.features, self.theta_star)

    @property
    def batch(self) -> int:
        return self.features.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros_like(self.theta_star)  # pi_0 = pi_ref

    def log_policy(self, w: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.log_ref + torch.einsum("bead,bd->bea", self.features, w), dim=-1)

    def step_size(self, rule: str, lr: float):
        if rule == "fixed":
            return lr
        # newton: the pseudo-inverse of Mix-R's Hessian at the optimum,
        # H = sum_x (2 beta^2 / S_x) Phi_x^T (A I - 1 1^T) Phi_x; one-hot features give the tabular step
        A = self.features.shape[-2]
        c = 2 * self.beta**2 / mix_r_normaliser(self.rewards)  # [B, E]
        gram = torch.einsum("bead,beaf->bedf", self.features, self.features)
        col = self.features.sum(-2)  # Phi_x^T 1, [B, E, d]
        H = torch.einsum("be,bedf->bdf", c, A * gram - col[..., :, None] * col[..., None, :])
        return torch.linalg.pinv(H, hermitian=True)

    def apply_grad(self, w, grad_h, step):
        grad_w = self.beta * torch.einsum("bea,bead->bd", grad_h, self.features)
        if isinstance(step, torch.Tensor):  # a preconditioner [B, d, d]
            return w - torch.einsum("bdf,bf->bd", step, grad_w)
        return w - step * grad_w

    def select(self, idx):
        return dataclasses.replace(self, features=self.features[idx], theta_star=self.theta_star[idx],
                                   log_ref=self.log_ref[idx])
