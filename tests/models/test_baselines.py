"""Baselines (gkdcn.models.baselines): features, fold discipline, choice inside the fold, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gkdcn.config import TransformConfig
from gkdcn.data.samples import SampleSet, extract_windows, leave_one_deposit_out, make_samples
from gkdcn.data.sites import SiteTable
from gkdcn.data.synthetic import SyntheticSpec, make_district
from gkdcn.errors import GkdcnError
from gkdcn.models.baselines import (
    BASELINES,
    CellFeatures,
    cell_features,
    fit_baseline,
    fit_fold_baseline,
    fold_features,
)
from gkdcn.training.windows import prepare_windows

SPEC = SyntheticSpec(height=40, width=48, n_layers=6, n_deposits=6, n_faults=2, seed=4)
WINDOW = 5


@pytest.fixture(scope="module")
def setting() -> dict:
    """A small synthetic district with deposits, random negatives, windows and LODO folds."""
    d = make_district(SPEC)
    valid = np.isfinite(d.values).all(axis=0)
    rng = np.random.default_rng(0)
    far = valid.copy()
    for r, c in zip(d.deposit_rows, d.deposit_cols, strict=True):
        far[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4] = False
    neg = rng.choice(np.flatnonzero(far), 8, replace=False)
    rows = np.concatenate([d.deposit_rows, neg // SPEC.width])
    cols = np.concatenate([d.deposit_cols, neg % SPEC.width])
    n_dep = len(d.deposit_rows)
    sites = SiteTable(
        ids=[f"D{i}" for i in range(n_dep)] + [f"N{i}" for i in range(8)],
        labels=[1] * n_dep + [0] * 8,
        rows=rows,
        cols=cols,
    )
    samples = make_samples(sites, valid.shape, shift=3)
    folds = leave_one_deposit_out(samples, sites, SPEC.grid, exclusion_radius=2000.0)
    knowledge = np.exp(-d.fault_distance / 4000.0).astype(np.float32)
    return {
        "district": d,
        "valid": valid,
        "sites": sites,
        "samples": samples,
        "folds": folds,
        "knowledge": knowledge,
    }


def _features(setting: dict, split) -> CellFeatures:
    d = setting["district"]
    transform = prepare_windows(
        d.values, d.names, setting["knowledge"], setting["samples"], split,
        TransformConfig(), WINDOW, "zero",
    ).transform  # fmt: skip
    return fold_features(d.values, d.names, setting["knowledge"], transform, WINDOW, "zero")


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_window_means_equal_the_network_windows(padding: str) -> None:
    rng = np.random.default_rng(1)
    stack = rng.standard_normal((3, 11, 13)).astype(np.float32)
    feats = cell_features(stack, ["a", "b", "c"], None, 5, padding)
    rows, cols = np.nonzero(np.ones((11, 13), dtype=bool))
    windows = extract_windows(stack, rows, cols, 5, padding)  # type: ignore[arg-type]
    expected = windows.mean(axis=(2, 3))  # (N, C)
    got = feats.at(rows, cols)
    np.testing.assert_allclose(got[:, :3], stack[:, rows, cols].T)
    np.testing.assert_allclose(got[:, 3:6], expected, atol=1e-5)
    np.testing.assert_array_equal(got[:, 6], 0.0)  # no knowledge: a zero column
    assert feats.names[3] == "a (window mean)" and feats.names[-1] == "knowledge"


def test_baselines_train_only_on_the_folds_training_windows(setting: dict) -> None:
    samples: SampleSet = setting["samples"]
    sites: SiteTable = setting["sites"]
    for split in setting["folds"][:3]:
        features = _features(setting, split)
        held = int(split.held_out[0])
        for kind in ("element", "logistic", "random-forest"):
            model = fit_fold_baseline(kind, features, samples, split, seed=0)
            np.testing.assert_array_equal(model.trained_on, split.train)
            assert not np.any(samples.site[model.trained_on] == held)
            # No training window centred within the exclusion radius (2 cells) of the deposit.
            gap = np.hypot(
                samples.rows[model.trained_on] - sites.rows[held],
                samples.cols[model.trained_on] - sites.cols[held],
            )
            assert gap.min() > 2.0
        assert len(fit_fold_baseline("knowledge", features, samples, split).trained_on) == 0


def test_held_out_windows_do_not_change_a_fitted_baseline(setting: dict) -> None:
    # Flip the labels of every sample outside the fold's training set: nothing may change.
    samples: SampleSet = setting["samples"]
    split = setting["folds"][0]
    features = _features(setting, split)
    poisoned_labels = samples.labels.copy()
    outside = np.setdiff1d(np.arange(len(samples)), split.train)
    poisoned_labels[outside] = 1.0 - poisoned_labels[outside]
    poisoned = SampleSet(samples.rows, samples.cols, poisoned_labels, samples.site, samples.aug)
    rows, cols = np.nonzero(setting["valid"])
    for kind in BASELINES:
        a = fit_fold_baseline(kind, features, samples, split, seed=3)
        b = fit_fold_baseline(kind, features, poisoned, split, seed=3)
        np.testing.assert_array_equal(a.score(features, rows, cols), b.score(features, rows, cols))


def test_element_is_chosen_inside_the_fold() -> None:
    # Layer 0 separates the training deposits perfectly but not the held-out one (index 0);
    # layer 1 is the better layer over all deposits. The fold must choose layer 0, a fit on
    # all deposits layer 1; layer 2 is layer 0 negated, so a sign error would pick it.
    n_dep, n_neg = 6, 6
    rows = np.zeros(n_dep + n_neg, dtype=np.int64)
    cols = np.arange(n_dep + n_neg, dtype=np.int64)
    labels = np.array([1] * n_dep + [0] * n_neg)
    layer0 = np.array([-5.0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0])
    layer1 = np.array([2.0, 2, 2, 2, 0.5, 2, 1, 0, 0, 0, 0, 0])
    stack = np.stack([layer0, layer1, -layer0])[:, None, :].astype(np.float32)
    feats = cell_features(stack, ["a", "b", "c"], None, 1)
    train = np.arange(1, n_dep + n_neg)
    fold = fit_baseline("element", feats, rows[train], cols[train], labels[train])
    full = fit_baseline("element", feats, rows, cols, labels)
    assert (fold.layer, fold.sign) == (0, 1.0)
    assert full.layer == 1
    assert fold.info["train_auc"] == pytest.approx(1.0)
    assert full.info["train_auc"] == pytest.approx(roc_auc_score(labels, layer1))
    # The negated layer is chosen, with a negative sign, when it is the only one.
    only_neg = cell_features(stack[2:], ["c"], None, 1)
    neg = fit_baseline("element", only_neg, rows[train], cols[train], labels[train])
    assert (neg.layer, neg.sign) == (0, -1.0)
    assert neg.description.startswith("-c")
    scores = neg.score(only_neg, rows, cols)
    assert np.all((scores > 0) & (scores < 1))
    assert roc_auc_score(labels[train], scores[train]) == pytest.approx(1.0)


def test_same_seed_same_result(setting: dict) -> None:
    samples: SampleSet = setting["samples"]
    split = setting["folds"][1]
    features = _features(setting, split)
    rows, cols = np.nonzero(setting["valid"])
    for kind in BASELINES:
        a = fit_fold_baseline(kind, features, samples, split, seed=7).score(features, rows, cols)
        b = fit_fold_baseline(kind, features, samples, split, seed=7).score(features, rows, cols)
        np.testing.assert_array_equal(a, b)
        assert np.all((a >= 0) & (a <= 1)), kind
    rf = [
        fit_fold_baseline("random-forest", features, samples, split, seed=s).score(
            features, rows, cols
        )
        for s in (0, 1)
    ]
    assert not np.array_equal(rf[0], rf[1])


def test_knowledge_baseline_is_the_weight(setting: dict) -> None:
    split = setting["folds"][0]
    features = _features(setting, split)
    model = fit_fold_baseline("knowledge", features, setting["samples"], split)
    score = model.score_map(features, setting["valid"])
    valid = setting["valid"]
    np.testing.assert_allclose(score[valid], setting["knowledge"][valid], rtol=1e-6)
    assert np.isnan(score[~valid]).all()
    with pytest.raises(GkdcnError, match="knowledge"):
        fit_fold_baseline("knowledge", features, setting["samples"], split, has_knowledge=False)


def test_fitted_models_learn_the_district(setting: dict) -> None:
    # On the training windows the fitted models separate deposits from negatives well.
    samples: SampleSet = setting["samples"]
    split = setting["folds"][0]
    features = _features(setting, split)
    train = split.train
    for kind in ("logistic", "random-forest"):
        model = fit_fold_baseline(kind, features, samples, split)
        s = model.score(features, samples.rows[train], samples.cols[train])
        assert roc_auc_score(samples.labels[train], s) > 0.9, kind


def test_unknown_baseline_and_one_class() -> None:
    feats = cell_features(np.zeros((1, 3, 3), np.float32), ["a"], None, 1)
    with pytest.raises(GkdcnError, match="unknown baseline"):
        fit_baseline("svm", feats, np.array([0]), np.array([0]), np.array([1]))
    with pytest.raises(GkdcnError, match="both"):
        fit_baseline("logistic", feats, np.array([0, 1]), np.array([0, 1]), np.array([1, 1]))


def test_element_ignores_the_background() -> None:
    # Layer 0 separates the deposits from the labelled non-deposits, layer 1 only from the
    # background: element is chosen on the labelled windows either way (module docstring).
    from gkdcn.models.baselines import BackgroundCells

    layer0 = np.array([3.0, 3, 3, 0, 0, 0, 5, 0, 5, 0])
    layer1 = np.array([1.0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    feats = cell_features(
        np.stack([layer0, layer1])[:, None, :].astype(np.float32), ["a", "b"], None, 1
    )
    rows, cols = np.zeros(6, np.int64), np.arange(6, dtype=np.int64)
    labels = np.array([1, 1, 1, 0, 0, 0])
    bg = BackgroundCells(np.zeros(4, np.int64), np.arange(6, 10, dtype=np.int64))
    without = fit_baseline("element", feats, rows, cols, labels)
    with_bg = fit_baseline("element", feats, rows, cols, labels, background=bg)
    assert without.layer == with_bg.layer == 0
    assert len(with_bg.background_rows) == 0
    # The fitted models do learn from it: the background cells pull logistic's scores there.
    plain = fit_baseline("logistic", feats, rows, cols, labels)
    fitted = fit_baseline("logistic", feats, rows, cols, labels, background=bg)
    np.testing.assert_array_equal(fitted.background_cols, bg.cols)
    assert (
        fitted.score(feats, bg.rows, bg.cols).mean() < plain.score(feats, bg.rows, bg.cols).mean()
    )


@pytest.mark.parametrize("loss", ["soft", "nnpu", "bce"])
def test_background_weighs_as_much_as_in_the_network_loss(setting: dict, loss: str) -> None:
    # The background's total weight is background_weight x the labelled windows'; soft labels
    # put class_prior of it on the positive side. Checked through the fitted logistic model:
    # duplicating rows by hand with the same weights gives the same coefficients.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gkdcn.models.baselines import BackgroundCells

    samples: SampleSet = setting["samples"]
    split = setting["folds"][0]
    features = _features(setting, split)
    rng = np.random.default_rng(0)
    far = np.flatnonzero(setting["valid"])
    pick = rng.choice(far, 30, replace=False)
    bg = BackgroundCells(pick // SPEC.width, pick % SPEC.width, loss=loss, prior=0.1, weight=2.0)
    model = fit_fold_baseline("logistic", features, samples, split, background=bg)
    train = split.train
    x_lab = features.at(samples.rows[train], samples.cols[train])
    x_bg = features.at(bg.rows, bg.cols)
    per_cell = 2.0 * len(train) / 30
    if loss == "bce":
        x = np.concatenate([x_lab, x_bg])
        y = np.concatenate([samples.labels[train], np.zeros(30)])
        w = np.concatenate([np.ones(len(train)), np.full(30, per_cell)])
    else:
        x = np.concatenate([x_lab, x_bg, x_bg])
        y = np.concatenate([samples.labels[train], np.ones(30), np.zeros(30)])
        w = np.concatenate(
            [np.ones(len(train)), np.full(30, 0.1 * per_cell), np.full(30, 0.9 * per_cell)]
        )
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=0))
    ref.fit(x, y.astype(int), logisticregression__sample_weight=w)
    np.testing.assert_allclose(model.estimator.pipeline_[-1].coef_, ref[-1].coef_, rtol=1e-6)
    assert model.info["n_background"] == 30


def test_element_never_chooses_the_knowledge_channel() -> None:
    # With the knowledge weight fed as a channel, it can be the best "layer"; element must still
    # choose an element (the knowledge channel is the knowledge baseline), and refuse a stack
    # that holds nothing else.
    from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL

    rows = np.zeros(8, dtype=np.int64)
    cols = np.arange(8, dtype=np.int64)
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    perfect = np.array([5.0, 5, 5, 5, 0, 0, 0, 0])
    weaker = np.array([2.0, 2, 0, 2, 1, 0, 0, 0])
    stack = np.stack([perfect, weaker])[:, None, :].astype(np.float32)
    feats = cell_features(stack, [KNOWLEDGE_CHANNEL, "Au"], None, 1)
    fit = fit_baseline("element", feats, rows, cols, labels)
    assert fit.layer == 1
    assert fit.info["layer"] == "Au"
    only = cell_features(stack[:1], [KNOWLEDGE_CHANNEL], None, 1)
    with pytest.raises(GkdcnError, match="element layer"):
        fit_baseline("element", only, rows, cols, labels)
