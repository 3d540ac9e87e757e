"""The project's vocabulary: one canonical name per method, in every package (DESIGN.md section 2).

    python -m bandit.vocabulary              # the table: name, family, aliases, where each package implements it
    python -m bandit.vocabulary --markdown   # the same table as the README shows it
    python -m bandit.vocabulary --sampler mixp       # prints mix_p (shell scripts use this); unknown: exit 2

Two families:
- pair samplers decide how the two responses of a preference pair are drawn;
- selectors decide which pairs of a fixed dataset get gradient.

Aliases (the seed repositories' names, and this project's older ones) are accepted wherever a name is read,
on every command line and in old logs, and are always written back as the canonical name. This module is plain
data: importing it loads neither torch nor the Hugging Face stack, so analysis/ and paper_figures/ read it too.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from runlog import ConfigError

PAIR_SAMPLER = "pair sampler"
SELECTOR = "selector"
FAMILIES = (PAIR_SAMPLER, SELECTOR)
PACKAGES = ("bandit", "alignment")


@dataclass(frozen=True)
class Method:
    name: str                      # the canonical name: logs, figures and tables use this one
    family: str                    # PAIR_SAMPLER or SELECTOR
    description: str               # one line
    aliases: tuple[str, ...] = ()  # also accepted as input
    bandit: str | None = None      # "module:attribute" of the bandit's implementation (None: not in the bandit)
    alignment: str | None = None   # "module:attribute" of the LLM implementation (None: bandit only)

    def where(self, package: str) -> str | None:
        return getattr(self, package)


METHODS = (
    # pair samplers
    Method("offline", PAIR_SAMPLER, "both responses from pi_ref: the fixed data of vanilla DPO", ("ref", "vanilla"),
           bandit="bandit.spec:offline", alignment="alignment.generation.samplers:sampler_spec"),
    Method("unif", PAIR_SAMPLER, "uniform over all ordered pairs: offline with a uniform pi_ref (the paper's vanilla "
           "DPO)", bandit="bandit.spec:unif"),
    Method("on_policy", PAIR_SAMPLER, "both responses from the current policy pi", ("online",),
           bandit="bandit.spec:on_policy", alignment="alignment.generation.samplers:sampler_spec"),
    Method("gshf", PAIR_SAMPLER, "hybrid GSHF: one response from pi_ref, the other from pi",
           bandit="bandit.spec:gshf", alignment="alignment.generation.samplers:sampler_spec"),
    Method("mix_r", PAIR_SAMPLER, "DPO-Mix-R: weight 2 + e^Dr + e^-Dr from the true rewards (an oracle)",
           bandit="bandit.spec:mix_r"),
    Method("mix_p", PAIR_SAMPLER, "DPO-Mix-P: weight 2 + e^Dh + e^-Dh of the implicit reward h; in an LLM, per-token "
           "fused logits (1+a) l_pi - a l_ref and (1-a) l_pi + a l_ref", ("mixp",),
           bandit="bandit.spec:mix_p", alignment="alignment.generation.samplers:sampler_spec"),
    Method("mix_p_star", PAIR_SAMPLER, "DPO-Mix-P*: mix_p with each weight capped at Mix-R's largest (an oracle cap)",
           bandit="bandit.samplers:mix_p_star"),
    Method("mix_p_seq", PAIR_SAMPLER, "Mix-P at the sequence level: candidates from pi, resampled with weights "
           "(pi/pi_ref)^(+-a) (runs on vLLM)", ("mixp_seq",), alignment="alignment.generation.samplers:sampler_spec"),
    Method("borda", PAIR_SAMPLER, "AE-Borda: fresh pairs for the contexts whose Borda score is most uncertain "
           "(optimistic policy response vs a reference response)",
           bandit="bandit.selectors:Borda", alignment="alignment.selection.borda:select_rows"),
    # selectors
    Method("all", SELECTOR, "every pair of the dataset gets gradient (no selection)", ("none", "full", "unif"),
           bandit="bandit.selectors:All", alignment="alignment.selection.batch:SELECTORS"),
    Method("random_subset", SELECTOR, "a random share of each candidate batch: SamS's control",
           bandit="bandit.selectors:RandomSubset", alignment="alignment.selection.batch:random_indices"),
    Method("reward_gap", SELECTOR, "difficulty (Qi et al.): keep once the pairs with the smallest signed implicit-"
           "reward gap under a DPO model trained on all pairs",
           bandit="bandit.selectors:RewardGap", alignment="alignment.selection.scores:implicit_reward_margins"),
    Method("reward_gap_step", SELECTOR, "reward_gap re-scored every step with the current policy",
           bandit="bandit.selectors:RewardGapStep"),
    Method("us", SELECTOR, "uncertainty sampling: the pairs whose implicit-reward margin is most uncertain",
           bandit="bandit.selectors:US", alignment="alignment.selection.scores:us_scores"),
    Method("ae", SELECTOR, "active exploration (AE-DPO): the widest optimistic-minus-pessimistic value of a pair",
           bandit="bandit.selectors:AE", alignment="alignment.selection.scores:ae_scores"),
    Method("sams", SELECTOR, "SamS: exploitation + exploration networks score each batch, the top K get gradient",
           bandit="bandit.selectors:SamS", alignment="alignment.selection.batch:SamsScheduler"),
)

BY_NAME = {m.name: m for m in METHODS}
_LOOKUP = {(m.family, n): m for m in METHODS for n in (m.name, *m.aliases)}
_WHAT = {PAIR_SAMPLER: "sampler", SELECTOR: "selector"}


def names(family: str, package: str | None = None) -> tuple[str, ...]:
    """Canonical names of a family, in registry order; with `package`, only those that package implements."""
    return tuple(m.name for m in METHODS if m.family == family and (package is None or m.where(package)))


def _listing(family: str, package: str | None) -> str:
    out = []
    for m in METHODS:
        if m.family == family and (package is None or m.where(package)):
            out.append(m.name + (f" (or {', '.join(m.aliases)})" if m.aliases else ""))
    return ", ".join(out)


def lookup(name: str, family: str, package: str | None = None, field: str = "--sampler",
           allowed: tuple[str, ...] | None = None) -> Method:
    """The method called `name` (canonical or alias) in `family`; one ConfigError naming `field` otherwise.

    `package` limits the names to those that package implements; `allowed` (canonical names) narrows further,
    for entry points that run only part of a family (the error then lists just those)."""
    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {FAMILIES}")
    what = _WHAT[family]
    m = _LOOKUP.get((family, str(name).strip()))
    if m is not None and allowed is not None and m.name not in allowed:
        raise ConfigError(f"{field}: {what} {name!r} is not available here; known: {', '.join(allowed)}")
    if m is not None and package is not None and not m.where(package):
        other = next(p for p in PACKAGES if p != package)
        raise ConfigError(f"{field}: {m.name} is a {other}-only {what} ({m.description}); {package} runs: "
                          f"{_listing(family, package)}")
    if m is None:
        known = ", ".join(allowed) if allowed is not None else _listing(family, package)
        raise ConfigError(f"{field}: unknown {what} {name!r}; known: {known}")
    return m


def canonical(name: str, family: str, package: str | None = None, field: str = "--sampler",
              allowed: tuple[str, ...] | None = None) -> str:
    """The canonical name of `name` (see lookup)."""
    return lookup(name, family, package, field, allowed).name


def canonical_list(spec: str, family: str, package: str | None = None, field: str = "--samplers",
                   allowed: tuple[str, ...] | None = None) -> list[str]:
    """A comma-separated list of names -> canonical names; empty lists and repeats (aliases included) are errors."""
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ConfigError(f"{field}: give at least one of {', '.join(allowed or names(family, package))}")
    out = [canonical(s, family, package, field, allowed) for s in items]
    for c in set(out):
        if out.count(c) > 1:
            raise ConfigError(f"{field}: {_WHAT[family]} {c} is listed twice in {spec!r}")
    return out


def normalise(name, family: str | None = None):
    """For reading logs: an alias (older logs) becomes its canonical name; anything else (a free --label, None)
    is returned as it is. Without `family`, selectors are tried first, then pair samplers."""
    if not isinstance(name, str):
        return name
    for fam in ((family,) if family else (SELECTOR, PAIR_SAMPLER)):
        m = _LOOKUP.get((fam, name))
        if m is not None:
            return m.name
    return name


def table(markdown: bool = False) -> str:
    """The vocabulary as a table (README's is the markdown form; tests check they agree)."""
    head = ("name", "family", "aliases", "bandit", "alignment", "what")
    rows = [(m.name, m.family, ", ".join(m.aliases), m.bandit or "-", m.alignment or "-", m.description)
            for m in METHODS]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [f"`{r[0]}`", r[1], ", ".join(f"`{a}`" for a in r[2].split(", ") if a),
                     *(f"`{x}`" if x != "-" else "-" for x in r[3:5]), r[5]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:-1])]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths) + ("-" * 4,))] + [fmt(r) for r in rows])


def main(argv=None) -> None:
    from runlog import ArgParser

    parser = ArgParser(description="The project's sampler and selector names, their aliases, and where each "
                                   "package implements them.")
    parser.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    parser.add_argument("--sampler", metavar="NAME", help="print the canonical name of this pair sampler")
    parser.add_argument("--selector", metavar="NAME", help="print the canonical name of this selector")
    args = parser.parse_args(argv)
    if args.sampler is not None or args.selector is not None:
        try:
            for name, family, flag in ((args.sampler, PAIR_SAMPLER, "--sampler"), (args.selector, SELECTOR, "--selector")):
                if name is not None:
                    print(canonical(name, family, field=flag))
        except ConfigError as e:
            parser.error(str(e))
        return
    sys.stdout.write(table(args.markdown) + "\n")


if __name__ == "__main__":
    main()
