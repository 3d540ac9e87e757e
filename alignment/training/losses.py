"""The DPO losses as pure functions of log-prob tensors (no model, no trainer): what alignment.train_dpo --loss and
--selector compute, in TRL's order of operations so that the trainer's numbers are TRL's own.

Every function takes the per-pair log-probs summed over the response tokens, each of shape (batch_size,):
    policy_chosen_logps      log pi(y_chosen | x)
    policy_rejected_logps    log pi(y_rejected | x)
    ref_chosen_logps         log pi_ref(y_chosen | x)
    ref_rejected_logps       log pi_ref(y_rejected | x)
and beta, the KL strength of the implicit reward h(y) = beta log(pi(y|x) / pi_ref(y|x)). The margin is
D = h(y_chosen) - h(y_rejected), computed as beta ((c - c_ref) - (r - r_ref)) as TRL computes it.

    sigmoid   -log sigmoid(D)                                       hard labels: chosen beats rejected (DPO)
    rev_kl    -q log sigmoid(D) - (1 - q) log sigmoid(-D)           soft labels q = sigmoid(k (r_chosen - r_rejected))
              = -log sigmoid(D) + (1 - q) D  exactly (log sigmoid(-D) = log sigmoid(D) - D), the form computed here,
              so that rev_kl is TRL's sigmoid loss plus the soft-label term (1 - q) D.
rev_kl is the samplers paper's soft-label loss: the cross-entropy between the reward model's Bradley-Terry
preference q (margin scale k) and the policy's implicit one; its minimiser has h(y) - h(y') = k (r(y) - r(y')).
With q = 1 it is the sigmoid loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("sigmoid", "rev_kl")  # written here per pair (the selectors need them)
# TRL 1.16's DPOConfig loss_type values (trl/trainer/dpo_config.py); --loss passes any of them to TRL's own loss
TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
TRAIN_LOSSES = ("sigmoid", "rev_kl") + TRL_LOSS_TYPES[1:]  # what alignment.train_dpo --loss accepts


def soft_target(chosen_reward: float, rejected_reward: float, margin_scale: float) -> float:
    """q = sigmoid(k (r_chosen - r_rejected)): the reward model's Bradley-Terry probability that chosen wins
    (computed in float64)."""
    return float(torch.sigmoid(torch.tensor(margin_scale * (chosen_reward - rejected_reward), dtype=torch.float64)))


def dpo_margins(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """D = beta ((c - c_ref) - (r - r_ref)), shape (batch_size,)."""
    return beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))


def soft_label_term(margins: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1 - q) D, shape (batch_size,): what rev_kl adds to the sigmoid loss. target: q, shape (batch_size,), moved
    to the margins' device and dtype."""
    return (1.0 - target.to(margins.device, margins.dtype)) * margins


def sigmoid_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                 ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
                 target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's loss per pair: (losses, margins), each of shape (batch_size,); losses = -log sigmoid(D). `target` is
    accepted for a uniform signature and ignored (hard labels)."""
    margins = dpo_margins(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return -F.logsigmoid(margins), margins


def rev_kl_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft-label loss per pair: (losses, margins), each of shape (batch_size,);
    losses = -q log sigmoid(D) - (1 - q) log sigmoid(-D) = -log sigmoid(D) + (1 - q) D, q = target (batch_size,)."""
    if target is None:
        raise ValueError("rev_kl needs each pair's soft label q (target)")
    losses, margins = sigmoid_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                                   beta)
    return losses + soft_label_term(margins, target), margins


def preference_loss(name: str, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
                    target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss `name` (sigmoid or rev_kl) per pair: (losses, margins), each of shape (batch_size,)."""
    if name not in LOSS_FUNCTIONS:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSS_FUNCTIONS[name](policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                                beta, target)


def masked_mean(losses: torch.Tensor, mask: torch.Tensor, k: int, processes: int = 1) -> torch.Tensor:
    """sum(mask * losses) * processes / k, a scalar; losses and mask of shape (batch_size,), mask 0/1 (a selector's
    choice among this process's pairs). With DDP averaging the processes' gradients, its gradient is that of the
    mean loss over the k selected pairs of the global batch; every selector uses this normalisation by default
    (train_dpo --sams-normalisation matched)."""
    return (losses * mask.to(losses.dtype)).sum() * (processes / k)


def anchor_mean(losses: torch.Tensor, mask: torch.Tensor, n: int, processes: int = 1) -> torch.Tensor:
    """The released SamS code's normalisation (train_dpo --sams-normalisation anchor, sams and random_subset):
    sum(mask * losses + (1 - mask) * losses.detach()) * processes / n, a scalar, n the number of candidates of the
    global batch. Its value is this process's mean loss over all its candidates when n = processes x local pairs;
    with DDP averaging the processes' gradients, its gradient is (1/n) sum over the selected pairs: k/n times
    masked_mean's. (bandit_utils.py detach_unselected_samples, then trainers_dist.py line 825
    loss = local_losses.mean().)"""
    keep = mask.to(torch.bool)
    return torch.where(keep, losses, losses.detach()).sum() * (processes / n)


LOSS_FUNCTIONS = {"sigmoid": sigmoid_loss, "rev_kl": rev_kl_loss}
