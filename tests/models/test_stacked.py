"""Stacked training (several seeds as one grouped model) equals one-at-a-time training.

Same seeds must give the same weights, histories, best epochs, calibration and scores as
:func:`gkdcn.training.loop.fit_network` within floating-point tolerance (grouped layers sum in another
order), for CNN and DCN, plain and GK losses, with and without a validation set (members stop
early on their own), and with a different background pool per member (as in a comparison).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from affine import Affine

from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.background import background_pool
from gkdcn.data.samples import leave_one_deposit_out, make_samples
from gkdcn.errors import GkdcnError
from gkdcn.io.grid import Grid
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.models.stacked import StackedNet, stack_networks
from gkdcn.predict import predict_cells
from gkdcn.training.loop import TrainResult, fit_network
from gkdcn.training.stacked import fit_networks
from gkdcn.training.windows import PreparedWindows, prepare_windows
from helpers import make_sites

SIZE = 32
CELL = 1000.0
SEEDS = (0, 1, 2)


def _folds(validation: bool, double: bool = False) -> list[PreparedWindows]:
    """One leave-one-deposit-out fold, prepared once per seed with its own background pool
    (each seed excludes other cells, as a comparison's held-out background does); ``double``:
    the windows in float64."""
    rng = np.random.default_rng(0)
    raw = rng.lognormal(0.0, 0.3, size=(3, SIZE, SIZE)).astype(np.float32)
    deposits = [(5, 14), (12, 18), (22, 15), (27, 17)]
    negatives = [(6, 4), (25, 5), (10, 27), (24, 27)]
    for r, c in deposits:
        raw[:2, r - 1 : r + 2, c - 1 : c + 2] *= 5.0
    valid = np.asarray(np.isfinite(raw).all(axis=0), dtype=bool)
    sites = make_sites(
        [r for r, _ in deposits + negatives],
        [c for _, c in deposits + negatives],
        [1] * 4 + [0] * 4,
    )
    grid = Grid(
        crs=None, transform=Affine(CELL, 0, 0, 0, -CELL, SIZE * CELL), height=SIZE, width=SIZE
    )
    knowledge = np.clip(1 - np.abs(np.arange(SIZE) - 16) / 8, 0, 1).astype(np.float32)
    knowledge = np.broadcast_to(knowledge, (SIZE, SIZE)).copy()
    samples = make_samples(sites, grid.shape, shift=3)
    split = leave_one_deposit_out(samples, sites, grid, exclusion_radius=3000.0)[1]
    train = np.asarray(split.train, dtype=np.int64)
    if validation:  # a fifth of the training windows validate, so early stopping decides
        split.train, split.val = train[: -len(train) // 5], train[-len(train) // 5 :]
    else:
        split.val = np.zeros(0, dtype=np.int64)
    out = []
    for seed in SEEDS:
        exclude = np.zeros((SIZE, SIZE), dtype=bool)
        exclude[np.random.default_rng(seed).random((SIZE, SIZE)) < 0.3] = True
        pool = background_pool(
            valid, grid, sites, samples, split, min_distance=2000.0, exclusion_radius=3000.0,
            exclude=exclude,
        )  # fmt: skip
        data = prepare_windows(
            raw, ["a", "b", "c"], knowledge, samples, split, TransformConfig(method="log"),
            7, "zero", background=pool,
        )  # fmt: skip
        if double:
            assert data.features is not None and data.weight is not None
            for part in (data.train, data.val):
                part.x, part.y = part.x.astype(np.float64), part.y.astype(np.float64)
                part.knowledge = part.knowledge.astype(np.float64)
            data.features, data.weight = (
                data.features.astype(np.float64),
                data.weight.astype(np.float64),
            )
        out.append(data)
    return out


@pytest.fixture
def float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _assert_same(
    stacked: TrainResult, solo: TrainResult, cells: tuple[np.ndarray, ...], atol: float
) -> None:
    assert stacked.best_epoch == solo.best_epoch
    assert list(stacked.history.columns) == list(solo.history.columns)
    np.testing.assert_allclose(
        stacked.history.to_numpy(float), solo.history.to_numpy(float), rtol=1e-4, atol=1e-5
    )
    assert stacked.bundle.state.keys() == solo.bundle.state.keys()
    last_bias = [k for k in solo.bundle.state if k.startswith("head.")][-1]
    for key, value in solo.bundle.state.items():
        if key in BN_CANCELLED:
            continue
        ours, theirs = stacked.bundle.state[key].double(), value.double()
        if key == last_bias and "calibration" in solo.bundle.info:  # less each one's offset
            ours = ours - stacked.bundle.info["calibration"]["logit_offset"]
            theirs = theirs - solo.bundle.info["calibration"]["logit_offset"]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=atol, msg=key)
    for key in BN_CANCELLED:  # they drift by rounding noise only: at most a few Adam steps
        diff = (stacked.bundle.state[key] - solo.bundle.state[key]).abs().max()
        assert diff < 10 * TrainConfig().lr, key
    a, b = stacked.bundle.info, solo.bundle.info
    for key in ("n_train", "n_val", "n_background_pool", "background_per_epoch"):
        assert a[key] == b[key], key
    if "calibration" in b:
        assert a["calibration"]["logit_offset"] == pytest.approx(
            b["calibration"]["logit_offset"], abs=max(2e-3, 20 * atol)
        )
    for key in ("gk_a", "gk_b"):
        assert (key in a) == (key in b)
        if key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-5)
    raw, rows, cols = cells
    np.testing.assert_allclose(
        predict_cells(stacked.bundle, raw, ["a", "b", "c"], rows, cols),
        predict_cells(solo.bundle, raw, ["a", "b", "c"], rows, cols),
        rtol=0,
        atol=20 * atol,
    )


# A convolution's bias right before batch norm has no effect on the training loss (batch norm
# subtracts it), so its gradient is rounding noise, which Adam scales up to steps of size lr:
# such biases, and the running means that follow them, differ at the lr scale between any two
# summation orders. What they leave in the scores (bias minus running mean) is ~1e-4 in the
# logit: the calibration offsets and probabilities are compared at that scale.
BN_CANCELLED = [f"conv{i}.bias" for i in (1, 2, 3)] + [f"bn{i}.running_mean" for i in (1, 2, 3)]


CASES = [
    # kind, validation, extra settings
    ("cnn", False, {}),
    ("dcn", False, {}),
    ("gk-cnn", True, {}),
    ("gk-dcn", True, {}),
    ("cnn", True, {"background_loss": "nnpu", "head": "flatten"}),
    ("gk-cnn", False, {"gk_loss": "weighted-abs", "background_loss": "bce"}),
]


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("kind", "validation", "extra"), CASES)
def test_stacked_equals_one_at_a_time_in_float64(kind: str, validation: bool, extra: dict) -> None:
    # In float64 rounding cannot be amplified into visible differences (see BN_CANCELLED and
    # the DCN note below), so the stack must reproduce every number of the solo runs.
    folds = _folds(validation, double=True)
    cfg = TrainConfig(
        width=8, epochs=4, batch_size=16, patience=1 if validation else None,
        background_ratio=2.0, calibration="none", **extra,
    )  # fmt: skip
    stacked = fit_networks(kind, folds, cfg, SEEDS)  # type: ignore[arg-type]
    solo = [fit_network(kind, f, cfg, seed=s) for f, s in zip(folds, SEEDS, strict=True)]  # type: ignore[arg-type]
    for a, b in zip(stacked, solo, strict=True):
        assert a.best_epoch == b.best_epoch
        assert list(a.history.columns) == list(b.history.columns)
        np.testing.assert_allclose(
            a.history.to_numpy(float), b.history.to_numpy(float), rtol=1e-9, atol=1e-12
        )
        assert a.bundle.state.keys() == b.bundle.state.keys()
        for key, value in b.bundle.state.items():
            atol = 1e-7 if key in BN_CANCELLED else 1e-12  # rounding noise times Adam's 1/eps
            torch.testing.assert_close(a.bundle.state[key], value, rtol=1e-9, atol=atol, msg=key)
        for key in ("gk_a", "gk_b"):
            assert (key in a.bundle.info) == (key in b.bundle.info)
            if key in b.bundle.info:
                assert a.bundle.info[key] == pytest.approx(b.bundle.info[key], abs=1e-12)
    # the members really differ (their own seeds and draws), so the test could fail
    first, second = solo[0].bundle.state, solo[1].bundle.state
    assert any(not torch.allclose(first[k], second[k]) for k in first)


@pytest.mark.parametrize("kind", ["cnn", "gk-dcn"])
def test_stacked_equals_one_at_a_time_in_float32(kind: str) -> None:
    # The real precision, calibration and scores included. DCNs for 2 epochs only: their
    # offsets start at exactly integer positions, where the bilinear weights have a kink, so a
    # rounding difference that moves an offset across an integer changes its gradient by O(1);
    # such differences grow ~10x per epoch between any two summation orders (about 1e-4 in the
    # offset weights after 2 epochs here), hence the looser weight tolerance. The CNN's
    # max-pool and ReLU kinks do the same more rarely: with one thread on an AVX-512 CPU one
    # member's weights differed by 2e-4 from the first 2 epochs on (the other two members' by
    # 3e-8), so the CNN gets the same tolerance (the float64 test above is exact).
    folds = _folds(False)
    cfg = TrainConfig(
        width=8, epochs=2 if "dcn" in kind else 4, batch_size=16, patience=None,
        background_ratio=2.0, precision="float32",
    )  # fmt: skip
    stacked = fit_networks(kind, folds, cfg, SEEDS)  # type: ignore[arg-type]
    solo = [fit_network(kind, f, cfg, seed=s) for f, s in zip(folds, SEEDS, strict=True)]  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    raw = rng.lognormal(0.0, 0.3, size=(3, SIZE, SIZE)).astype(np.float32)
    cells = (raw, rng.integers(0, SIZE, 50), rng.integers(0, SIZE, 50))
    atol = 1e-3
    for a, b in zip(stacked, solo, strict=True):
        _assert_same(a, b, cells, atol)


def test_members_stop_early_on_their_own() -> None:
    folds = _folds(True)
    cfg = TrainConfig(width=8, epochs=8, batch_size=16, patience=1, background_ratio=2.0)
    stacked = fit_networks("cnn", folds, cfg, SEEDS)
    solo = [fit_network("cnn", f, cfg, seed=s) for f, s in zip(folds, SEEDS, strict=True)]
    assert [len(r.history) for r in stacked] == [len(r.history) for r in solo]
    assert [r.best_epoch for r in stacked] == [r.best_epoch for r in solo]


def test_one_member_stack_and_state_round_trip() -> None:
    spec = ModelSpec(kind="dcn", in_channels=3, window=7, width=8)
    torch.manual_seed(0)
    nets = [build_network(spec) for _ in range(3)]
    stacked = stack_networks(nets)
    assert isinstance(stacked, StackedNet) and stacked.members == 3
    for index, net in enumerate(nets):
        for key, value in net.state_dict().items():
            assert torch.equal(stacked.member_state(index)[key], value), key
    x = [torch.randn(5, 3, 7, 7) for _ in nets]
    stacked.eval()
    with torch.no_grad():
        out = stacked(torch.cat(x, dim=1))
        expected = torch.stack([net.eval()(xi) for net, xi in zip(nets, x, strict=True)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError):
        stacked.member_state(3)


def test_folds_of_different_shapes_are_refused() -> None:
    folds = _folds(False)
    short = _folds(True)[0]
    cfg = TrainConfig(width=8, epochs=1, batch_size=16, patience=None)
    with pytest.raises(GkdcnError, match="one shape"):
        fit_networks("cnn", [folds[0], short], cfg, [0, 1])
    with pytest.raises(GkdcnError, match="one prepared fold per seed"):
        fit_networks("cnn", folds[:2], cfg, [0])
