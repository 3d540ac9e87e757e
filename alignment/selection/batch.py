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
candidate's hidden states, which that forward gives for free) and the loss is masked, with one of two
normalisations (--sams-normalisation; random_subset always uses sams's, so that a difference between the two is
the scheduler's and not the gradient scale's):
    matched   loss = sum_i mask_i l_i * processes / K        (alignment.training.losses.masked_mean)
              DDP's gradient average over the processes is the mean over the K selected pairs of the global batch:
              a selector changes which pairs get gradient, never the step size (train_dpo's default)
    anchor    loss = sum_i [mask_i l_i + (1 - mask_i) stop_grad(l_i)] * processes / n   (losses.anchor_mean)
              the released SamS code: it detaches the unselected pairs' losses (bandit_utils.py
              detach_unselected_samples, lines 183-193, called at trainers_dist.py line 823) and takes the mean over
              every candidate (trainers_dist.py line 825, loss = local_losses.mean()), so the gradient is
              K / n times matched's (half of it at ratio 0.5) and the logged value is the whole batch's mean
              loss. alignment/configs/sams.yaml runs anchor.
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
SAMS_MODES = ("topk", "softmax")  # how K are chosen from the scores (--sams-mode)
SAMS_NORMALISATIONS = ("matched", "anchor")  # the in-batch loss's normaliser: K (ours) or n (the released code's)
SAMS_UPDATES = ("online", "frozen")  # the scheduler learns during DPO, or keeps the weights it was given
SAMS_REWARDS = ("dpo", "sft")  # the reward a scheduler step observes: DPO training's, or the released pre-training's
SCHEDULER_FORMAT = "sams_scheduler/1"  # the "format" entry of a scheduler file (SamsScheduler.save / load_weights)


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
    scores with f1 alone; 0.1 is its `f2_weight` otherwise). The DPO reward leaves out run_dpo.sh's
    `norm_metrics` and `enable_avg_reward`: there the batch loss is the mean of sig_losses = -sigmoid(D) < 0
    (trainers_dist.py lines 107 and 789-791), so norm_metrics' division by max(L_now, L_prev) (bandit_utils.py
    line 42) divides by a negative number and flips the sign of the batch term; we keep the unnormalised change.

    Pre-training reward (reward="sft"; the released run_scheduler_pretrain.sh: loss=sft, norm_metrics=true,
    enable_avg_reward=true, bandit.pretrain=true, so the policy's optimizer step is skipped, trainers_dist.py
    line 841): see sft_reward. The SFT loss of pair i is l_i = -log pi(chosen_i | prompt_i), summed over the
    response tokens (trainers_dist.py lines 413-416), and the batch loss L is its mean over the global
    candidate batch (line 789).

    update="frozen": the nets are never trained (weights and optimizer state stay what they were given, e.g. by
    load_weights); the reward is still computed, for the logs. The released run_dpo.sh asks for this
    (bandit.load_bandit=true, bandit.forward_only=true) but its loop resets forward_only to False after every
    batch whenever batch_counter % train_step == 0, i.e. always at train_step=1 (trainers_dist.py lines 856-858),
    so its DPO run in fact updates the loaded scheduler online from the second batch on: update="online" on
    pre-trained weights is what it runs, "frozen" what its flags say.

    The bandit's `sams` selector (bandit/selectors.py SamS) is this definition on the bandit's features: context
    [phi(x, y_w), phi(x, y_l), Dh], the same nets' shape, score, DPO reward (lagged, the same formula) and update.
    It differs where the bandit cannot follow: no hidden states (its features instead), its own Adam step and
    width, the loop's matched normalisation only (anchor there is --lr x ratio), and no pre-training, so no
    frozen mode and no sft reward.
    """

    def __init__(self, dim: int, hidden: int = 128, lr: float = 1e-3, mode: str = "topk",
                 explore_weight: float = 0.1, updates: int = 2, seed: int = 0, device="cpu", update: str = "online"):
        if mode not in SAMS_MODES:
            raise ValueError(f"sams mode must be one of {SAMS_MODES}, got {mode!r}")
        if update not in SAMS_UPDATES:
            raise ValueError(f"sams update must be one of {SAMS_UPDATES}, got {update!r}")
        self.mode, self.explore_weight, self.updates, self.device = mode, explore_weight, updates, torch.device(device)
        self.dim, self.hidden, self.update = dim, hidden, update
        self.sft_avg, self.sft_count = 0.0, 0  # sft_reward's running average of the batch term
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

    @staticmethod
    def sft_batch_loss(logp_chosen: torch.Tensor) -> float:
        """L = mean over the global candidate batch of the SFT loss -log pi(chosen | prompt)."""
        return float(-logp_chosen.detach().double().mean())

    def observe(self, batch_loss: float) -> dict | None:
        """The reward of the pending selection (under the reward it was chosen under) given this step's batch loss
        of that reward, and the nets' update on it (none when frozen)."""
        p = self.pending
        if p is None:
            return None
        if p.get("reward", "dpo") == "sft":
            value, self.sft_avg, self.sft_count = sft_reward(p["loss"], batch_loss, self.sft_avg, self.sft_count)
            y = torch.full_like(p["f1"], value)
        else:
            batch_term = 1.0 / (1.0 + math.exp(-(50.0 * (p["loss"] - batch_loss) + 0.5)))
            y = 0.5 * batch_term + 0.5 * torch.sigmoid(p["sample"])
        self.pending = None
        if self.update == "frozen":
            return {"reward": float(y.mean()), "f1_loss": None, "f2_loss": None}
        with torch.enable_grad():
            loss1, loss2 = self._fit(p["x"], p["phi"], y, y - p["f1"])
        self.num_updates += 1
        return {"reward": float(y.mean()), "f1_loss": loss1, "f2_loss": loss2}

    def step(self, x: torch.Tensor, margins: torch.Tensor, logp_chosen: torch.Tensor, k: int,
             generator: torch.Generator, reward: str = "dpo"):
        """One scheduling step on a global candidate batch: observe the previous selection's reward and update,
        then score and choose k. Returns (ascending indices, stats of the update or None). reward: the reward this
        step's selection will be scored under, "dpo" (the DPO reward above) or "sft" (the released pre-training's,
        sft_reward)."""
        if reward not in SAMS_REWARDS:
            raise ValueError(f"sams reward must be one of {SAMS_REWARDS}, got {reward!r}")
        # the pending selection is scored under its own reward: the last pre-training (sft) selection is observed
        # at the first DPO step, whose forward still runs the pre-trained-on policy
        losses = {"dpo": lambda: self.batch_loss(margins), "sft": lambda: self.sft_batch_loss(logp_chosen)}
        pending = None if self.pending is None else self.pending.get("reward", "dpo")
        stats = self.observe(losses[pending]()) if pending else None
        loss_now = losses[reward]()
        scores, f1, phi = self.score(x)
        idx = self.choose(scores, k, generator)
        margins, logp_chosen = margins.detach().double().cpu(), logp_chosen.detach().double().cpu()
        sample = 0.5 * min_max(margins) + 0.5 * (1 - min_max(logp_chosen))
        dev = idx.to(self.device)
        self.pending = {"x": x.to(self.device, torch.float32)[dev].clone(), "phi": phi[dev].clone(),
                        "f1": f1[dev].clone(), "sample": sample[idx].float().to(self.device), "loss": loss_now,
                        "reward": reward}
        return idx, stats

    # -- scheduler files (pre-trained weights) and checkpoints
    def save_weights(self, path) -> None:
        """Write the two nets (what a pre-training run hands to a DPO run) to `path`: the format tag, dim, hidden and
        both state dicts; the optimizer and the pending selection are not part of it."""
        torch.save({"format": SCHEDULER_FORMAT, "dim": self.dim, "hidden": self.hidden,
                    "f1": {k: v.detach().cpu() for k, v in self.f1.state_dict().items()},
                    "f2": {k: v.detach().cpu() for k, v in self.f2.state_dict().items()}}, path)

    def load_weights(self, path, flag: str = "--sams-scheduler") -> None:
        """Load both nets from a save_weights file; a missing, foreign or mis-shaped file is one ConfigError naming
        `flag`. The optimizer starts afresh (the released code makes a new Adam at every update anyway)."""
        from runlog import ConfigError

        state = read_scheduler_file(path, flag)
        if (state["dim"], state["hidden"]) != (self.dim, self.hidden):
            raise ConfigError(f"{flag}: {path} holds a scheduler of input size {state['dim']} and width "
                              f"{state['hidden']}; this run needs {self.dim} (2 x the policy's hidden size + 1) and "
                              f"--sams-hidden {self.hidden}")
        self.f1.load_state_dict(state["f1"])
        self.f2.load_state_dict(state["f2"])
        self.pending = None

    def state_dict(self) -> dict:
        return {"f1": self.f1.state_dict(), "f2": self.f2.state_dict(), "opt": self.opt.state_dict(),
                "num_updates": self.num_updates, "sft_avg": self.sft_avg, "sft_count": self.sft_count,
                "pending": None if self.pending is None else {k: (v.cpu() if torch.is_tensor(v) else v)
                                                              for k, v in self.pending.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.f1.load_state_dict(state["f1"])
        self.f2.load_state_dict(state["f2"])
        self.opt.load_state_dict(state["opt"])
        self.num_updates = int(state["num_updates"])
        self.sft_avg, self.sft_count = float(state.get("sft_avg", 0.0)), int(state.get("sft_count", 0))
        p = state["pending"]
        self.pending = None if p is None else {k: (v.to(self.device) if torch.is_tensor(v) else v)
                                               for k, v in p.items()}

    def parameters(self):
        return [*self.f1.parameters(), *self.f2.parameters()]


def sft_reward(loss_prev: float, loss_now: float, avg: float, count: int) -> tuple[float, float, int]:
    """The released scheduler pre-training's reward of a selection (run_scheduler_pretrain.sh: loss=sft,
    norm_metrics=true, enable_avg_reward=true, f1_reward_type=add_rm_logp), the same for every pair of it.
    Returns (reward, new running average, new count):
        b = (L_prev - L_now) / max(L_prev, L_now)                       bandit_utils.py lines 40-42 (norm_metrics)
        b = 0.5 avg + 0.5 b   when count > 0                            lines 45-46 (enable_avg, avg_weight 0.5)
        count += 1;  avg += (b - avg) / count                           lines 49-50 (a running mean of the b's)
        y = 0.5 sigmoid(50 b + 0.5) + 0.5 sigmoid(sigmoid(0.5))         scheduler.py lines 33-48 (add_rm_logp, beta 0.5)
    with L the batch's mean SFT loss -log pi(chosen | prompt) (trainers_dist.py lines 416, 789), L_prev at the step
    the pairs were chosen and L_now at the next one. The sample term is a constant: under loss=sft the released
    code passes rm = -loss = log pi(chosen) and p = log pi(chosen) (trainers_dist.py lines 572, 783-784), both
    min-max normalised over the batch (bandit_utils.py lines 117-119), so 0.5 rm + 0.5 (1 - p) = 0.5
    (scheduler.py line 40), then the sigmoid twice (lines 44 and 48). max(L_prev, L_now) = 0 gives b = 0."""
    top = max(loss_prev, loss_now)
    b = (loss_prev - loss_now) / top if top != 0 else 0.0
    if count > 0:
        b = 0.5 * avg + 0.5 * b
    count += 1
    avg = avg + (b - avg) / count
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))
    return 0.5 * sig(50.0 * b + 0.5) + 0.5 * sig(sig(0.5)), avg, count


def read_scheduler_file(path, flag: str = "--sams-scheduler") -> dict:
    """The contents of a SamsScheduler.save_weights file; one ConfigError naming `flag` when it is missing or is
    not one."""
    from pathlib import Path

    from runlog import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"--{flag.lstrip('-')}: no such file {path} (a scheduler file written by "
                          f"alignment.train_dpo --sams-pretrain-only or by a --selector sams run: sams_scheduler.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file is the same user error)
        raise ConfigError(f"--{flag.lstrip('-')}: {path} is not a SamS scheduler file ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != SCHEDULER_FORMAT:
        raise ConfigError(f"--{flag.lstrip('-')}: {path} is not a SamS scheduler file (no format {SCHEDULER_FORMAT!r})")
    return state
