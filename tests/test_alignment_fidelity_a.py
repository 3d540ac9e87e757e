"""Issue 12 (helper A): each method as its authors define it. The bandit's AE-Borda widths (per-response widths
summed, as AE-Borda's code sums the two responses' dropout standard deviations), TRL's loss types through
--loss, and DPO training with the model's dropout on (AE / US)."""
import math

import pytest
import torch

from bandit.envs import LinearEnv, TabularEnv
from bandit.offline import CountWidth, DesignWidth, OfflineSim, make_dataset
from bandit.selectors import SelectorConfig, borda_widths, make_selector

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ------------------------------------------------------------------------------------ bandit AE-Borda widths

def test_borda_widths_are_response_widths_summed_tabular():
    """Counts: one context, A = 4; pairs (0, 1) twice and (0, 2) once trained on, so n(y) = 3, 2, 1, 0 and
    s(y) = 1 / sqrt(1 + n(y)) = 1/2, 1/sqrt 3, 1/sqrt 2, 1; w(y, y') = s(y) + s(y') (y = y' too)."""
    unc = CountWidth(1, 1, 4, "cpu")
    x = torch.zeros(1, 3, dtype=torch.long)
    unc.add(x, torch.tensor([[0, 1, 0]]), torch.tensor([[1, 0, 2]]), torch.ones(1, 3, dtype=torch.bool))
    s = [1 / 2, 1 / math.sqrt(3), 1 / math.sqrt(2), 1.0]
    w = borda_widths(unc, 1, 1, 4, "cpu")
    assert w.shape == (1, 1, 4, 4)
    for y in range(4):
        for y2 in range(4):
            assert w[0, 0, y, y2].item() == pytest.approx(s[y] + s[y2], abs=1e-15)


def test_borda_widths_are_response_widths_summed_linear():
    """Design matrix: s(x, y) = ||phi(x, y) - mean_y' phi(x, y')||_{V^-1}, written out with numpy-free loops."""
    env = LinearEnv.from_seeds([0], contexts=2, actions=3, dim=4, beta=1.0)
    unc = DesignWidth(env.features, lam=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, (1, 5), generator=g)
    unc.add(x, torch.randint(3, (1, 5), generator=g), torch.randint(3, (1, 5), generator=g),
            torch.ones(1, 5, dtype=torch.bool))
    phi, Vinv = env.features[0], torch.linalg.inv(unc.V[0])
    w = borda_widths(unc, 1, 2, 3, "cpu")
    for e in range(2):
        centred = phi[e] - phi[e].mean(0)
        s = [math.sqrt(float(c @ Vinv @ c)) for c in centred]
        for y in range(3):
            for y2 in range(3):
                assert w[0, e, y, y2].item() == pytest.approx(s[y] + s[y2], rel=1e-12)


def test_borda_selector_uses_the_summed_widths(monkeypatch):
    import bandit.selectors as sel_mod

    env = TabularEnv.from_seeds([0, 1], contexts=2, actions=5, beta=2.0)
    data = make_dataset(env, [0, 1], 50, tag="k")
    sim = OfflineSim(env, data, 3, 4, 0.1, torch.Generator().manual_seed(0))
    sel = make_selector("borda", SelectorConfig(ratio=0.5))
    sel.setup(sim)
    seen = {}
    real = sel_mod.borda_pick

    def spy(h, width, *a, **k):
        seen["width"] = width
        return real(h, width, *a, **k)

    monkeypatch.setattr(sel_mod, "borda_pick", spy)
    sel.batch(sim)
    s = sim.unc.response_width(torch.arange(2).repeat_interleave(5).expand(2, -1),
                               torch.arange(5).repeat(2).expand(2, -1)).reshape(2, 2, 5)
    torch.testing.assert_close(seen["width"], s[..., :, None] + s[..., None, :], rtol=0, atol=0)
