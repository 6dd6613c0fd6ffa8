"""Tests for gkdcn.evaluate: known answers on hand-made maps, invariances, errors, output files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from gkdcn.errors import GkdcnError, OutputExistsError
from gkdcn.evaluate import (
    Evaluation,
    _bootstrap_auc,
    evaluate_map,
    evaluate_scores,
    write_evaluation,
)
from gkdcn.figures import plot_pr, plot_prediction_area, plot_roc, plot_success_rate


def _random_map(
    shape: tuple[int, int] = (60, 80), n_dep: int = 12, seed: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A noisy map where deposit cells score higher on average; all cells valid."""
    rng = np.random.default_rng(seed)
    h, w = shape
    flat = rng.choice(h * w, n_dep, replace=False)
    rows, cols = np.divmod(flat, w)
    prob = rng.random(shape) * 0.7
    prob[rows, cols] += rng.random(n_dep) * 0.5
    return prob, np.ones(shape, dtype=bool), rows, cols


# --------------------------------------------------------------------------- known answers


def test_map_equal_to_labels_is_perfect() -> None:
    shape = (100, 120)
    rng = np.random.default_rng(0)
    flat = rng.choice(shape[0] * shape[1], 15, replace=False)
    rows, cols = np.divmod(flat, shape[1])
    prob = np.zeros(shape)
    prob[rows, cols] = 1.0
    ev = evaluate_map(prob, np.ones(shape, dtype=bool), rows, cols, n_boot=200)
    assert ev.auc == 1.0
    assert ev.auc_ci == (1.0, 1.0)
    assert ev.success_auc >= 0.99
    # With ties as one step, the 15 deposit cells are captured in exactly their own area.
    assert ev.area_for_capture[1.0] == pytest.approx(15 / prob.size)
    for name in ("accuracy", "kappa", "mcc", "precision", "recall", "f1"):
        assert getattr(ev, name) == pytest.approx(1.0), name
    assert ev.threshold == 1.0
    assert ev.pr_auc == pytest.approx(1.0)


def test_constant_map_is_chance() -> None:
    prob, valid, rows, cols = _random_map()
    ev = evaluate_map(np.full_like(prob, 0.3), valid, rows, cols, n_boot=100)
    assert ev.auc == pytest.approx(0.5)
    assert ev.auc_ci == pytest.approx((0.5, 0.5))
    # One tie group: the success curve is the diagonal, and any capture needs the whole map.
    assert ev.success_auc == pytest.approx(0.5)
    assert ev.area_for_capture == {0.5: 1.0, 0.8: 1.0, 1.0: 1.0}
    assert ev.kappa == pytest.approx(0.0)
    assert ev.mcc == pytest.approx(0.0)


def test_reversed_map_scores_zero() -> None:
    prob, valid, rows, cols = _random_map()
    labels = np.zeros(prob.shape)
    labels[rows, cols] = 1.0
    ev = evaluate_map(1.0 - labels, valid, rows, cols, n_boot=100)
    assert ev.auc == 0.0
    assert ev.auc_ci == (0.0, 0.0)
    assert ev.area_for_capture[0.5] == 1.0


def test_matches_sklearn_on_random_map() -> None:
    prob, valid, rows, cols = _random_map()
    ev = evaluate_map(prob, valid, rows, cols, n_boot=50)
    y = np.zeros(prob.shape, dtype=int)
    y[rows, cols] = 1
    assert ev.auc == pytest.approx(roc_auc_score(y.ravel(), prob.ravel()), abs=1e-12)
    assert ev.pr_auc == pytest.approx(average_precision_score(y.ravel(), prob.ravel()), abs=1e-12)
    pred = (prob.ravel() >= ev.threshold).astype(int)
    assert ev.f1 == pytest.approx(f1_score(y.ravel(), pred))
    assert ev.kappa == pytest.approx(cohen_kappa_score(y.ravel(), pred))
    assert ev.mcc == pytest.approx(matthews_corrcoef(y.ravel(), pred))
    assert 0.5 < ev.auc < 1.0
    assert (ev.n_positive, ev.n_negative) == (12, prob.size - 12)


def test_success_auc_identity() -> None:
    """With tie groups as one step, success AUC = P/(2N) + (N-P)/N * ROC AUC exactly."""
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(500), 1)  # heavy ties
    labels = rng.random(500) < 0.1
    scores[labels] += 0.2
    ev = evaluate_scores(scores, labels, n_boot=0)
    p, n = ev.n_positive, ev.n_cells
    assert ev.success_auc == pytest.approx(p / (2 * n) + (n - p) / n * ev.auc, abs=1e-12)
    assert ev.success.area[0] == 0 and ev.success.captured[0] == 0
    assert ev.success.area[-1] == pytest.approx(1) and ev.success.captured[-1] == pytest.approx(1)
    assert np.all(np.diff(ev.success.area) > 0)


def test_f1_optimal_threshold_small_hand_case() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 0, 1, 1, 0, 0])
    # Thresholds 0.9..0.4 give F1 = 1/2, 2/5, 2/3, 6/7, 3/4, 2/3: best at 0.6 (TP 3, FP 1, TN 2).
    ev = evaluate_scores(scores, labels, n_boot=0)
    assert ev.threshold == 0.6
    assert ev.f1 == pytest.approx(6 / 7)
    assert ev.precision == pytest.approx(0.75)
    assert ev.recall == pytest.approx(1.0)
    assert ev.accuracy == pytest.approx(5 / 6)
    assert ev.kappa == pytest.approx(2 / 3)
    assert ev.mcc == pytest.approx(6 / math.sqrt(72))
    assert math.isnan(ev.auc_ci[0]) and ev.to_dict()["auc_ci"] == [None, None]


def test_area_for_capture_hand_made() -> None:
    # 20 valid cells with distinct scores; deposits ranked 1, 2, 4, 7, 9 from the top.
    scores = np.linspace(1.0, 0.05, 20)
    labels = np.zeros(20, dtype=bool)
    labels[[0, 1, 3, 6, 8]] = True
    ev = evaluate_scores(scores, labels, n_boot=0)
    # 50 % of 5 -> 3 deposits (rank 4); 80 % -> 4 (rank 7); 100 % -> rank 9.
    assert ev.area_for_capture == pytest.approx({0.5: 4 / 20, 0.8: 7 / 20, 1.0: 9 / 20})

    # Tie ranks 5..8 into one group: reaching the 4th deposit (rank 7) now takes all of it.
    tied = scores.copy()
    tied[4:8] = 0.7
    ev = evaluate_scores(tied, labels, n_boot=0)
    assert ev.area_for_capture == pytest.approx({0.5: 4 / 20, 0.8: 8 / 20, 1.0: 9 / 20})


def test_pa_intersection_hand_made() -> None:
    # Scores 1, .75, .5, .25, 0 on 2, 4, 4, 5, 5 cells; deposits: 2 at 1, one at .75, one at .5.
    scores = np.repeat([1.0, 0.75, 0.5, 0.25, 0.0], [2, 4, 4, 5, 5])
    labels = np.zeros(20, dtype=bool)
    labels[[0, 1, 2, 6]] = True
    ev = evaluate_scores(scores, labels, n_boot=0, n_pa_thresholds=5)
    np.testing.assert_allclose(ev.pa.threshold, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(ev.pa.prediction_rate, [1, 1, 1, 0.75, 0.5])
    np.testing.assert_allclose(ev.pa.area_share, [1, 0.75, 0.5, 0.3, 0.1])
    # d = rate + area - 1 is 0.05 at t=.75 and -0.4 at t=1: crossing 1/9 of the way along.
    t, rate, area = ev.pa_intersection
    assert t == pytest.approx(0.75 + 0.25 / 9)
    assert rate == pytest.approx(0.75 - 0.25 / 9)
    assert area == pytest.approx(0.3 - 0.2 / 9)
    assert rate + area == pytest.approx(1.0)


def test_pa_intersection_absent_when_curves_do_not_cross() -> None:
    labels = np.zeros(50, dtype=bool)
    labels[:5] = True
    ev = evaluate_scores(labels.astype(float), labels, n_boot=0)
    assert all(math.isnan(v) for v in ev.pa_intersection)
    assert ev.to_dict()["pa_intersection"]["threshold"] is None


# --------------------------------------------------------------------------- nodata


def test_nodata_cells_never_count() -> None:
    prob, valid, rows, cols = _random_map((40, 50))
    base = evaluate_map(prob, valid, rows, cols, n_boot=200, seed=1)

    # Add a big invalid strip with extreme values (and NaN), plus a deposit on it.
    big = np.vstack([prob, np.ones((30, 50))])
    big[45:, :] = 0.0
    big[50:52, :] = np.nan
    big_valid = np.vstack([valid, np.zeros((30, 50), dtype=bool)])
    drows = np.append(rows, 44)
    dcols = np.append(cols, 7)
    ev = evaluate_map(big, big_valid, drows, dcols, n_boot=200, seed=1)

    expected = base.to_dict()
    got = ev.to_dict()
    assert got.pop("n_deposits_off_valid") == 1
    expected.pop("n_deposits_off_valid")
    assert got == expected
    for name in ("area", "captured"):
        np.testing.assert_array_equal(getattr(ev.success, name), getattr(base.success, name))
    np.testing.assert_array_equal(ev.pa.area_share, base.pa.area_share)


def test_duplicate_deposits_count_once() -> None:
    prob, valid, rows, cols = _random_map()
    ev = evaluate_map(prob, valid, np.append(rows, rows[:2]), np.append(cols, cols[:2]), n_boot=0)
    assert ev.n_positive == 12
    assert ev.n_deposits_duplicate == 2


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_seeded_and_contains_point() -> None:
    prob, valid, rows, cols = _random_map()
    a = evaluate_map(prob, valid, rows, cols, n_boot=500, seed=7)
    b = evaluate_map(prob, valid, rows, cols, n_boot=500, seed=7)
    c = evaluate_map(prob, valid, rows, cols, n_boot=500, seed=8)
    assert a.auc_ci == b.auc_ci
    assert a.auc_ci != c.auc_ci
    lo, hi = a.auc_ci
    assert lo < a.auc < hi
    assert hi - lo > 0.05  # 12 deposits: the interval must be wide
    slo, shi = a.success_auc_ci
    assert slo < a.success_auc < shi


def test_bootstrap_matches_naive_resampling_in_law() -> None:
    """The multinomial shortcut must give the same distribution as resampling the cells."""
    rng = np.random.default_rng(11)
    pos = np.sort(np.round(rng.normal(0.6, 0.2, 6), 1))
    neg = np.sort(np.round(rng.normal(0.4, 0.2, 40), 1))  # rounded: ties matter
    fast = _bootstrap_auc(pos, neg, 4000, np.random.default_rng(0))

    naive_rng = np.random.default_rng(1)
    naive = np.empty(4000)
    for i in range(naive.size):
        p = pos[naive_rng.integers(0, pos.size, pos.size)]
        q = neg[naive_rng.integers(0, neg.size, neg.size)]
        naive[i] = ((p[:, None] > q).sum() + 0.5 * (p[:, None] == q).sum()) / (p.size * q.size)
    assert fast.mean() == pytest.approx(naive.mean(), abs=0.01)
    assert fast.std() == pytest.approx(naive.std(), rel=0.08)
    np.testing.assert_allclose(
        np.percentile(fast, [2.5, 50, 97.5]), np.percentile(naive, [2.5, 50, 97.5]), atol=0.025
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("case", "message", "kind"),
    [
        ("shape", "does not match", ValueError),
        ("outside", "outside the", GkdcnError),
        ("nan", "NaN", GkdcnError),
        ("no_valid_deposit", "valid cell", GkdcnError),
        ("no_deposit", "no deposits", GkdcnError),
        ("not_2d", "2-D", ValueError),
        ("fractional", "whole cell", ValueError),
    ],
)
def test_map_errors(case: str, message: str, kind: type[Exception]) -> None:
    """User-fixable problems are GkdcnError; arguments only a caller's bug can produce are
    plain ValueError (so the CLI does not report a bug as the user's mistake)."""
    prob, valid, rows, cols = _random_map((10, 10), n_dep=3)
    if case == "shape":
        valid = valid[:, :9]
    elif case == "outside":
        rows = np.append(rows, 10)
        cols = np.append(cols, 0)
    elif case == "nan":
        prob[2, 3] = np.nan
    elif case == "no_valid_deposit":
        valid[rows, cols] = False
    elif case == "no_deposit":
        rows = cols = np.array([], dtype=int)
    elif case == "not_2d":
        prob = prob[None]
        valid = valid[None]
    elif case == "fractional":
        rows = rows + 0.5
    with pytest.raises(kind, match=message) as err:
        evaluate_map(prob, valid, rows, cols, n_boot=0)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, GkdcnError) == (kind is GkdcnError)


def test_score_errors() -> None:
    with pytest.raises(GkdcnError, match="no deposit"):
        evaluate_scores(np.arange(5.0), np.zeros(5), n_boot=0)
    with pytest.raises(GkdcnError, match="no background"):
        evaluate_scores(np.arange(5.0), np.ones(5), n_boot=0)
    with pytest.raises(ValueError, match="0/1"):
        evaluate_scores(np.arange(5.0), np.array([0, 1, 2, 0, 1]), n_boot=0)
    with pytest.raises(ValueError, match="5 scores but 4 labels"):
        evaluate_scores(np.arange(5.0), np.array([0, 1, 0, 1]), n_boot=0)


# --------------------------------------------------------------------------- figures and files


@pytest.fixture(scope="module")
def two_evaluations() -> dict[str, Evaluation]:
    prob, valid, rows, cols = _random_map()
    rng = np.random.default_rng(9)
    return {
        "model A": evaluate_map(prob, valid, rows, cols, n_boot=100),
        "model B": evaluate_map(prob + rng.random(prob.shape) * 0.5, valid, rows, cols, n_boot=100),
    }


def test_multi_curve_figures_render(two_evaluations: dict[str, Evaluation]) -> None:
    for plot in (plot_roc, plot_success_rate, plot_pr):
        fig = plot(two_evaluations)
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(lbl.startswith("model A") for lbl in labels)
        assert any(lbl.startswith("model B") for lbl in labels)
        assert "%" in ax.get_xlabel() and "%" in ax.get_ylabel()
        assert ax.get_title()
        data_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
        assert len(data_lines) == 2
        fig.canvas.draw()  # must actually render
    roc_labels = [t.get_text() for t in plot_roc(two_evaluations).axes[0].get_legend().get_texts()]
    auc_a = two_evaluations["model A"].auc
    assert any(f"AUC {auc_a:.3f}" in lbl for lbl in roc_labels)
    assert any("random" in lbl for lbl in roc_labels)  # the diagonal reference


def test_prediction_area_figure(two_evaluations: dict[str, Evaluation]) -> None:
    ev = two_evaluations["model A"]
    fig = plot_prediction_area(ev, "model A")
    ax = fig.axes[0]
    assert "model A" in ax.get_title()
    ys = [ln.get_ydata() for ln in ax.get_lines() if len(ln.get_xdata()) == len(ev.pa.threshold)]
    assert len(ys) == 2  # prediction rate and 100 - occupied area
    np.testing.assert_allclose(ys[0], 100 * ev.pa.prediction_rate)
    assert any(lbl.get_text().startswith("intersection") for lbl in ax.get_legend().get_texts())
    fig.canvas.draw()


def test_plot_needs_curves() -> None:
    # Calling a plot with nothing is a programming error, not a user error.
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_roc({})


def test_write_evaluation(tmp_path: Path, two_evaluations: dict[str, Evaluation]) -> None:
    ev = two_evaluations["model A"]
    out = tmp_path / "eval"
    paths = write_evaluation(ev, out, title="model A")
    names = {p.name for p in paths}
    assert names == {
        "metrics.json",
        *(
            f"{s}.{ext}"
            for s in ("roc", "pr", "success_rate", "prediction_area")
            for ext in ("csv", "png")
        ),
    }
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == ev.to_dict()
    assert saved["auc"] == ev.auc and saved["auc_ci"] == list(ev.auc_ci)
    assert saved["area_for_capture"]["0.8"] == ev.area_for_capture[0.8]

    roc = pd.read_csv(out / "roc.csv")
    np.testing.assert_allclose(roc["tpr"], ev.roc.tpr)
    sr = pd.read_csv(out / "success_rate.csv")
    area = sr["area_share"].to_numpy()
    dep = sr["deposit_share"].to_numpy()
    assert np.sum(np.diff(area) * (dep[1:] + dep[:-1]) / 2) == pytest.approx(ev.success_auc)
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Refuses to overwrite, and checks every target before writing any.
    (out / "roc.png").unlink()
    before = (out / "metrics.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        write_evaluation(ev, out)
    assert not (out / "roc.png").exists()
    assert (out / "metrics.json").stat().st_mtime_ns == before
    assert len(write_evaluation(ev, out, overwrite=True)) == 9
    assert (out / "roc.png").exists()
