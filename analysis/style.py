"""One visual language for every figure of the project: a fixed colour and marker per method, one font
setup, and atomic PNG/PDF saving.

Colours come from seaborn's "colorblind" palette (seaborn.color_palette), looked up on first use of
SAMPLER_COLORS, OTHER_COLORS or sampler_colors: importing this module loads neither seaborn nor matplotlib, so
tables and command lines that only need SAMPLER_ORDER stay quick. Keys are the canonical method names (bandit/vocabulary.py; analysis.load writes older names back as these), and
the legend order is the registry's. The pipeline's samplers and the bandit samplers of the same construction
share a colour, so bandit and LLM figures read alike: offline = unif (both responses from pi_ref, uniform in the
bandit), on_policy, gshf, mix_p; mix_p_seq, mix_r and mix_p_star have their own.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from bandit.vocabulary import METHODS

# legend and table order: the vocabulary's (pair samplers, baselines first, then the selectors)
SAMPLER_ORDER = tuple(m.name for m in METHODS)

PALETTE = "colorblind"
# Each method's colour: a position in seaborn's colorblind palette (0 blue, 1 orange, 2 green, 3 vermillion, 4 pink,
# 5 tan, 6 light pink, 7 grey, 8 yellow, 9 sky blue) or a colour of its own.
_COLOR_OF = {
    "offline": 7, "unif": 7,                          # grey: the baseline
    "on_policy": 0,                                   # blue
    "gshf": 2,                                        # green
    "mix_p": 3,                                       # vermillion
    "mix_p_seq": 1,                                   # orange
    "mix_r": 4,                                       # pink
    "mix_p_star": 5,                                  # tan
    "borda": 9,                                       # sky blue (online AE-Borda, both packages)
    # The selection methods (offline regime) are drawn in figures of their own, so they reuse the palette,
    # distinct among themselves: the baselines grey (all data) and black (random_subset, SamS's control).
    "all": 7, "random_subset": "#000000", "sams": 4, "us": 0, "ae": 2, "reward_gap": 3, "reward_gap_step": 1,
}
_OTHER = (6, 8)  # the palette's unused rest, in turn, for samplers not named above


@functools.cache
def _palette() -> tuple[dict, tuple]:
    import seaborn

    hexes = seaborn.color_palette(PALETTE).as_hex()
    colors = {name: c if isinstance(c, str) else hexes[c] for name, c in _COLOR_OF.items()}
    return colors, tuple(hexes[i] for i in _OTHER)


def __getattr__(name):
    # SAMPLER_COLORS (method -> hex colour) and OTHER_COLORS, made from the palette on first use
    if name == "SAMPLER_COLORS":
        return _palette()[0]
    if name == "OTHER_COLORS":
        return _palette()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    known, other = _palette()
    others = iter(other * (1 + len(list(samplers))))
    return {s: known[s] if s in known else next(others) for s in sorted(samplers, key=sampler_key)}


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
