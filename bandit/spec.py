"""The shared sampler interface (DESIGN.md section 3): every pair sampler an LLM can run is a product mixture
of geometric tilts. Plain data: the bandit computes a spec's exact pair weight (bandit/samplers.py,
`spec_weights`), and alignment builds its generation plan from the same spec (alignment/generate.py).

A *tilt* is a distribution over the responses y of a context x,

    log P(y|x) = pi * log pi(y|x) + ref * log pi_ref(y|x) + h * h(x,y) + r * r(x,y) - log Z,

with h = beta log(pi / pi_ref) the implicit reward (so a tilt in h is one in pi and pi_ref, written in the
bandit's terms) and r the true reward (an oracle: bandit only). All coefficients 0 is the uniform distribution.
A *spec* draws a pair by picking a branch b with probability q_b, then y ~ P_b and y' ~ Q_b independently;
the pair weight over ordered pairs is symmetrised (a pair has no order):

    w(y, y') = sum_b q_b (P_b(y) Q_b(y') + Q_b(y) P_b(y')) / 2.

Branch probabilities are either given (`prob`, summing to 1) or *natural*: proportional to the branch's
unnormalised mass Z_P Z_Q, so the weight is the sum of the unnormalised products. The paper's bandit Mix-P is
natural: branches (e^h, e^-h) and (uniform, uniform) give exactly 2 + e^Dh + e^-Dh. Sampling temperature T
divides the pi, ref (and h) coefficients by T (`at_temperature`), as dividing fused logits by T does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Tilt:
    pi: float = 0.0
    ref: float = 0.0
    h: float = 0.0
    r: float = 0.0

    def at_temperature(self, temperature: float) -> "Tilt":
        """Sampling at temperature T from this tilt's logits: pi, ref and h coefficients over T."""
        return replace(self, pi=self.pi / temperature, ref=self.ref / temperature, h=self.h / temperature)

    @property
    def llm_realisable(self) -> bool:
        """A per-token fusion of the policy's and the reference's logits can draw it (exact for one-token responses)."""
        return self.h == 0 and self.r == 0 and (self.pi, self.ref) != (0.0, 0.0)

    def logit_weights(self) -> dict[str, float]:
        """Model -> weight of its logits in the per-token fusion that realises this tilt (models of weight 0 left out)."""
        if not self.llm_realisable:
            raise ValueError(f"{self} is not a fusion of pi and pi_ref (it needs h, r, or is uniform over responses)")
        return {k: v for k, v in (("policy", self.pi), ("ref", self.ref)) if v != 0}


UNIFORM = Tilt()
POLICY = Tilt(pi=1.0)
REF = Tilt(ref=1.0)


@dataclass(frozen=True)
class Branch:
    first: Tilt
    second: Tilt
    prob: float | None = None  # None: natural (proportional to Z_first Z_second)


@dataclass(frozen=True)
class PairSpec:
    name: str
    branches: tuple[Branch, ...]

    def __post_init__(self):
        natural = {b.prob is None for b in self.branches}
        if not self.branches or len(natural) != 1:
            raise ValueError(f"{self.name}: give every branch a probability, or none (natural probabilities)")
        if not self.natural:
            if any(not 0 <= b.prob <= 1 for b in self.branches) or abs(sum(b.prob for b in self.branches) - 1) > 1e-12:
                raise ValueError(f"{self.name}: branch probabilities must lie in [0, 1] and sum to 1")

    @property
    def natural(self) -> bool:
        return self.branches[0].prob is None

    @property
    def tilts(self) -> tuple[Tilt, ...]:
        """The distinct tilts, in order of appearance: what a generator has to draw from."""
        return tuple(dict.fromkeys(t for b in self.branches for t in (b.first, b.second)))

    @property
    def llm_realisable(self) -> bool:
        return not self.natural and all(t.llm_realisable for t in self.tilts)

    def at_temperature(self, temperature: float) -> "PairSpec":
        return replace(self, branches=tuple(replace(b, first=b.first.at_temperature(temperature),
                                                    second=b.second.at_temperature(temperature))
                                            for b in self.branches))


BASES = ("pi", "pi_ref")


def mix_p_llm(alpha: float = 0.5, p: float | None = 1.0, name: str = "mix_p", base: str = "pi") -> PairSpec:
    """The LLM's Mix-P: with probability p the fused pair (pi^(1+a) pi_ref^-a, pi^(1-a) pi_ref^a), else (with the
    on-policy pair on) an on-policy pair (pi, pi). mix_p_seq draws the same tilts by sequence-level resampling.

    Written against a base measure B (`base`: "pi", the LLM's, or "pi_ref"), the fused tilts are B (pi/pi_ref)^(+-a)
    and the other branch is (B, B). p=None gives the *natural* branch probabilities (proportional to the
    components' unnormalised masses), whose pair weight is B(y) B(y') (2 + e^(a D) + e^(-a D)),
    D = log(pi(y)/pi_ref(y)) - log(pi(y')/pi_ref(y')) = Dh / beta: with base pi_ref uniform and a = beta, the
    paper's bandit mix_p."""
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    b = POLICY if base == "pi" else REF
    plus, minus = Tilt(pi=b.pi + alpha, ref=b.ref - alpha), Tilt(pi=b.pi - alpha, ref=b.ref + alpha)
    if p is None:
        return PairSpec(name, (Branch(plus, minus), Branch(b, b)))
    fused = Branch(plus, minus, p)
    return PairSpec(name, (fused,) if p == 1.0 else (fused, Branch(b, b, 1.0 - p)))


# The named samplers that are product mixtures (mix_p_star's capped weight is not one: bandit only).
# Branch order matters only for the last bit of the bandit's floating-point sums.
offline = PairSpec("offline", (Branch(REF, REF, 1.0),))             # both responses from pi_ref
unif = PairSpec("unif", (Branch(UNIFORM, UNIFORM, 1.0),))           # uniform over pairs
on_policy = PairSpec("on_policy", (Branch(POLICY, POLICY, 1.0),))   # both from pi
gshf = PairSpec("gshf", (Branch(REF, POLICY, 1.0),))                # one from pi_ref, one from pi
mix_r = PairSpec("mix_r", (Branch(Tilt(r=1.0), Tilt(r=-1.0)), Branch(UNIFORM, UNIFORM)))  # 2 + e^Dr + e^-Dr
mix_p = PairSpec("mix_p", (Branch(Tilt(h=1.0), Tilt(h=-1.0)), Branch(UNIFORM, UNIFORM)))  # 2 + e^Dh + e^-Dh

SPECS = {s.name: s for s in (offline, unif, on_policy, gshf, mix_r, mix_p)}
