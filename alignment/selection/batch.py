"""Batch selectors for DPO training: which pairs of each training batch get gradient (DESIGN.md section 3,
offline regime; alignment.train_dpo --selector; alignment/training/trainer.py runs them inside TRL's DPOTrainer).

Every selector sees a *candidate batch* (the --batch-size pairs per device that the data loader yields, gathered
over all processes: the global candidate batch of n pairs) and keeps K = keep_count(n, --select-ratio) of them.

    all             every pair (TRL's DPOTrainer unchanged)
    random_subset   a uniformly random K (the control of sams: the same loss normalisation, so a difference between
                    the two is the scheduler's, not the gradient scale's)
    sams            SamS (Huang et al., "Adaptive Batch-Wise Sample Scheduling for Direct Preference
                    Optimization", NeurIPS 2025, arXiv:2506.17252; released code github.com/hzx122/SamS): an
                    exploitation net f1 and an exploration net f2 score every candidate, the top K (or K sampled
                    without replacement from softmax(scores)) are trained on, a reward observed one step later
                    updates both nets (SamsScheduler below)
    us, ae          uncertainty sampling / active exploration (Mehta et al.): Monte Carlo dropout scores of the
                    candidates (alignment.selection.scores), the top K are trained on

random_subset and sams are *in-batch*: TRL's forward runs over the whole candidate batch (SamS needs every
candidate's hidden states, which that forward gives for free) and the loss is masked
(alignment.training.losses.masked_mean):
    loss = sum_i mask_i l_i * processes / K
so that DDP's gradient average over the processes is the mean over the K selected pairs of the global batch.
us and ae are *per-step*: the candidates are scored first under no_grad (each pair's Monte Carlo dropout noise
seeded from its global index, dropout_samples), and the forward with gradients runs on the selected pairs only;
under several processes a process whose share of the selection is smaller than another's pads its slice with
zero-weight pairs, so that every process runs the same shapes.

Every process selects the same global indices: the scores / features are gathered over the processes (in rank
order: the global candidate batch is rank 0's pairs, then rank 1's, ...), selection is a deterministic function
of them and of a generator seeded from (run seed, global step, micro-batch) -- never from process-local state --
and ties go to the lower index.
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

# K of n candidates: n * ratio rounded half up, at least 1 (shared with alignment.select)
from alignment.selection.scores import keep_count  # noqa: F401  (re-exported for callers of this module)

SELECTORS = ("all", "random_subset", "sams", "us", "ae")  # canonical names (bandit/vocabulary.py)
IN_BATCH = ("random_subset", "sams")  # masked loss over TRL's full forward
PER_STEP = ("us", "ae")  # score first, then train on the selected slice
SAMS_MODES = ("topk", "softmax")


def step_generator(seed: int, step: int, micro: int = 0, stream: str = "select") -> torch.Generator:
    """A CPU generator seeded from (run seed, global step, micro-batch, stream) alone: the same on every process
    and after a resume, whatever ran before."""
    digest = hashlib.sha256(f"{stream}/{seed}/{step}/{micro}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# ------------------------------------------------------------------------------------------- features

def pooled_response_states(hidden: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[2B, T, d] final hidden states (TRL's layout: B chosen rows, then B rejected rows) -> [B, 2d]: the mean over
    each response's tokens, chosen's and rejected's concatenated. Detached, float32."""
    m = completion_mask.to(torch.float32).unsqueeze(-1)
    pooled = (hidden.detach().float() * m).sum(1) / m.sum(1).clamp(min=1.0)
    chosen, rejected = pooled.chunk(2, dim=0)
    return torch.cat([chosen, rejected], dim=-1)


def min_max(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the batch; 0 everywhere when all values are equal."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


# ------------------------------------------------------------------------------------------- selectors

def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest scores' indices, ascending; ties go to the lower index (a stable sort)."""
    order = torch.sort(-scores.detach().double().cpu(), stable=True).indices
    return order[:k].sort().values


def slice_pairs(batch: dict, idx: torch.Tensor, multiple_of: int | None = None) -> dict:
    """The pairs `idx` of a collated TRL batch: rows idx and B + idx of every [2B, ...] tensor (input_ids,
    attention_mask, completion_mask), entries idx of every [B] tensor (ref_chosen_logps, ref_rejected_logps,
    target); the columns that are padding in every kept row are dropped (rounded up to `multiple_of`)."""
    n = batch["completion_mask"].size(0) // 2
    idx = idx.to(batch["completion_mask"].device)
    out = {}
    for key, v in batch.items():
        if torch.is_tensor(v) and v.dim() and v.size(0) == 2 * n:
            out[key] = torch.cat([v[idx], v[idx + n]])
        elif torch.is_tensor(v) and v.dim() and v.size(0) == n:
            out[key] = v[idx]
        else:
            out[key] = v
    seq = batch["input_ids"].size(1)
    width = int(out["attention_mask"].sum(1).max())  # TRL's collator pads on the right
    if multiple_of:
        width = min(seq, -(-width // multiple_of) * multiple_of)
    if width < seq:
        out = {k: (v[:, :width] if torch.is_tensor(v) and v.dim() == 2 and v.size(1) == seq else v)
               for k, v in out.items()}
    return out


def dropout_samples(model, batch: dict, passes: int, p: float, seed: int, step: int, micro: int = 0,
                    offset: int = 0) -> torch.Tensor:
    """[passes, 2B] Monte Carlo dropout log-probs (alignment.selection.scores.dropout_logps) of a collated batch, one pair
    at a time, pair i's noise drawn from a generator seeded from (seed, step, micro, offset + i) alone: a pair's
    samples do not depend on the other pairs of its batch nor on how the global batch is split over processes
    (offset = the global index of this batch's first pair), so one process and several select alike. The cost:
    B small no-grad forwards instead of one."""
    from alignment.selection import scores as selection

    n = batch["completion_mask"].size(0) // 2
    per_pair = [selection.dropout_logps(model, slice_pairs(batch, torch.tensor([i])), passes=passes, p=p,
                                        generator=step_generator(seed, step, micro, stream=f"dropout/{offset + i}"))
                for i in range(n)]  # each [passes, 2]: chosen, rejected
    return torch.cat([torch.stack([s[:, 0] for s in per_pair], 1), torch.stack([s[:, 1] for s in per_pair], 1)], 1)


def random_indices(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """random_subset: k of n uniformly at random, ascending."""
    return torch.randperm(n, generator=generator)[:k].sort().values


class _MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear; forward returns the scalar output and the last hidden activation (the
    gradient of the output with respect to the output layer's weights: EE-Net's exploration input)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        h = self.body(x)
        return self.head(h).squeeze(-1), h


class SamsScheduler:
    """SamS: a contextual bandit over the samples of each batch (Huang et al., NeurIPS 2025, Algorithm 1).

    Context x_i of candidate pair i = [mean final hidden state over chosen's response tokens, the same over
    rejected's, the current margin D_i] (2 d + 1 numbers, detached: no extra LLM forward).
    Exploitation net f1: x -> estimated reward. Exploration net f2 (EE-Net): phi(x) -> estimated residual
    y - f1(x), where phi(x) is f1's last hidden activation. Score u_i = f1(x_i) + explore_weight * f2(phi(x_i)).
    Selection of K: `topk` (the paper's text) or `softmax` (K draws without replacement from softmax(u), as the
    released code's sampling_based_on_scores does).

    Reward (observed one step later, the released code's lagged update; its default reward `add_rm_logp`):
        y_i = 0.5 * sigmoid(50 (L_prev - L_now) + 0.5) + 0.5 * sigmoid(0.5 m_i + 0.5 (1 - p_i))
    L = 1 - mean_j sigmoid(D_j) over the whole global candidate batch (the released `use_sig_loss` batch loss),
    L_prev at the step the pairs were selected, L_now at the next step, both measured before that step's
    update; m_i and p_i are pair i's margin D_i and policy log-prob of chosen, min-max normalised over its
    candidate batch. After observing y on the selected pairs, f1 takes `updates` Adam steps on the squared error
    (f1(x) - y)^2 and f2 on (f2(phi) - (y - f1_at_selection(x)))^2.

    Kept small on purpose: two 2-hidden-layer MLPs of width `hidden` (about 83k parameters for a policy of
    hidden size 128). Deviations from the released code (which uses a 16-layer residual MLP over every layer's
    states through a pretrained encoder): one persistent Adam (the released code makes a fresh one per update),
    no replay pool of past batches, the sample term's sigmoid applied once (the released code applies it
    twice), trained on the selected pairs (the issue's spec; the released default `use_all_samples` also trains
    on the unselected ones), and the exploration term always on with weight 0.1 (the released default `f1_only`
    scores with f1 alone; 0.1 is its `f2_weight` otherwise).
    """

    def __init__(self, dim: int, hidden: int = 128, lr: float = 1e-3, mode: str = "topk",
                 explore_weight: float = 0.1, updates: int = 2, seed: int = 0, device="cpu"):
        if mode not in SAMS_MODES:
            raise ValueError(f"sams mode must be one of {SAMS_MODES}, got {mode!r}")
        self.mode, self.explore_weight, self.updates, self.device = mode, explore_weight, updates, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG alone
            torch.manual_seed(seed)
            self.f1 = _MLP(dim, hidden).to(self.device)
            self.f2 = _MLP(hidden, hidden).to(self.device)
        # one Adam over both nets: Adam is per parameter and the two losses share no parameter (f2's inputs and
        # targets are stored, detached), so this is two Adams in one backward pass
        self.opt = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=1e-5, foreach=True)
        self.pending: dict | None = None  # the last selection, waiting for its reward
        self.num_updates = 0

    @torch.no_grad()
    def score(self, x: torch.Tensor):
        """(u, f1(x), phi(x)) for contexts x [n, dim]."""
        x = x.to(self.device, torch.float32)
        f1, phi = self.f1(x)
        f2, _ = self.f2(phi)
        return f1 + self.explore_weight * f2, f1, phi

    def choose(self, scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        if self.mode == "topk":
            return top_indices(scores, k)
        probs = torch.softmax(scores.detach().double().cpu(), dim=0)
        return torch.multinomial(probs, k, replacement=False, generator=generator).sort().values

    @staticmethod
    def batch_loss(margins: torch.Tensor) -> float:
        """L = 1 - mean sigmoid(D) over the global candidate batch."""
        return float(1.0 - torch.sigmoid(margins.detach().double()).mean())

    def _fit(self, x, phi, y1, y2) -> tuple[float, float]:
        """`updates` Adam steps on (f1(x) - y1)^2 + (f2(phi) - y2)^2 (means over the samples)."""
        for _ in range(self.updates):
            self.opt.zero_grad(set_to_none=True)
            loss1, loss2 = F.mse_loss(self.f1(x)[0], y1), F.mse_loss(self.f2(phi)[0], y2)
            (loss1 + loss2).backward()
            self.opt.step()
        return float(loss1.detach()), float(loss2.detach())

    def observe(self, batch_loss: float) -> dict | None:
        """The reward of the pending selection given this step's batch loss, and the nets' update on it."""
        p = self.pending
        if p is None:
            return None
        batch_term = 1.0 / (1.0 + math.exp(-(50.0 * (p["loss"] - batch_loss) + 0.5)))
        y = 0.5 * batch_term + 0.5 * torch.sigmoid(p["sample"])
        with torch.enable_grad():
            loss1, loss2 = self._fit(p["x"], p["phi"], y, y - p["f1"])
        self.pending = None
        self.num_updates += 1
        return {"reward": float(y.mean()), "f1_loss": loss1, "f2_loss": loss2}

    def step(self, x: torch.Tensor, margins: torch.Tensor, logp_chosen: torch.Tensor, k: int,
             generator: torch.Generator):
        """One scheduling step on a global candidate batch: observe the previous selection's reward and update,
        then score and choose k. Returns (ascending indices, stats of the update or None)."""
        loss_now = self.batch_loss(margins)
        stats = self.observe(loss_now)
        scores, f1, phi = self.score(x)
        idx = self.choose(scores, k, generator)
        margins, logp_chosen = margins.detach().double().cpu(), logp_chosen.detach().double().cpu()
        sample = 0.5 * min_max(margins) + 0.5 * (1 - min_max(logp_chosen))
        dev = idx.to(self.device)
        self.pending = {"x": x.to(self.device, torch.float32)[dev].clone(), "phi": phi[dev].clone(),
                        "f1": f1[dev].clone(), "sample": sample[idx].float().to(self.device), "loss": loss_now}
        return idx, stats

    # -- checkpoints
    def state_dict(self) -> dict:
        return {"f1": self.f1.state_dict(), "f2": self.f2.state_dict(), "opt": self.opt.state_dict(),
                "num_updates": self.num_updates,
                "pending": None if self.pending is None else {k: (v.cpu() if torch.is_tensor(v) else v)
                                                              for k, v in self.pending.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.f1.load_state_dict(state["f1"])
        self.f2.load_state_dict(state["f2"])
        self.opt.load_state_dict(state["opt"])
        self.num_updates = int(state["num_updates"])
        p = state["pending"]
        self.pending = None if p is None else {k: (v.to(self.device) if torch.is_tensor(v) else v)
                                               for k, v in p.items()}

    def parameters(self):
        return [*self.f1.parameters(), *self.f2.parameters()]
