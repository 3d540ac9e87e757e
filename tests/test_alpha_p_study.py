"""The LLM's Mix-P in the bandit (issue 12): tabular.py / linear.py run it from --alpha/--p/--base/--temperature,
bad values exit 2 naming the flag, and the alpha-p study (bandit/examples/alpha_p.py) smoke-runs, logs, refuses bad
values, and its figure is drawn from the log."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bandit.examples import alpha_p, common, linear, tabular
from bandit.spec import Tilt

pytestmark = pytest.mark.usefixtures("torch_single_thread")
TINY = ["--seeds", "2", "--iters", "4", "--no-plots", "--setting", "exact"]


def _rows(run):
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines() if l.strip()]


def _exit2(main, argv, capsys, flag):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err
    return err[0]


@pytest.mark.parametrize("extra, flag", [
    (["--p", "1.5"], "--p"), (["--p", "often"], "--p"), (["--alpha", "-1"], "--alpha"), (["--alpha", "nan"], "--alpha"),
    (["--temperature", "0"], "--temperature"), (["--base", "uniform"], "--base"),
    (["--samplers", "unif,on_policy", "--alpha", "0.5"], "--alpha"),
    (["--temperature", "0.7"], "--temperature"),   # the default samplers include unif, mix_r, mix_p_star
])
def test_tabular_llm_flags_refuse_bad_values(extra, flag, tmp_path, capsys):
    line = _exit2(tabular.main, [*TINY, "--out", str(tmp_path / "o"), *extra], capsys, flag)
    assert not (tmp_path / "o").exists(), line


def test_temperature_error_lists_the_samplers_it_cannot_apply_to(tmp_path, capsys):
    line = _exit2(tabular.main, [*TINY, "--out", str(tmp_path), "--temperature", "0.7"], capsys, "--temperature")
    assert "unif" in line and "mix_r" in line and "mix_p_star" in line and "on_policy," not in line.split("lists")[1]


def test_llm_flags_resolve_to_the_spec_by_hand():
    args = tabular.Args(samplers="on_policy,mix_p", alpha=1.0, p="0.7", temperature=0.5)
    specs, resolved = common.resolve_specs(args, ["on_policy", "mix_p"])
    assert resolved == {"temperature": 0.5, "alpha": 1.0, "p": 0.7, "base": "pi"}
    # (1+a)/T, -a/T; (1-a)/T, a/T; and the on-policy pair pi^(1/T), both as branches and as the on_policy sampler
    assert specs["mix_p"].tilts == (Tilt(pi=4.0, ref=-2.0), Tilt(pi=0.0, ref=2.0), Tilt(pi=2.0))
    assert [b.prob for b in specs["mix_p"].branches] == [0.7, pytest.approx(0.3)]
    assert specs["on_policy"].tilts == (Tilt(pi=2.0),)
    specs, resolved = common.resolve_specs(tabular.Args(p="natural", base="pi_ref"), ["mix_p"])
    assert specs["mix_p"].natural and resolved["p"] == "natural" and resolved["alpha"] == 0.5
    assert specs["mix_p"].tilts == (Tilt(pi=0.5, ref=0.5), Tilt(pi=-0.5, ref=1.5), Tilt(ref=1.0))
    assert common.resolve_specs(tabular.Args(), ["mix_p"]) == ({}, {})   # no flag: the paper's mix_p by name


def test_tabular_and_linear_run_the_llm_form(tmp_path):
    run = tabular.main([*TINY, "--samplers", "mix_p,on_policy", "--alpha", "0.5", "--p", "0.7",
                        "--temperature", "0.7", "--out", str(tmp_path), "--name", "llm"])
    cfg = json.loads((Path(run) / "run.json").read_text())["config"]
    assert cfg["resolved"]["llm"] == {"temperature": 0.7, "alpha": 0.5, "p": 0.7, "base": "pi"}
    rows = _rows(run)
    assert {r["sampler"] for r in rows} == {"mix_p", "on_policy"} and len(rows) == 2 * 2 * 5
    paper = tabular.main([*TINY, "--samplers", "mix_p", "--out", str(tmp_path), "--name", "paper"])
    a = [r["param_diff"] for r in rows if r["sampler"] == "mix_p"]
    b = [r["param_diff"] for r in _rows(paper)]
    assert a[0] == b[0] and a[1:5] != b[1:5]   # same start, a different sampler
    lin = linear.main([*TINY, "--samplers", "mix_p", "--p", "natural", "--dim", "3", "--contexts", "2",
                       "--actions", "4", "--out", str(tmp_path), "--name", "lin"])
    assert all(math.isfinite(r["param_diff"]) for r in _rows(lin))


STUDY = ["--seeds", "2", "--iters", "6", "--alphas", "0,0.5,3", "--ps", "0.7,1,natural", "--temperatures", "1,0.7",
         "--bases", "pi,pi_ref"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("alpha_p")
    return alpha_p.main([*STUDY, "--out", str(out), "--name", "tiny"])


def test_study_logs_every_row(study):
    rows = _rows(study)
    labels = {r["label"] for r in rows}
    assert len(labels) == 1 + 3 * 3 * 2 * 2 and alpha_p.REFERENCE in labels
    assert {r["sampler"] for r in rows} == {"mix_p"} and {r["step_rule"] for r in rows} == {"newton"}
    assert len(rows) == len(labels) * 2 * 7
    summary = json.loads((Path(study) / "summary.json").read_text())["newton"]
    assert set(summary) == labels


def test_study_paper_row_is_the_base_pi_ref_alpha_beta_natural_row(study):
    # the math: with pi_ref uniform and a = beta, B(y)B(y')(2 + e^(aD) + e^(-aD)) is 2 + e^Dh + e^-Dh
    rows = _rows(study)
    get = lambda lab: np.array([r["param_diff"] for r in rows if r["label"] == lab])
    np.testing.assert_allclose(get("mix_p(a=3,p=natural,T=1,B=pi_ref)"), get(alpha_p.REFERENCE), rtol=1e-6,
                               atol=1e-12)
    # and alpha = 0 is on-policy whatever p is
    np.testing.assert_allclose(get("mix_p(a=0,p=0.7,T=1,B=pi)"), get("mix_p(a=0,p=1,T=1,B=pi)"), rtol=1e-12)


@pytest.mark.parametrize("extra, flag", [
    (["--ps", "0.7,2"], "--ps"), (["--alphas", "-0.5"], "--alphas"), (["--alphas", "x"], "--alphas"),
    (["--temperatures", "0"], "--temperatures"), (["--bases", "pi,uniform"], "--bases"),
    (["--steps", "adam"], "--steps"), (["--iters", "0"], "--iters"), (["--ps", "0.7,0.7"], "--ps"),
])
def test_study_refuses_bad_values(extra, flag, tmp_path, capsys):
    _exit2(alpha_p.main, [*STUDY, "--out", str(tmp_path / "o"), *extra], capsys, flag)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_figure_is_drawn_from_the_study_log(study, tmp_path):
    from paper_figures import alpha_p as fig

    paths = fig.main(["--runs", str(Path(study).parent), "--out", str(tmp_path)])
    assert [p.name for p in paths] == ["alpha_p.png", "alpha_p.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 20_000
    with pytest.raises(SystemExit) as e:
        fig.main(["--runs", str(tmp_path), "--out", str(tmp_path / "none")])
    assert e.value.code == 2 and not (tmp_path / "none").exists()
