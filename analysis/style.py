"""One visual language for every figure of the project: a fixed colour and marker per method, one font
setup, and atomic PNG/PDF saving.

Colours come from seaborn's "colorblind" palette (hex codes spelled out, so importing this needs no seaborn).
Keys are the canonical method names (bandit/vocabulary.py; analysis.load writes older names back as these), and
the legend order is the registry's. The pipeline's samplers and the bandit samplers of the same construction
share a colour, so bandit and LLM figures read alike: offline = unif (both responses from pi_ref, uniform in the
bandit), on_policy, gshf, mix_p; mix_p_seq, mix_r and mix_p_star have their own.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bandit.vocabulary import METHODS

# legend and table order: the vocabulary's (pair samplers, baselines first, then the selectors)
SAMPLER_ORDER = tuple(m.name for m in METHODS)

SAMPLER_COLORS = {
    "offline": "#949494", "unif": "#949494",          # grey: the baseline
    "on_policy": "#0173b2",                           # blue
    "gshf": "#029e73",                                # green
    "mix_p": "#d55e00",                               # vermillion
    "mix_p_seq": "#de8f05",                           # orange
    "mix_r": "#cc78bc",                               # pink
    "mix_p_star": "#ca9161",                          # tan
    "borda": "#56b4e9",                               # sky blue (online AE-Borda, both packages)
}
# The selection methods (offline regime) are drawn in figures of their own, so they reuse the palette, distinct
# among themselves: the baselines grey (all data) and black (random_subset, SamS's control).
SAMPLER_COLORS |= {
    "all": "#949494", "random_subset": "#000000", "sams": "#cc78bc", "us": "#0173b2", "ae": "#029e73",
    "reward_gap": "#d55e00", "reward_gap_step": "#de8f05",
}
OTHER_COLORS = ("#fbafe4", "#ece133")  # the palette's unused rest, in turn, for samplers not named above
SAMPLER_MARKERS = {"offline": "o", "unif": "o", "on_policy": "s", "gshf": "^", "mix_p": "D", "mix_p_seq": "v",
                   "mix_r": "P", "mix_p_star": "X", "borda": "*",
                   "all": "o", "random_subset": "s", "sams": "^", "us": "v", "ae": "D", "reward_gap": "X",
                   "reward_gap_step": "P"}

# font sizes shared by every figure (matplotlib.pyplot.rc_context(RC))
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9, "xtick.labelsize": 10,
      "ytick.labelsize": 10, "figure.dpi": 100}


def sampler_key(sampler: str):
    """Sort key: SAMPLER_ORDER, then the others alphabetically."""
    if sampler in SAMPLER_ORDER:
        return (0, SAMPLER_ORDER.index(sampler), "")
    return (1, 0, sampler)


def sampler_colors(samplers) -> dict:
    """A colour per sampler: SAMPLER_COLORS, then OTHER_COLORS in turn for samplers it does not name."""
    others = iter(OTHER_COLORS * (1 + len(list(samplers))))
    return {s: SAMPLER_COLORS[s] if s in SAMPLER_COLORS else next(others) for s in sorted(samplers, key=sampler_key)}


def save_figure(fig, path) -> None:
    """Write `fig` to `path` (format from its suffix) atomically: a temporary file, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=path.suffix.lstrip("."))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
