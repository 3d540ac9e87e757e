"""SamplerDPOConfig: TRL's DPOConfig plus the fields of our loss and of the batch selectors, checked in
__post_init__ as TRL's DPOConfig checks its own (a bad value is one ConfigError naming the train_dpo flag).

    loss                  sigmoid (TRL's DPO loss), rev_kl (soft labels; alignment/training/losses.py), or any other
                          TRL loss_type (hinge, ipo, ...: losses.TRAIN_LOSSES), which becomes TRL's loss_type
    margin_scale          rev_kl: k of the soft label q = sigmoid(k (r_chosen - r_rejected))
    selector              all, random_subset, sams, us, ae (aliases accepted, the canonical name kept)
    select_ratio          the fraction K / n of each global candidate batch that gets gradient
    sams_mode, sams_pretrain_steps, sams_hidden, sams_lr, sams_explore_weight     the SamS scheduler's settings
    sams_normalisation    sams / random_subset: matched (sum over the K selected / K) or anchor (the released code:
                          unselected losses detached, mean over all n candidates; K / n of matched's gradient)
    sams_update, sams_scheduler, sams_pretrain_reward, sams_pretrain_only      SamS: online or frozen scheduler,
                          a scheduler file to start from, the pre-training reward (sft, the released one, or dpo),
                          pre-training alone (writes the scheduler file, no DPO)
    passes, dropout, gamma                                                         us / ae: Monte Carlo dropout

The field names are alignment.train_dpo's flag names (SAMPLER_FIELDS), so the stage copies them over by name and an
error names the flag the user typed. rev_kl and the selectors rebuild TRL's plain sigmoid loss per pair: with
either, TRL's loss_type must stay ["sigmoid"] without ld_alpha, use_weighting or another f_divergence_type, and a
selector takes --loss sigmoid or rev_kl only. Any other loss is TRL's own, set through loss_type = [loss].

Importing this module imports trl (slow); the stages import it when they train, not for --help.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from alignment.selection.batch import SAMS_MODES, SELECTORS
from alignment.selection.batch import SAMS_NORMALISATIONS, SAMS_REWARDS, SAMS_UPDATES, read_scheduler_file
from alignment.training.losses import LOSSES, TRAIN_LOSSES
from bandit.vocabulary import SELECTOR, canonical
from runlog import ConfigError, check_number, check_positive, check_ratio

# TRL 1.16's loss types with an f-divergence form (DPOTrainer.__init__)
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
SAMPLER_FIELDS = ("loss", "margin_scale", "selector", "select_ratio", "sams_mode", "sams_pretrain_steps", "sams_hidden",
                  "sams_lr", "sams_explore_weight", "passes", "dropout", "gamma")
SAMPLER_FIELDS += ("sams_normalisation", "sams_update", "sams_scheduler", "sams_pretrain_reward", "sams_pretrain_only")


def check_sampler_fields(cfg) -> None:
    """Check the SAMPLER_FIELDS of `cfg` (a SamplerDPOConfig, or train_dpo's Args: the same names); the selector
    becomes its canonical name. ConfigError names the flag."""
    if cfg.loss not in TRAIN_LOSSES:
        raise ConfigError(f"--loss: unknown loss {cfg.loss!r}; known: {', '.join(TRAIN_LOSSES)} (rev_kl is ours, the "
                          f"others TRL's loss_type)")
    check_positive("margin-scale", cfg.margin_scale)
    cfg.selector = canonical(cfg.selector, SELECTOR, "alignment", "--selector", allowed=SELECTORS)
    if cfg.selector != "all" and cfg.loss not in LOSSES:
        raise ConfigError(f"--selector: {cfg.selector} rebuilds the per-pair loss, which it has for --loss "
                          f"{' or '.join(LOSSES)} only, not {cfg.loss}; use --selector all with TRL's other losses")
    check_ratio("select-ratio", cfg.select_ratio)
    if cfg.sams_mode not in SAMS_MODES:
        raise ConfigError(f"--sams-mode: unknown mode {cfg.sams_mode!r}; known: {', '.join(SAMS_MODES)}")
    check_number("sams-pretrain-steps", cfg.sams_pretrain_steps, low=0, integer=True)
    if cfg.sams_pretrain_steps and cfg.selector != "sams":
        raise ConfigError(f"--sams-pretrain-steps: pre-trains the SamS scheduler; it needs --selector sams, "
                          f"not {cfg.selector}")
    check_sams_fields(cfg)
    check_positive("sams-hidden", cfg.sams_hidden, integer=True)
    check_positive("sams-lr", cfg.sams_lr)
    check_number("sams-explore-weight", cfg.sams_explore_weight, low=0)
    check_positive("passes", cfg.passes, integer=True)
    if not (0 <= cfg.dropout < 1):
        raise ConfigError(f"--dropout: must be in [0, 1), got {cfg.dropout}")
    check_positive("gamma", cfg.gamma)


def check_trl_loss(loss: str, label_smoothing: float = 0.0, f_divergence_type: str = "reverse_kl",
                   use_weighting: bool = False) -> None:
    """What TRL's DPOTrainer would reject for this --loss, as a ConfigError naming the flag (train_dpo checks it
    before anything is written, from its dpo: mapping)."""
    if loss == "exo_pair" and not label_smoothing > 0:
        raise ConfigError("--loss: exo_pair needs label_smoothing > 0 in the recipe's dpo: mapping (the EXO "
                          "paper's 1e-3)")
    if f_divergence_type != "reverse_kl" and loss not in F_DIVERGENCE_LOSSES:
        raise ConfigError(f"--loss: {loss} has no f-divergence form (TRL: only {', '.join(F_DIVERGENCE_LOSSES)}); "
                          f"remove f_divergence_type from the dpo: mapping")
    if use_weighting and loss in ("aot", "aot_unpaired"):
        raise ConfigError(f"--loss: {loss} sorts the pairs, so TRL has no use_weighting for it; remove "
                          f"use_weighting from the dpo: mapping")


def check_sams_fields(cfg) -> None:
    """The SamS normalisation / update / scheduler-file / pre-training flags (module doc); ConfigError names the flag."""
    if cfg.sams_normalisation not in SAMS_NORMALISATIONS:
        raise ConfigError(f"--sams-normalisation: unknown normalisation {cfg.sams_normalisation!r}; known: "
                          f"{', '.join(SAMS_NORMALISATIONS)}")
    if cfg.sams_normalisation != "matched" and cfg.selector in ("us", "ae"):  # (for all, K = n: both coincide)
        raise ConfigError(f"--sams-normalisation: applies to --selector sams and random_subset, not {cfg.selector}")
    if cfg.sams_update not in SAMS_UPDATES:
        raise ConfigError(f"--sams-update: unknown update {cfg.sams_update!r}; known: {', '.join(SAMS_UPDATES)}")
    if cfg.sams_pretrain_reward not in SAMS_REWARDS:
        raise ConfigError(f"--sams-pretrain-reward: unknown reward {cfg.sams_pretrain_reward!r}; known: "
                          f"{', '.join(SAMS_REWARDS)}")
    for flag, used in (("sams-scheduler", cfg.sams_scheduler), ("sams-pretrain-only", cfg.sams_pretrain_only),
                       ("sams-update", cfg.sams_update != "online")):
        if used and cfg.selector != "sams":
            raise ConfigError(f"--{flag}: a SamS scheduler setting; it needs --selector sams, not {cfg.selector}")
    if cfg.sams_scheduler:
        read_scheduler_file(cfg.sams_scheduler, "--sams-scheduler")
    if cfg.sams_update == "frozen" and not (cfg.sams_scheduler or cfg.sams_pretrain_steps):
        raise ConfigError("--sams-update: frozen keeps the scheduler it is given; pass --sams-scheduler FILE (or "
                          "--sams-pretrain-steps N), else it would score with its random initial weights")
    if cfg.sams_pretrain_only and not cfg.sams_pretrain_steps:
        raise ConfigError("--sams-pretrain-only: needs --sams-pretrain-steps N > 0 (the batches to pre-train on)")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class SamplerDPOConfig(DPOConfig):
    """DPOConfig with the rev_kl loss and the batch selectors' settings (module doc); SamplerDPOTrainer reads them
    from here. Defaults are alignment.train_dpo's."""

    loss: str = field(default="sigmoid", metadata=_help("sigmoid: DPO on hard labels; rev_kl: soft labels "
                                                        "sigmoid(margin_scale (r_chosen - r_rejected)); any other of "
                                                        "losses.TRAIN_LOSSES: TRL's loss_type of that name"))
    margin_scale: float = field(default=1.0, metadata=_help("rev_kl: margin scale k of the soft label"))
    selector: str = field(default="all", metadata=_help("which pairs of each batch get gradient: all, "
                                                        "random_subset, sams, us, ae"))
    select_ratio: float = field(default=0.5, metadata=_help("selectors: K / n of each global candidate batch"))
    sams_mode: str = field(default="topk", metadata=_help("sams: topk or softmax"))
    sams_pretrain_steps: int = field(default=0, metadata=_help("sams: scheduler pre-training batches"))
    sams_hidden: int = field(default=128, metadata=_help("sams: width of both MLPs"))
    sams_lr: float = field(default=1e-3, metadata=_help("sams: Adam learning rate of both MLPs"))
    sams_explore_weight: float = field(default=0.1, metadata=_help("sams: weight of the exploration net's score"))
    sams_normalisation: str = field(default="matched", metadata=_help("sams / random_subset: matched or anchor"))
    sams_update: str = field(default="online", metadata=_help("sams: online or frozen scheduler"))
    sams_scheduler: str | None = field(default=None, metadata=_help("sams: scheduler file to start from"))
    sams_pretrain_reward: str = field(default="sft", metadata=_help("sams: pre-training reward, sft or dpo"))
    sams_pretrain_only: bool = field(default=False, metadata=_help("sams: pre-train the scheduler, no DPO"))
    passes: int = field(default=5, metadata=_help("us / ae: Monte Carlo dropout passes"))
    dropout: float = field(default=0.05, metadata=_help("us / ae: dropout probability of the passes"))
    gamma: float = field(default=2.0, metadata=_help("ae: width multiplier of the confidence bound"))

    def __post_init__(self):
        check_sampler_fields(self)
        self.sams_pretrain_steps = int(self.sams_pretrain_steps)
        if self.loss != "rev_kl":  # TRL's own loss, by name
            given = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
            if given not in (["sigmoid"], [self.loss]):
                raise ConfigError(f"--loss: the loss is set by --loss ({self.loss}); remove loss_type {given} from "
                                  f"the recipe's dpo: mapping")
            self.loss_type = [self.loss]
        check_trl_loss(self.loss, self.label_smoothing, self.f_divergence_type, self.use_weighting)
        super().__post_init__()
        plain = self.loss_type == ["sigmoid"] and self.ld_alpha is None and not self.use_weighting \
            and self.f_divergence_type == "reverse_kl"
        if self.loss == "rev_kl" and not plain:
            raise ConfigError("--loss: rev_kl builds on TRL's plain sigmoid loss; remove loss_type, ld_alpha, "
                              "use_weighting and f_divergence_type from the recipe's dpo: mapping")
        if self.selector != "all" and not plain:
            raise ConfigError("--selector: the selectors rebuild TRL's plain sigmoid (or rev_kl) loss per pair; "
                              "remove loss_type, ld_alpha, use_weighting and f_divergence_type from the recipe's "
                              "dpo: mapping")


def lora_config(r: int, alpha: int, dropout: float, targets: str):
    """peft's LoraConfig for a causal LM (None for r = 0: full fine-tuning); targets "all-linear" or
    comma-separated module names."""
    if not r:
        return None
    from peft import LoraConfig

    modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")
