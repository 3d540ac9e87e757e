"""The bandit entry points (bandit/examples/tabular.py, linear.py) end to end: run folder layout, the
headline Newton-step claim, reproducibility, --rewards, bad input, divergence handling and --help.

Every run is tiny (few seeds, few iterations, small --num-samples) and writes under tmp_path only.
"""
import datetime as dt
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from bandit.examples import linear, tabular
from bandit.metrics import METRICS
from bandit.rates import convergence_order, iterations_to
from tests.conftest import interrupted_exit

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "bandit" / "examples"
TABULAR_PY = EXAMPLES / "tabular.py"
LINEAR_PY = EXAMPLES / "linear.py"
ROW_KEYS = {"setting", "sampler", "seed", "step", *METRICS}
EVENT_KEYS = {"setting", "sampler", "seed", "step", "event", "diverged_at"}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


SCRIPTS = {"tabular": (tabular, TABULAR_PY), "linear": (linear, LINEAR_PY)}


# ----------------------------------------------------------------------------------------------- helpers

def _strict_constant(name):
    raise AssertionError(f"non-JSON constant {name} in a log file")


def load_json(path: Path):
    return json.loads(Path(path).read_text(), parse_constant=_strict_constant)


def load_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl, refusing NaN/Infinity (which json.loads would otherwise accept)."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line, parse_constant=_strict_constant) for line in text.splitlines()]


def metric_rows(rows):
    return [r for r in rows if "event" not in r]


def event_rows(rows):
    return [r for r in rows if "event" in r]


def series(rows, setting, sampler, metric="param_diff") -> dict[int, np.ndarray]:
    """seed -> the metric over steps 0, 1, ... (rows are checked to be in step order)."""
    out = defaultdict(list)
    for r in metric_rows(rows):
        if r["setting"] == setting and r["sampler"] == sampler:
            assert r["step"] == len(out[r["seed"]])
            out[r["seed"]].append(r[metric])
    return {s: np.array(v, dtype=np.float64) for s, v in out.items()}


def run_main(module, argv):
    """Call an entry point in-process; returns what main() returns (the run folder)."""
    return module.main([str(a) for a in argv])


def run_cli(script: Path, argv, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(script), *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def no_hidden(out: Path):
    hidden = [p for p in Path(out).rglob(".*")]
    assert not hidden, f"hidden leftovers in {out}: {hidden}"


def check_run(run_dir: Path, settings, samplers, seeds, iters, plots=False, diverging_ok=False) -> list[dict]:
    """The layout and content every finished run must have; returns its metric rows."""
    run_dir = Path(run_dir)
    files = {p.name for p in run_dir.iterdir()}
    expected = {"run.json", "metrics.jsonl", "summary.json"}
    if plots:
        expected |= {f"{s}.{ext}" for s in settings for ext in ("png", "pdf")}
    assert files == expected
    if plots:
        for s in settings:
            assert (run_dir / f"{s}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (run_dir / f"{s}.pdf").read_bytes()[:5] == b"%PDF-"
    no_hidden(run_dir.parent)

    info = load_json(run_dir / "run.json")
    assert {"config", "seeds", "versions", "git_commit", "started", "finished"} <= set(info)
    assert info["seeds"] == list(seeds)
    assert {"python", "torch", "numpy"} <= set(info["versions"])
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["numpy"] == np.__version__
    assert isinstance(info["git_commit"], str) and info["git_commit"]
    started, finished = dt.datetime.fromisoformat(info["started"]), dt.datetime.fromisoformat(info["finished"])
    assert started <= finished
    assert info["config"]["resolved"]["samplers"] == list(samplers)
    assert list(info["config"]["resolved"]["settings"]) == list(settings)
    summary = load_json(run_dir / "summary.json")
    assert info["summary"] == summary
    assert list(summary) == list(settings)
    for s in settings:
        assert list(summary[s]) == list(samplers)

    rows = load_rows(run_dir)
    for r in metric_rows(rows):
        assert set(r) == ROW_KEYS
        assert r["setting"] in settings and r["sampler"] in samplers and r["seed"] in seeds
        for k in METRICS:
            assert isinstance(r[k], float) and math.isfinite(r[k]), r
    for r in event_rows(rows):
        assert set(r) == EVENT_KEYS and r["event"] == "diverged"
    if not diverging_ok:
        assert not event_rows(rows)
        assert len(rows) == len(settings) * len(samplers) * len(seeds) * (iters + 1)
        for setting in settings:
            for sampler in samplers:
                got = defaultdict(list)
                for r in rows:
                    if r["setting"] == setting and r["sampler"] == sampler:
                        got[r["seed"]].append(r["step"])
                assert got == {seed: list(range(iters + 1)) for seed in seeds}
                assert summary[setting][sampler]["seeds"] == len(seeds)
                assert summary[setting][sampler]["diverged"] == 0
    # iteration 0 is pi = pi_ref: no KL yet
    for r in metric_rows(rows):
        if r["step"] == 0:
            assert r["kl"] == pytest.approx(0.0, abs=1e-12)
    return rows


# ------------------------------------------------------------------------------------------ 1. smoke runs

def test_tabular_smoke_in_process_with_plots(tmp_path):
    out = tmp_path / "out"
    path = run_main(tabular, ["--setting", "both", "--seeds", 2, "--iters", 3, "--num-samples", 64,
                              "--samplers", "unif,mix_p", "--out", out, "--name", "smoke"])
    assert Path(path) == out / "smoke"
    assert [p.name for p in out.iterdir()] == ["smoke"]
    check_run(out / "smoke", ["exact", "empirical"], ["unif", "mix_p"], [0, 1], 3, plots=True)
    cfg = load_json(out / "smoke" / "run.json")["config"]
    assert (cfg["actions"], cfg["contexts"], cfg["beta"], cfg["num_samples"]) == (20, 1, 3.0, 64)


def test_tabular_smoke_all_samplers_default_name(tmp_path, capsys):
    out = tmp_path / "out"
    run_main(tabular, ["--setting", "exact", "--seeds", 2, "--seed", 5, "--iters", 4, "--no-plots", "--out", out])
    samplers = ["unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star"]
    check_run(out / "exact-fixed", ["exact"], samplers, [5, 6], 4)  # default name SETTING-STEP
    printed = capsys.readouterr().out
    for s in samplers:
        assert s in printed  # the summary table


def test_linear_smoke_in_process(tmp_path):
    out = tmp_path / "out"
    run_main(linear, ["--setting", "both", "--seeds", 2, "--iters", 3, "--num-samples", 64, "--dim", 3,
                      "--contexts", 2, "--actions", 4, "--samplers", "unif,mix_p,gshf", "--no-plots", "--out", out])
    check_run(out / "both-fixed", ["exact", "empirical"], ["unif", "mix_p", "gshf"], [0, 1], 3)
    cfg = load_json(out / "both-fixed" / "run.json")["config"]
    assert (cfg["dim"], cfg["contexts"], cfg["actions"]) == (3, 2, 4)


def test_linear_newton_in_process(tmp_path):
    out = tmp_path / "out"
    run_main(linear, ["--setting", "exact", "--step", "newton", "--seeds", 2, "--iters", 3, "--dim", 3,
                      "--contexts", 3, "--actions", 4, "--samplers", "mix_r", "--no-plots", "--out", out])
    rows = check_run(out / "exact-newton", ["exact"], ["mix_r"], [0, 1], 3)
    assert load_json(out / "exact-newton" / "run.json")["config"]["resolved"]["settings"]["exact"]["lr"] is None
    for e in series(rows, "exact", "mix_r").values():
        assert e[-1] < e[0]


@pytest.mark.slow
def test_tabular_subprocess_default_out_under_cwd(tmp_path):
    res = run_cli(TABULAR_PY, ["--setting", "exact", "--seeds", 2, "--iters", 3, "--samplers", "unif,mix_p",
                               "--no-plots"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "runs" / "bandit" / "tabular" / "exact-fixed"
    check_run(run_dir, ["exact"], ["unif", "mix_p"], [0, 1], 3)
    assert str(run_dir) in res.stdout or "exact-fixed" in res.stdout
    info = load_json(run_dir / "run.json")
    assert info["command"][0].endswith("tabular.py")


@pytest.mark.slow
def test_linear_subprocess(tmp_path):
    out = tmp_path / "out"
    res = run_cli(LINEAR_PY, ["--setting", "empirical", "--seeds", 2, "--iters", 3, "--num-samples", 32,
                              "--dim", 2, "--contexts", 2, "--actions", 3, "--samplers", "mix_p_star",
                              "--no-plots", "--out", out, "--name", "lin"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    check_run(out / "lin", ["empirical"], ["mix_p_star"], [0, 1], 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written to the cwd


def test_rerun_with_same_name_replaces_the_old_run(tmp_path):
    out = tmp_path / "out"
    common = ["--setting", "exact", "--iters", 2, "--samplers", "unif", "--no-plots", "--out", out, "--name", "x"]
    run_main(tabular, common + ["--seeds", 3])
    run_main(tabular, common + ["--seeds", 1])
    assert [p.name for p in out.iterdir()] == ["x"]
    check_run(out / "x", ["exact"], ["unif"], [0], 2)


def test_failed_run_leaves_nothing_and_keeps_older_run(tmp_path, monkeypatch):
    import bandit.examples.common as experiment

    out = tmp_path / "out"
    argv = ["--setting", "exact", "--iters", 2, "--seeds", 1, "--samplers", "unif,mix_p", "--no-plots",
            "--out", out, "--name", "x"]
    run_main(tabular, argv)
    before = {p.name: p.read_bytes() for p in (out / "x").iterdir()}

    real, calls = experiment.simulate, []

    def failing(*a, **k):  # the second sampler fails mid-run, after rows of the first were logged
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(experiment, "simulate", failing)
    with interrupted_exit():
        run_main(tabular, argv)
    assert [p.name for p in out.iterdir()] == ["x"]
    assert {p.name: p.read_bytes() for p in (out / "x").iterdir()} == before
    no_hidden(out)
    calls.clear()
    with interrupted_exit():
        run_main(tabular, argv[:-1] + ["fresh"])
    assert [p.name for p in out.iterdir()] == ["x"]


# ------------------------------------------------------------------------ 2. the headline Newton claim

@pytest.fixture(scope="module")
def newton_run(tmp_path_factory, torch_single_thread):
    out = tmp_path_factory.mktemp("newton")
    path = run_main(tabular, ["--setting", "exact", "--step", "newton", "--seeds", 20, "--samplers", "unif,mix_p",
                              "--no-plots", "--out", out])
    rows = check_run(path, ["exact"], ["unif", "mix_p"], list(range(20)), 100)
    return rows, load_json(Path(path) / "summary.json")


def test_newton_mix_p_converges_quadratically(newton_run):
    rows, _ = newton_run
    e = series(rows, "exact", "mix_p")
    assert sorted(e) == list(range(20))
    hits = [iterations_to(x, 1e-8) for x in e.values()]
    assert np.median(hits) <= 6
    orders = np.array([convergence_order(x) for x in e.values()])
    assert (orders >= 1.8).sum() >= 18, orders


def test_newton_unif_converges_linearly(newton_run):
    rows, _ = newton_run
    converged = 0
    for seed, x in series(rows, "exact", "unif").items():
        if math.isfinite(iterations_to(x, 1e-8)):
            converged += 1
            order = convergence_order(x)
            assert math.isfinite(order) and order <= 1.2, (seed, order)
    assert converged >= 1  # otherwise the check above checks nothing


def test_newton_summary_agrees_with_rows(newton_run):
    rows, summary = newton_run
    for sampler in ("unif", "mix_p"):
        e = series(rows, "exact", sampler)
        s = summary["exact"][sampler]
        hits = np.array([iterations_to(x, 1e-8) for x in e.values()])
        orders = np.array([convergence_order(x) for x in e.values()])
        fitted = orders[np.isfinite(orders)]
        assert s["seeds"] == 20 and s["diverged"] == 0 and s["diverged_at"] == [-1] * 20
        assert s["final_param_diff_median"] == pytest.approx(np.median([x[-1] for x in e.values()]), rel=1e-12)
        assert s["converged_seeds"] == int(np.isfinite(hits).sum())
        if np.isfinite(hits).all():
            assert s["iters_to_tol_median"] == pytest.approx(np.median(hits))
        assert len(s["order_per_seed"]) == 20
        for got, want in zip(s["order_per_seed"], orders):
            assert (got is None) if not np.isfinite(want) else got == pytest.approx(want, rel=1e-9)
        assert s["order_median"] == pytest.approx(np.median(fitted), rel=1e-9)
        assert s["quadratic_fraction"] == pytest.approx((fitted >= 1.8).sum() / 20)
        vg = series(rows, "exact", sampler, "value_gap")
        assert s["final_value_gap_median"] == pytest.approx(np.median([x[-1] for x in vg.values()]), rel=1e-9,
                                                            abs=1e-15)
    assert summary["exact"]["mix_p"]["quadratic_fraction"] >= 0.9
    assert summary["exact"]["mix_p"]["iters_to_tol_median"] <= 6


# ---------------------------------------------------------------------------------- 3. reproducibility

def test_same_command_twice_is_byte_identical(tmp_path):
    argv = ["--setting", "both", "--seeds", 2, "--iters", 5, "--num-samples", 64, "--samplers", "unif,mix_p",
            "--no-plots", "--name", "r"]
    run_main(tabular, argv + ["--out", tmp_path / "a"])
    run_main(tabular, argv + ["--out", tmp_path / "b"])
    a, b = tmp_path / "a" / "r", tmp_path / "b" / "r"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    settings = {r["setting"] for r in load_rows(a)}
    assert settings == {"exact", "empirical"}


def test_linear_same_command_twice_is_byte_identical(tmp_path):
    argv = ["--setting", "empirical", "--seeds", 2, "--iters", 3, "--num-samples", 32, "--dim", 2,
            "--contexts", 2, "--actions", 3, "--samplers", "mix_p", "--no-plots", "--name", "r"]
    run_main(linear, argv + ["--out", tmp_path / "a"])
    run_main(linear, argv + ["--out", tmp_path / "b"])
    assert (tmp_path / "a" / "r" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "r" / "metrics.jsonl").read_bytes()


def _values(rows):
    return [tuple(r[k] for k in METRICS) for r in metric_rows(rows)]


def test_different_seed_gives_different_metrics(tmp_path):
    argv = ["--setting", "both", "--seeds", 2, "--iters", 3, "--num-samples", 64, "--samplers", "mix_p",
            "--no-plots", "--name", "r"]
    run_main(tabular, argv + ["--out", tmp_path / "a", "--seed", 0])
    run_main(tabular, argv + ["--out", tmp_path / "b", "--seed", 7])
    ra, rb = load_rows(tmp_path / "a" / "r"), load_rows(tmp_path / "b" / "r")
    assert {r["seed"] for r in rb} == {7, 8}
    for setting in ("exact", "empirical"):
        va = _values([r for r in ra if r["setting"] == setting])
        vb = _values([r for r in rb if r["setting"] == setting])
        assert len(va) == len(vb) and all(x != y for x, y in zip(va, vb))


def test_different_seed_changes_sampling_noise_only(tmp_path):
    """With shared --rewards, --seed changes the empirical draws but not the (deterministic) exact setting."""
    rewards = tmp_path / "r.npy"
    np.save(rewards, np.linspace(-1.0, 1.0, 5))
    argv = ["--setting", "both", "--seeds", 1, "--iters", 3, "--num-samples", 64, "--samplers", "unif",
            "--no-plots", "--name", "r", "--rewards", rewards]
    run_main(tabular, argv + ["--out", tmp_path / "a", "--seed", 0])
    run_main(tabular, argv + ["--out", tmp_path / "b", "--seed", 1])
    ra, rb = load_rows(tmp_path / "a" / "r"), load_rows(tmp_path / "b" / "r")
    exact = lambda rows: _values([r for r in rows if r["setting"] == "exact"])
    emp = lambda rows: _values([r for r in rows if r["setting"] == "empirical" and r["step"] > 0])
    assert exact(ra) == exact(rb)
    assert emp(ra) != emp(rb)


@pytest.mark.parametrize("setting", ["exact", "empirical"])
def test_sampler_alone_matches_sampler_among_several(tmp_path, setting):
    common = ["--setting", setting, "--seeds", 2, "--iters", 4, "--num-samples", 64, "--no-plots", "--name", "r"]
    run_main(tabular, common + ["--samplers", "mix_p", "--out", tmp_path / "alone"])
    run_main(tabular, common + ["--samplers", "unif,gshf,mix_p,on_policy", "--out", tmp_path / "many"])
    lines = lambda d: [l for l in (d / "r" / "metrics.jsonl").read_text().splitlines() if '"mix_p"' in l]
    alone, many = lines(tmp_path / "alone"), lines(tmp_path / "many")
    assert alone and alone == many
    assert len(alone) == 2 * 5


def test_exact_seed_rows_do_not_depend_on_the_batch(tmp_path):
    """Rewards are drawn per seed, so seed 1 of --seed 0 --seeds 3 equals seed 1 of --seed 1 --seeds 1."""
    common = ["--setting", "exact", "--iters", 4, "--samplers", "mix_p,unif", "--no-plots", "--name", "r"]
    run_main(tabular, common + ["--seed", 0, "--seeds", 3, "--out", tmp_path / "a"])
    run_main(tabular, common + ["--seed", 1, "--seeds", 1, "--out", tmp_path / "b"])
    pick = lambda d: [l for l in (d / "r" / "metrics.jsonl").read_text().splitlines() if '"seed": 1,' in l]
    assert pick(tmp_path / "a") == pick(tmp_path / "b") != []


# ------------------------------------------------------------------------------------------- 4. --rewards

def _expected_start(r: np.ndarray, beta: float) -> dict:
    """Metrics of pi = pi_ref (uniform) for rewards [E, A], averaged over contexts."""
    diff = np.abs(r[:, :, None] - r[:, None, :]).mean((1, 2))
    v_star = beta * np.log(np.mean(np.exp(r / beta), axis=1))
    return {"param_diff": diff.mean(), "value": r.mean(1).mean(), "value_gap": (v_star - r.mean(1)).mean(), "kl": 0.0}


def test_rewards_npy_shape_A(tmp_path):
    r = np.array([0.3, -1.2, 2.0, 0.0, 0.7])
    np.save(tmp_path / "r.npy", r)
    out = tmp_path / "out"
    run_main(tabular, ["--rewards", tmp_path / "r.npy", "--setting", "exact", "--seeds", 3, "--iters", 3,
                       "--samplers", "unif,mix_p", "--no-plots", "--out", out, "--beta", 2.0])
    rows = check_run(out / "exact-fixed", ["exact"], ["unif", "mix_p"], [0, 1, 2], 3)
    cfg = load_json(out / "exact-fixed" / "run.json")["config"]
    assert (cfg["contexts"], cfg["actions"], cfg["rewards"]) == (1, 5, str(tmp_path / "r.npy"))
    want = _expected_start(r[None, :], 2.0)
    for row in rows:
        if row["step"] == 0:
            for k, v in want.items():
                assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-14), k
    # all seeds share the rewards: in the exact setting the seeds' rows are identical but for "seed"
    by_seed = defaultdict(list)
    for row in rows:
        by_seed[row["seed"]].append({k: v for k, v in row.items() if k != "seed"})
    assert by_seed[0] == by_seed[1] == by_seed[2]


def test_rewards_json_shape_EA(tmp_path):
    r = np.array([[0.0, 1.0, -1.0], [2.0, 0.5, 0.5]])
    (tmp_path / "r.json").write_text(json.dumps(r.tolist()))
    out = tmp_path / "out"
    run_main(tabular, ["--rewards", tmp_path / "r.json", "--contexts", 2, "--actions", 3, "--setting", "both",
                       "--seeds", 2, "--iters", 2, "--num-samples", 64, "--samplers", "gshf", "--no-plots",
                       "--out", out])
    rows = check_run(out / "both-fixed", ["exact", "empirical"], ["gshf"], [0, 1], 2)
    cfg = load_json(out / "both-fixed" / "run.json")["config"]
    assert (cfg["contexts"], cfg["actions"]) == (2, 3)
    want = _expected_start(r, 3.0)
    for row in rows:
        if row["step"] == 0:  # the same start in both settings and for every seed
            for k, v in want.items():
                assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-14), k
    ex = series(rows, "exact", "gshf")
    np.testing.assert_array_equal(ex[0], ex[1])


def test_equal_rewards_leave_the_policy_at_pi_ref(tmp_path):
    np.save(tmp_path / "flat.npy", np.full((2, 4), 0.25))
    out = tmp_path / "out"
    run_main(tabular, ["--rewards", tmp_path / "flat.npy", "--setting", "exact", "--seeds", 2, "--iters", 3,
                       "--samplers", "unif,mix_r,mix_p", "--no-plots", "--out", out])
    rows = check_run(out / "exact-fixed", ["exact"], ["unif", "mix_r", "mix_p"], [0, 1], 3)
    for row in rows:
        assert row["param_diff"] == pytest.approx(0.0, abs=1e-12)
        assert row["kl"] == pytest.approx(0.0, abs=1e-12)
        assert row["value"] == pytest.approx(0.25, abs=1e-12)


# ------------------------------------------------------------------------------------------ 5. bad input

@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    np.save(d / "r3d.npy", np.zeros((2, 2, 2)))
    np.save(d / "nan.npy", np.array([0.0, np.nan, 1.0]))
    np.save(d / "one_action.npy", np.array([1.0]))
    np.save(d / "ok.npy", np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]))
    (d / "inf.json").write_text("[[0, 1], [Infinity, 2]]")
    (d / "ragged.json").write_text("[[0, 1], [2]]")
    (d / "words.json").write_text('["a", "b"]')
    (d / "r.txt").write_text("0 1 2\n")
    return d


BAD = [
    ("tabular", ["--samplers", "unif,foo"], "--samplers"),
    ("tabular", ["--samplers", "unif,unif"], "--samplers"),
    ("tabular", ["--samplers", ","], "--samplers"),
    ("tabular", ["--beta", "0"], "--beta"),
    ("tabular", ["--beta", "-1"], "--beta"),
    ("tabular", ["--beta", "nan"], "--beta"),
    ("tabular", ["--beta", "inf"], "--beta"),
    ("tabular", ["--iters", "0"], "--iters"),
    ("tabular", ["--seeds", "0"], "--seeds"),
    ("tabular", ["--actions", "1"], "--actions"),
    ("tabular", ["--num-samples", "0"], "--num-samples"),
    ("tabular", ["--lr", "0"], "--lr"),
    ("tabular", ["--lr", "nan"], "--lr"),
    ("tabular", ["--lr", "1", "--step", "newton"], "--lr"),
    ("tabular", ["--rewards", "{files}/r3d.npy"], "--rewards"),
    ("tabular", ["--rewards", "{files}/nan.npy"], "--rewards"),
    ("tabular", ["--rewards", "{files}/inf.json"], "--rewards"),
    ("tabular", ["--rewards", "{files}/one_action.npy"], "--rewards"),
    ("tabular", ["--rewards", "{files}/ragged.json"], "--rewards"),
    ("tabular", ["--rewards", "{files}/words.json"], "--rewards"),
    ("tabular", ["--rewards", "{files}/missing.npy"], "--rewards"),
    ("tabular", ["--rewards", "{files}/r.txt"], "--rewards"),
    ("tabular", ["--rewards", "{files}/ok.npy", "--contexts", "3"], "--contexts"),
    ("tabular", ["--rewards", "{files}/ok.npy", "--actions", "4"], "--actions"),
    ("tabular", ["--device", "tpu"], "--device"),
    ("tabular", ["--device", "nonsense"], "--device"),
    ("tabular", ["--name", ".hidden"], "--name"),
    ("tabular", ["--bogus"], "--bogus"),
    ("tabular", ["--setting", "bogus"], "--setting"),
    ("tabular", ["--step", "bogus"], "--step"),
    ("tabular", ["--seeds", "two"], "--seeds"),
    ("linear", ["--dim", "0"], "--dim"),
    ("linear", ["--samplers", "foo"], "--samplers"),
    ("linear", ["--contexts", "0"], "--contexts"),
    ("linear", ["--actions", "1"], "--actions"),
    ("linear", ["--beta", "0"], "--beta"),
    ("linear", ["--rewards", "x.npy"], "--rewards"),  # tabular only
    ("tabular", ["--contexts", "0"], "--contexts"),
    ("tabular", ["--actions", "0"], "--actions"),
    ("tabular", ["--seed", "-1"], "--seed"),
    ("linear", ["--seed", "-1"], "--seed"),
]
FAST = ["--iters", "2", "--seeds", "1", "--setting", "exact", "--samplers", "unif", "--no-plots"]


def _argv(argv, files, out):
    # the bad flag goes last so it overrides the harmless FAST defaults
    return ["--out", str(out), *FAST, *[a.format(files=files) for a in argv]]


@pytest.mark.parametrize("script,argv,flag", BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_bad_input_in_process(script, argv, flag, bad_files, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run_main(SCRIPTS[script][0], _argv(argv, bad_files, out))
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert flag in lines[0] and "error" in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("script", ["tabular", "linear"])
def test_cuda_without_cuda_is_bad_input(script, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run_main(SCRIPTS[script][0], ["--out", out, *FAST, "--device", "cuda"])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "--device" in lines[0]
    assert not out.exists()


def test_out_is_a_file_is_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder\n")
    with pytest.raises(SystemExit) as exc:
        run_main(tabular, ["--out", out, *FAST])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "--out" in lines[0]
    assert out.read_text() == "not a folder\n"


@pytest.mark.parametrize("script,argv,flag", [
    ("tabular", ["--samplers", "unif,foo"], "--samplers"),
    ("tabular", ["--rewards", "{files}/r3d.npy"], "--rewards"),
    ("linear", ["--dim", "0"], "--dim"),
])
@pytest.mark.slow
def test_bad_input_subprocess(script, argv, flag, bad_files, tmp_path):
    out = tmp_path / "out"
    res = run_cli(SCRIPTS[script][1], _argv(argv, bad_files, out), cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"{script}.py: error: ") and flag in lines[0]
    assert res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]


# ------------------------------------------------------------------------------------------ 6. divergence

def test_divergence_in_the_cli(tmp_path):
    """--lr 1e6 in the exact setting: Mix-P's implicit rewards blow past param_diff 1e6 on some seeds
    within 5 steps, the others stay below; the run still finishes and logs the divergences."""
    out = tmp_path / "out"
    seeds = list(range(8))
    path = run_main(tabular, ["--setting", "exact", "--lr", "1e6", "--seeds", 8, "--iters", 5,
                              "--samplers", "unif,mix_p", "--out", out, "--name", "div"])
    rows = check_run(path, ["exact"], ["unif", "mix_p"], seeds, 5, plots=True, diverging_ok=True)
    assert "NaN" not in (Path(path) / "metrics.jsonl").read_text()
    assert "null" not in (Path(path) / "metrics.jsonl").read_text()
    summary = load_json(Path(path) / "summary.json")
    events = event_rows(rows)
    assert events, "expected some seeds to diverge at --lr 1e6"
    mix_p_div = {e["seed"] for e in events if e["sampler"] == "mix_p"}
    assert 0 < len(mix_p_div) < len(seeds)  # some seeds diverge, some don't
    for sampler in ("unif", "mix_p"):
        div = {e["seed"]: e["diverged_at"] for e in events if e["sampler"] == sampler}
        assert len(div) == len([e for e in events if e["sampler"] == sampler])  # one event per seed
        steps = defaultdict(list)
        for r in metric_rows(rows):
            if r["sampler"] == sampler:
                steps[r["seed"]].append(r["step"])
        for seed in seeds:
            if seed in div:
                d = div[seed]
                assert 1 <= d <= 5
                assert steps[seed] == list(range(d))  # rows stop before diverged_at
            else:
                assert steps[seed] == list(range(6))
        s = summary["exact"][sampler]
        assert s["seeds"] == 8 and s["diverged"] == len(div)
        assert s["diverged_at"] == [div.get(seed, -1) for seed in seeds]
        ok = [x for seed, x in series(rows, "exact", sampler).items() if seed not in div]
        assert s["final_param_diff_median"] == pytest.approx(np.median([x[-1] for x in ok]), rel=1e-12)
    for e in events:
        assert e["step"] == e["diverged_at"]


def test_every_seed_diverges(tmp_path):
    """--lr 1e9: every seed diverges at once; the summary has no medians (null) and the figures are still drawn."""
    out = tmp_path / "out"
    path = run_main(tabular, ["--setting", "exact", "--lr", "1e9", "--seeds", 2, "--iters", 3,
                              "--samplers", "mix_p", "--out", out, "--name", "div"])
    rows = check_run(path, ["exact"], ["mix_p"], [0, 1], 3, plots=True, diverging_ok=True)
    events = event_rows(rows)
    assert sorted(e["seed"] for e in events) == [0, 1]
    for e in events:
        assert [r["step"] for r in metric_rows(rows) if r["seed"] == e["seed"]] == list(range(e["diverged_at"]))
    s = load_json(Path(path) / "summary.json")["exact"]["mix_p"]
    assert s["diverged"] == 2 and s["seeds"] == 2
    assert s["final_param_diff_median"] is None and s["order_median"] is None
    assert s["order_per_seed"] == [] and s["converged_seeds"] == 0


def test_divergence_through_run_experiment(tmp_path, capsys):
    """run_experiment with a hand-built env: with rewards scaled by 50 the Newton step
    S / (2 A beta^2), S ~ e^(max Dr), is astronomically large and those seeds explode at once; the
    others converge. Both settings, with figures."""
    from bandit import TabularEnv
    from bandit.examples.common import BanditArgs, resolve, run_experiment

    scale = [1.0, 50.0, 1.0, 50.0]
    base = TabularEnv.from_seeds(range(4), contexts=1, actions=5, beta=3.0)
    env = TabularEnv(rewards=base.rewards * torch.tensor(scale, dtype=torch.float64)[:, None, None],
                     log_ref=base.log_ref, beta=3.0)
    args = BanditArgs(setting="both", samplers="unif,mix_r", seeds=4, iters=4, step="newton", actions=5,
                      contexts=1, num_samples=64, out=str(tmp_path / "out"), name="x", plots=True)
    plan = resolve(args)
    path = run_experiment(args, plan, env, title="test")
    rows = check_run(path, ["exact", "empirical"], ["unif", "mix_r"], [0, 1, 2, 3], 4, plots=True,
                     diverging_ok=True)
    summary = load_json(Path(path) / "summary.json")
    for setting in ("exact", "empirical"):
        for sampler in ("unif", "mix_r"):
            ev = {e["seed"]: e["diverged_at"] for e in event_rows(rows)
                  if e["setting"] == setting and e["sampler"] == sampler}
            assert sorted(ev) == [1, 3]
            for seed in range(4):
                steps = [r["step"] for r in metric_rows(rows)
                         if r["setting"] == setting and r["sampler"] == sampler and r["seed"] == seed]
                assert steps == list(range(ev.get(seed, 5)))
            assert summary[setting][sampler]["diverged"] == 2
            assert summary[setting][sampler]["diverged_at"] == [ev.get(s, -1) for s in range(4)]


# ---------------------------------------------------------------------------------------------- 7. --help

COMMON_FLAGS = ["--setting", "--samplers", "--seeds", "--iters", "--lr", "--beta", "--actions", "--contexts",
                "--num-samples", "--step", "--device", "--out", "--no-plots"]


@pytest.mark.parametrize("script,extra,absent", [("tabular", ["--rewards"], ["--dim"]),
                                                 ("linear", ["--dim"], ["--rewards"])])
def test_help_lists_every_flag(script, extra, absent, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_main(SCRIPTS[script][0], ["--help"])
    assert exc.value.code in (0, None)
    text = capsys.readouterr().out
    for flag in COMMON_FLAGS + extra:
        assert flag in text, flag
    for flag in absent:
        assert flag not in text, flag
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_help_subprocess(tmp_path):
    res = run_cli(TABULAR_PY, ["--help"], cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    for flag in COMMON_FLAGS + ["--rewards"]:
        assert flag in res.stdout
    assert list(tmp_path.iterdir()) == []
