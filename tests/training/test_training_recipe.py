"""The training recipe: background windows, the PU risk, GK on the background, augmentation,
calibration, and the fold discipline they must keep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.background import background_pool, near_mask
from gkdcn.data.samples import leave_one_deposit_out, make_samples
from gkdcn.data.sites import SiteTable
from gkdcn.io.grid import Grid
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.losses import GKLoss, unlabelled_risk
from gkdcn.predict import predict_cells
from gkdcn.training.augmentation import augment_batch
from gkdcn.training.loop import fit_network
from gkdcn.training.windows import PreparedWindows, prepare_windows

SIZE = 40
CELL = 1000.0


def _district(seed: int = 0):
    """A 40 x 40 map: bright bodies at deposits near a 'fault' (column 20), noise elsewhere."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, 0.3, size=(3, SIZE, SIZE)).astype(np.float32)
    deposits = [(5, 18), (14, 22), (25, 19), (34, 21)]
    negatives = [(6, 5), (30, 6), (12, 34), (28, 33)]
    for r, c in deposits:
        raw[:2, r - 1 : r + 2, c - 1 : c + 2] *= 5.0
    raw[:, 0:3, 0:3] = np.nan  # a nodata corner
    valid = np.isfinite(raw).all(axis=0)
    sites = SiteTable(
        ids=np.array([f"D{i}" for i in range(4)] + [f"N{i}" for i in range(4)]),
        labels=np.array([1] * 4 + [0] * 4),
        rows=np.array([r for r, _ in deposits + negatives]),
        cols=np.array([c for _, c in deposits + negatives]),
    )
    grid = Grid(
        crs=None, transform=Affine(CELL, 0, 0, 0, -CELL, SIZE * CELL), height=SIZE, width=SIZE
    )
    knowledge = np.clip(1 - np.abs(np.arange(SIZE) - 20) / 10, 0, 1).astype(np.float32)
    knowledge = np.broadcast_to(knowledge, (SIZE, SIZE)).copy()
    samples = make_samples(sites, grid.shape, shift=3)
    return raw, valid, knowledge, sites, grid, samples


def _fold(radius: float = 4000.0, distance: float = 3000.0, exclude=None):
    raw, valid, knowledge, sites, grid, samples = _district()
    split = leave_one_deposit_out(samples, sites, grid, exclusion_radius=radius)[1]
    split.val = np.zeros(0, dtype=np.int64)  # as compare's folds: fixed epochs, no inner val
    pool = background_pool(
        valid, grid, sites, samples, split,
        min_distance=distance, exclusion_radius=radius, exclude=exclude,
    )  # fmt: skip
    data = prepare_windows(
        raw, ["a", "b", "c"], knowledge, samples, split, TransformConfig(method="log"), 7, "zero",
        background=pool,
    )  # fmt: skip
    return data, pool, split, sites, grid, samples, valid


def _cfg(**kw) -> TrainConfig:
    base = dict(width=8, epochs=3, batch_size=16, patience=None, background_ratio=3.0)
    return TrainConfig(**(base | kw))


def _distances(grid: Grid, rows, cols, r0: int, c0: int) -> np.ndarray:
    x, y = grid.xy(rows, cols)
    x0, y0 = grid.xy(np.array([r0]), np.array([c0]))
    return np.hypot(x - x0[0], y - y0[0])


# --------------------------------------------------------------------------------------------
# the pool


def test_background_keeps_away_from_held_out_and_training_deposits() -> None:
    _data, pool, split, sites, grid, samples, valid = _fold(radius=4000.0, distance=2000.0)
    held = int(split.held_out[0])
    assert len(pool) > 500
    d_held = _distances(grid, pool.rows, pool.cols, sites.rows[held], sites.cols[held])
    assert d_held.min() > 4000.0  # never within the exclusion radius of the held-out deposit
    for i in np.flatnonzero(sites.labels == 1):
        if i == held:
            continue
        assert _distances(grid, pool.rows, pool.cols, sites.rows[i], sites.cols[i]).min() > 2000.0
    assert valid[pool.rows, pool.cols].all()
    labelled = set(zip(samples.rows.tolist(), samples.cols.tolist(), strict=True))
    assert not labelled & set(zip(pool.rows.tolist(), pool.cols.tolist(), strict=True))


def test_background_leaves_out_the_excluded_cells() -> None:
    exclude = np.zeros((SIZE, SIZE), dtype=bool)
    exclude[30:, :] = True
    _, pool, *_ = _fold(exclude=exclude)
    assert len(pool) > 0 and not exclude[pool.rows, pool.cols].any()


def test_near_mask_counts_the_cell_k_away_at_radius_k() -> None:
    grid = Grid(crs=None, transform=Affine(CELL, 0, 0, 0, -CELL, 10 * CELL), height=10, width=10)
    mask = near_mask(grid, np.array([5]), np.array([5]), 2 * CELL)
    assert mask[5, 7] and mask[3, 5] and not mask[5, 8] and not mask[7, 7]
    assert near_mask(grid, np.array([5]), np.array([5]), 0.0).sum() == 1


def test_training_sees_only_the_folds_windows_and_its_pool(monkeypatch) -> None:
    data, pool, split, _sites, _grid, samples, _ = _fold()
    held = int(split.held_out[0])
    # labelled windows: exactly the fold's training samples, none of the held-out site
    assert len(data.train) == len(split.train)
    assert not np.isin(split.train, np.flatnonzero(samples.site == held)).any()
    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    original = PreparedWindows.background_windows

    def spy(self, rows, cols):  # type: ignore[no-untyped-def]
        drawn.append((np.asarray(rows).copy(), np.asarray(cols).copy()))
        return original(self, rows, cols)

    monkeypatch.setattr(PreparedWindows, "background_windows", spy)
    result = fit_network("gk-cnn", data, _cfg(epochs=3), seed=0)
    pool_cells = set(zip(pool.rows.tolist(), pool.cols.tolist(), strict=True))
    assert len(drawn) == 3 + 1  # one draw per epoch, one for the calibration
    per_epoch = [set(zip(r.tolist(), c.tolist(), strict=True)) for r, c in drawn[:3]]
    assert all(cells <= pool_cells for cells in per_epoch)
    assert per_epoch[0] != per_epoch[1]  # redrawn each epoch
    assert len(drawn[0][0]) == round(3.0 * len(split.train))
    assert result.bundle.info["background_per_epoch"] == len(drawn[0][0])


# --------------------------------------------------------------------------------------------
# losses


def test_unlabelled_risk_forms() -> None:
    u = torch.tensor([0.5, -1.0, 2.0])
    p = torch.tensor([3.0, 1.0])
    neg_u = torch.nn.functional.softplus(u).mean()
    assert torch.allclose(unlabelled_risk(u, p, "bce"), neg_u)
    expected = neg_u - 0.1 * torch.nn.functional.softplus(p).mean()
    assert torch.allclose(unlabelled_risk(u, p, "nnpu", 0.1), expected)
    assert float(unlabelled_risk(torch.tensor([-8.0]), p, "nnpu", 0.9)) == 0.0  # clipped at 0
    assert torch.allclose(unlabelled_risk(u, p[:0], "nnpu", 0.1), neg_u)  # no positives


def test_gk_prior_term_needs_no_label() -> None:
    logits = torch.tensor([0.0, 1.0])
    w = torch.tensor([0.2, 0.9])
    term = GKLoss("sigmoid-mse", 0.5).prior_term(logits, w)
    assert torch.allclose(term, 0.5 * torch.mean((torch.sigmoid(logits) - torch.sigmoid(w)) ** 2))
    assert float(GKLoss("weighted-abs", 0.5).prior_term(logits, w)) == 0.0


# --------------------------------------------------------------------------------------------
# the GK term on the background, seeds


def _background_logits(bundle: ModelBundle, data: PreparedWindows, pool) -> np.ndarray:
    net = bundle.network()
    x = data.background_windows(pool.rows[::7], pool.cols[::7]).x
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_gk_with_lambda_zero_is_exactly_bce() -> None:
    data, *_ = _fold()
    # the knowledge prior on the background is a lever of its own; off here
    cfg = _cfg(gk_lambda=0.0, knowledge_prior=False)
    gk = fit_network("gk-cnn", data, cfg, seed=2).bundle
    plain = fit_network("cnn", data, cfg, seed=2).bundle
    for key, value in plain.state.items():
        assert torch.equal(value, gk.state[key]), key


@pytest.mark.parametrize(
    "off",
    [
        {"gk_lambda": 0.0, "knowledge_prior": False},  # no knowledge at all
        {"gk_background": False, "knowledge_prior": False},  # GK on labelled windows only
    ],
)
def test_knowledge_changes_predictions_on_background_windows(off: dict) -> None:
    data, pool, *_ = _fold()
    base = dict(epochs=6, calibration="none", gk_lambda=1.0)
    with_gk = fit_network("gk-cnn", data, _cfg(**base), seed=2).bundle
    without = fit_network("gk-cnn", data, _cfg(**(base | off)), seed=2).bundle
    a = _background_logits(with_gk, data, pool)
    b = _background_logits(without, data, pool)
    assert np.abs(a - b).mean() > 5e-3


def test_knowledge_prior_raises_background_near_faults() -> None:
    """With soft background labels that follow the weight, background windows near the 'fault'
    (high weight) end up ranked above those far from it, relative to a flat prior."""
    data, pool, *_ = _fold()
    base = dict(epochs=8, calibration="none", background_loss="soft", gk_lambda=0.0)
    follows = fit_network("gk-cnn", data, _cfg(**base), seed=3).bundle
    flat = fit_network("gk-cnn", data, _cfg(**base, knowledge_prior=False), seed=3).bundle
    w = data.weight[pool.rows[::7], pool.cols[::7]]
    near, far = w > 0.6, w < 0.05
    gap_follows = _background_logits(follows, data, pool)
    gap_flat = _background_logits(flat, data, pool)
    lift = (gap_follows[near].mean() - gap_follows[far].mean()) - (
        gap_flat[near].mean() - gap_flat[far].mean()
    )
    assert lift > 0


def test_same_seed_same_result_with_the_whole_recipe() -> None:
    data, *_ = _fold()
    cfg = _cfg(augment=True, noise=0.1)
    one = fit_network("gk-dcn", data, cfg, seed=5)
    two = fit_network("gk-dcn", data, cfg, seed=5)
    other = fit_network("gk-dcn", data, cfg, seed=6)
    for key, value in one.bundle.state.items():
        assert torch.equal(value, two.bundle.state[key]), key
    assert one.history.equals(two.history)
    assert one.bundle.info["calibration"] == two.bundle.info["calibration"]
    assert any(not torch.equal(v, other.bundle.state[k]) for k, v in one.bundle.state.items())


# --------------------------------------------------------------------------------------------
# calibration and presets


def test_augmentation_moves_each_window_by_its_own_dihedral_code() -> None:
    # The one-gather augmentation against the documented convention, window by window: the
    # codes come from the generator first (torch.randint(0, 8)), so a fresh generator with the
    # same seed replays them.
    x = torch.randn(40, 3, 7, 7)
    out = augment_batch(x, torch.Generator().manual_seed(5))
    codes = torch.randint(0, 8, (40,), generator=torch.Generator().manual_seed(5))
    assert set(codes.tolist()) == set(range(8))  # every code is exercised
    for window, moved, code in zip(x.numpy(), out.numpy(), codes.tolist(), strict=True):
        expected = np.rot90(window, code % 4, axes=(-2, -1))
        if code >= 4:
            expected = np.flip(expected, axis=-1)
        np.testing.assert_array_equal(moved, expected)


def test_prior_shift_calibration_is_in_the_model_file_and_keeps_ranks(tmp_path) -> None:
    data, pool, _, _, _, _, _ = _fold()
    raw, *_ = _district()
    names = ["a", "b", "c"]
    cal = fit_network("cnn", data, _cfg(class_prior=0.02), seed=1).bundle
    raw_model = fit_network("cnn", data, _cfg(class_prior=0.02, calibration="none"), seed=1).bundle
    info = cal.info["calibration"]
    assert info["method"] == "prior-shift" and "calibration" not in raw_model.info
    path = cal.save(tmp_path / "model.pt")
    loaded = ModelBundle.load(path)
    rows, cols = pool.rows, pool.cols
    p_cal = predict_cells(loaded, raw, names, rows, cols)
    p_raw = predict_cells(raw_model, raw, names, rows, cols)
    # the mean over background is the prior (fitted on a draw of the same pool)
    assert abs(p_cal.mean() - 0.02) < 0.01
    logit = np.log(p_cal / (1 - p_cal)) - np.log(p_raw / (1 - p_raw))
    assert np.allclose(logit, info["logit_offset"], atol=1e-3)  # a pure shift: ranks unchanged


def test_authors_preset_switches_the_recipe_off() -> None:
    cfg = TrainConfig(preset="authors")
    assert cfg.background_ratio == 0 and not cfg.augment and cfg.noise == 0
    assert cfg.calibration == "none" and not cfg.gk_background
    assert TrainConfig().background_ratio > 0  # the default preset is the recipe


def test_without_a_pool_training_is_labelled_only() -> None:
    raw, _valid, knowledge, sites, grid, samples = _district()
    split = leave_one_deposit_out(samples, sites, grid)[0]
    data = prepare_windows(
        raw, ["a", "b", "c"], knowledge, samples, split, TransformConfig(method="log"), 7, "zero"
    )
    result = fit_network("cnn", data, _cfg(epochs=1), seed=0)
    assert result.bundle.info["background_per_epoch"] == 0
    assert "calibration" not in result.bundle.info


@pytest.mark.parametrize("kind", ["cnn", "gk-dcn"])
def test_recipe_trains_every_kind(kind: str) -> None:
    data, *_ = _fold()
    result = fit_network(kind, data, _cfg(epochs=2), seed=0)
    assert np.isfinite(result.history["train_loss"]).all()


# --------------------------------------------------------------------------------------------
# inside a comparison


def test_comparison_folds_draw_background_away_from_held_out_and_scored_cells(
    tmp_path, monkeypatch
) -> None:
    """In every held-out fold of ``compare``, the background pool keeps outside the exclusion
    radius of the held-out deposit, and off the cells that deposit is ranked against."""
    import gkdcn.training.study as train_module
    from gkdcn.compare import background_cells, make_plan, run_comparison, study_samples
    from gkdcn.config import config_from_dict
    from gkdcn.data.study import load_study
    from helpers import write_tiny_study

    root = tmp_path / "study"
    raw = write_tiny_study(
        root,
        train={"epochs": 1, "width": 8, "batch_size": 16, "patience": None},
        split={"method": "site", "validation_fraction": 0.25, "seed": 0, "exclusion_radius": 3.0},
        compare={"seeds": 1, "models": ["gk-cnn"], "protocols": ["lodo"], "bootstrap": 0,
                 "heldout_background": 60},
    )  # fmt: skip
    study = load_study(config_from_dict(raw, base_dir=root))
    seen: list[tuple[object, np.ndarray]] = []
    original = train_module.background_pool

    def spy(valid, grid, sites, samples, split, **kw):  # type: ignore[no-untyped-def]
        pool = original(valid, grid, sites, samples, split, **kw)
        seen.append((split, np.stack([pool.rows, pool.cols], axis=1)))
        return pool

    monkeypatch.setattr(train_module, "background_pool", spy)
    comparison = run_comparison(study, tmp_path / "run", make_plan(study.config), workers=1)
    samples = study_samples(study)
    bg_rows, bg_cols = background_cells(study, samples, 60, 0)
    scored = set(zip(bg_rows.tolist(), bg_cols.tolist(), strict=True))
    n_deposits = int((study.sites.labels == 1).sum())
    assert len(seen) == n_deposits
    for split, cells in seen:
        assert len(cells) > 0
        assert not scored & set(map(tuple, cells.tolist()))
        held = int(split.held_out[0])
        d = _distances(study.grid, cells[:, 0], cells[:, 1], study.sites.rows[held],
                       study.sites.cols[held])  # fmt: skip
        assert d.min() > 3.0
    cal = comparison.calibration["lodo"]
    assert set(cal["model"]) == {"gk-cnn"}
    assert 0 <= cal["area_above_0.5"].iloc[0] <= 1
    assert cal["heldout_deposits"].sum() == n_deposits
