"""Tests for gkdcn.data.samples: window centres, window cutting with augmentation, splits."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from gkdcn.config import SplitConfig
from gkdcn.data.samples import (
    SampleSet,
    Split,
    aug_codes,
    extract_windows,
    leave_one_deposit_out,
    make_samples,
    make_splits,
    padded_index,
    spatial_blocks,
    split_by_site,
    split_by_window,
)
from gkdcn.data.sites import SiteTable
from gkdcn.errors import GkdcnError
from gkdcn.io.grid import Grid
from helpers import make_sites

# Anisotropic cells (100 m wide, 50 m tall) so distances must use the real cell size.
GRID = Grid(
    crs=None, transform=Affine(100.0, 0.0, 500_000.0, 0.0, -50.0, 4_000_000.0), height=20, width=24
)


@st.composite
def site_tables(draw: st.DrawFn, min_per_class: int = 2) -> SiteTable:
    """Random site tables on GRID with at least ``min_per_class`` sites of each label."""
    n_dep = draw(st.integers(min_per_class, 7))
    n_non = draw(st.integers(min_per_class, 9))
    n = n_dep + n_non
    rows = draw(st.lists(st.integers(0, GRID.height - 1), min_size=n, max_size=n))
    cols = draw(st.lists(st.integers(0, GRID.width - 1), min_size=n, max_size=n))
    labels = [1] * n_dep + [0] * n_non
    order = draw(st.permutations(range(n)))
    return make_sites(rows, cols, [labels[i] for i in order])


def sites_on_both_sides(samples: SampleSet, split: Split) -> set[int]:
    return set(samples.site[split.train].tolist()) & set(samples.site[split.val].tolist())


# ---------------------------------------------------------------------------- samples


def test_make_samples_order_and_border_dropping() -> None:
    sites = make_sites([0, 5], [3, 5], [1, 0])
    s = make_samples(sites, (10, 10), shift=3)
    # Site 0 sits on the top edge: its dr = -1 row is dropped -> 6 centres; site 1 keeps 9.
    assert len(s) == 15
    assert s.site.tolist() == [0] * 6 + [1] * 9
    assert list(zip(s.rows[:6].tolist(), s.cols[:6].tolist(), strict=True)) == [
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 2),
        (1, 3),
        (1, 4),
    ]
    assert list(zip(s.rows[6:9].tolist(), s.cols[6:9].tolist(), strict=True)) == [
        (4, 4),
        (4, 5),
        (4, 6),
    ]
    assert s.labels.dtype == np.float32 and s.labels.tolist() == [1.0] * 6 + [0.0] * 9
    assert s.rows.dtype == np.int64 and s.aug.dtype == np.int8
    assert np.all(s.aug == 0)


@pytest.mark.parametrize(
    ("rotations", "flips", "codes"),
    [
        (False, False, [0]),
        (True, False, [0, 1, 2, 3]),
        (False, True, [0, 4]),
        (True, True, list(range(8))),
    ],
)
def test_make_samples_augmentation_codes(rotations: bool, flips: bool, codes: list[int]) -> None:
    assert aug_codes(rotations, flips).tolist() == codes
    sites = make_sites([5], [5], [1])
    s = make_samples(sites, (10, 10), shift=1, rotations=rotations, flips=flips)
    assert s.aug.tolist() == codes
    assert np.all(s.rows == 5) and np.all(s.cols == 5)
    s5 = make_samples(sites, (10, 10), shift=5, rotations=rotations, flips=flips)
    assert len(s5) == 25 * len(codes)
    # Augmentation is the innermost loop: the first len(codes) samples share a centre.
    assert np.all(s5.rows[: len(codes)] == 3) and np.all(s5.cols[: len(codes)] == 3)


def test_make_samples_rejects_bad_input() -> None:
    with pytest.raises(GkdcnError, match="outside"):
        make_samples(make_sites([0, 12], [0, 1], [1, 0]), (10, 10))
    with pytest.raises(GkdcnError, match="odd"):
        make_samples(make_sites([1], [1], [1]), (10, 10), shift=2)


def test_sample_set_subset_and_frame() -> None:
    s = make_samples(make_sites([2, 6], [2, 6], [1, 0]), (10, 10), shift=3, flips=True)
    sub = s.subset(np.array([3, 0, 20]))
    assert sub.rows.tolist() == [s.rows[3], s.rows[0], s.rows[20]]
    assert sub.site.tolist() == [0, 0, 1]
    mask = s.labels == 0
    assert len(s.subset(mask)) == int(mask.sum())
    frame = s.to_frame()
    assert list(frame.columns) == ["row", "col", "label", "site", "aug"]
    assert len(frame) == len(s)
    assert frame["aug"].tolist() == s.aug.tolist()
    with pytest.raises(IndexError, match="out of range"):
        s.subset([len(s)])
    with pytest.raises(ValueError, match="differ in length"):
        SampleSet(rows=[1, 2], cols=[1], labels=[0, 1], site=[0, 0], aug=[0, 0])


# ---------------------------------------------------------------------------- windows


def slow_windows(
    features: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int, padding: str
) -> np.ndarray:
    """Reference: pad the whole map once with numpy, then slice window by window."""
    half = window // 2
    mode = "constant" if padding == "zero" else "reflect"
    padded = np.pad(features, ((0, 0), (half, half), (half, half)), mode=mode)
    return np.stack(
        [padded[:, r : r + window, c : c + window] for r, c in zip(rows, cols, strict=True)]
    ).astype(np.float32)


@pytest.mark.parametrize("padding", ["zero", "reflect"])
@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_extract_windows_matches_pad_and_slice_everywhere(padding: str, window: int) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 6, 7)).astype(np.float32)
    rr, cc = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")  # every cell, all borders
    rows, cols = rr.ravel(), cc.ravel()
    got = extract_windows(features, rows, cols, window, padding)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (rows.size, 3, window, window)
    np.testing.assert_array_equal(got, slow_windows(features, rows, cols, window, padding))
    centre = window // 2
    np.testing.assert_array_equal(got[:, :, centre, centre], features[:, rows, cols].T)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    window=st.sampled_from([1, 3, 5, 7, 11]),
    padding=st.sampled_from(["zero", "reflect"]),
    seed=st.integers(0, 2**16),
)
def test_extract_windows_matches_reference_on_tiny_maps(
    height: int, width: int, window: int, padding: str, seed: int
) -> None:
    # Windows wider than the map: reflection repeats the way numpy's does.
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, height, width))
    rows = rng.integers(0, height, size=5)
    cols = rng.integers(0, width, size=5)
    got = extract_windows(features, rows, cols, window, padding)
    np.testing.assert_array_equal(got, slow_windows(features, rows, cols, window, padding))


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_extract_windows_applies_augmentation_codes(padding: str) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 8, 9)).astype(np.float32)
    rows = np.array([0, 3, 7, 4, 1, 6, 2, 5, 3, 0])
    cols = np.array([0, 4, 8, 2, 7, 1, 5, 3, 4, 8])
    aug = np.array([0, 1, 2, 3, 4, 5, 6, 7, 5, 3], dtype=np.int8)
    plain = extract_windows(features, rows, cols, 5, padding)
    got = extract_windows(features, rows, cols, 5, padding, aug=aug)
    for n, code in enumerate(aug):
        expected = np.rot90(plain[n], int(code) % 4, axes=(1, 2))
        if code >= 4:
            expected = np.flip(expected, axis=2)
        np.testing.assert_array_equal(got[n], expected)
    # Spot-check the convention itself on a window with distinct entries.
    np.testing.assert_array_equal(got[1, 0], plain[1, 0].T[::-1])  # rot90 counter-clockwise
    np.testing.assert_array_equal(got[4, 0], plain[4, 0][:, ::-1])  # code 4: horizontal flip
    # All eight codes are distinct transforms of a generic window.
    all_codes = extract_windows(
        features, np.full(8, 3), np.full(8, 4), 5, padding, aug=np.arange(8)
    )
    flat = {all_codes[k].tobytes() for k in range(8)}
    assert len(flat) == 8


def test_zero_padding_is_zero_even_next_to_nan() -> None:
    features = np.ones((1, 3, 3), dtype=np.float32)
    features[0, 0, 0] = np.nan
    got = extract_windows(features, np.array([0]), np.array([0]), 3, "zero")[0, 0]
    assert np.isnan(got[1, 1])
    assert got[0].tolist() == [0, 0, 0] and got[:, 0].tolist() == [0, 0, 0]


def test_extract_windows_rejects_bad_input() -> None:
    # API misuse (centres, window, padding are checked by the callers): plain ValueError, not
    # a user error.
    features = np.zeros((2, 5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="outside") as info:
        extract_windows(features, np.array([5]), np.array([0]), 3, "zero")
    assert not isinstance(info.value, GkdcnError)
    with pytest.raises(ValueError, match="outside"):
        extract_windows(features, np.array([0]), np.array([-1]), 3, "reflect")
    with pytest.raises(ValueError, match="odd"):
        extract_windows(features, np.array([0]), np.array([0]), 4, "zero")
    with pytest.raises(ValueError, match="padding"):
        extract_windows(features, np.array([0]), np.array([0]), 3, "edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"0\.\.7"):
        extract_windows(features, np.array([0]), np.array([0]), 3, "zero", aug=np.array([8]))
    with pytest.raises(ValueError, match="shaped"):
        extract_windows(features[0], np.array([0]), np.array([0]), 3, "zero")


def test_padded_index_matches_numpy_reflect() -> None:
    for size in (1, 2, 3, 7):
        idx = np.arange(-15, size + 15)
        got, ok = padded_index(idx, size, "reflect")
        expected = np.pad(np.arange(size), 15, mode="reflect")
        np.testing.assert_array_equal(got, expected)
        assert ok.all()
    got, ok = padded_index(np.array([-2, 0, 4, 5]), 5, "zero")
    assert got.tolist() == [0, 0, 4, 4] and ok.tolist() == [False, True, True, False]


# ---------------------------------------------------------------------------- site split


@settings(max_examples=40, deadline=None)
@given(
    sites=site_tables(),
    seed=st.integers(0, 2**32 - 1),
    fraction=st.floats(0.05, 0.95),
    flips=st.booleans(),
)
def test_site_split_keeps_every_site_on_one_side(
    sites: SiteTable, seed: int, fraction: float, flips: bool
) -> None:
    samples = make_samples(sites, GRID.shape, shift=3, flips=flips)
    split = split_by_site(samples, sites, fraction, seed)
    assert not sites_on_both_sides(samples, split)
    # A partition of all samples.
    assert np.intersect1d(split.train, split.val).size == 0
    assert np.union1d(split.train, split.val).tolist() == list(range(len(samples)))
    assert set(samples.site[split.val].tolist()) == set(split.held_out.tolist())
    # Stratified by site label: round(fraction * n), at least 1 on each side.
    labels = np.asarray(sites.labels)
    for label in (0, 1):
        n = int((labels == label).sum())
        k = int((labels[split.held_out] == label).sum())
        assert k == min(max(round(fraction * n), 1), n - 1)
    again = split_by_site(samples, sites, fraction, seed)
    np.testing.assert_array_equal(again.val, split.val)
    np.testing.assert_array_equal(again.train, split.train)


def test_site_split_depends_on_seed_and_rejects_single_site_class() -> None:
    rng = np.random.default_rng(3)
    sites = make_sites(
        rng.integers(0, 20, 30).tolist(), rng.integers(0, 24, 30).tolist(), [1] * 10 + [0] * 20
    )
    samples = make_samples(sites, GRID.shape)
    helds = {tuple(split_by_site(samples, sites, 0.3, s).held_out) for s in range(5)}
    assert len(helds) > 1
    lonely = make_sites([1, 2, 3], [1, 2, 3], [1, 0, 0])
    with pytest.raises(GkdcnError, match="single deposit site"):
        split_by_site(make_samples(lonely, GRID.shape), lonely, 0.2, 0)


# ---------------------------------------------------------------------------- window split


def test_window_split_is_stratified_and_leaks_sites() -> None:
    rng = np.random.default_rng(4)
    sites = make_sites(
        rng.integers(2, 18, 12).tolist(), rng.integers(2, 22, 12).tolist(), [1] * 4 + [0] * 8
    )
    samples = make_samples(sites, GRID.shape, shift=3, rotations=True)
    split = split_by_window(samples, 0.25, seed=7)
    assert split.name == "window"
    assert "authors" in split.description and "leak" in split.description
    assert split.held_out.size == 0
    assert np.union1d(split.train, split.val).tolist() == list(range(len(samples)))
    assert np.intersect1d(split.train, split.val).size == 0
    for label in (0.0, 1.0):
        n = int((samples.labels == label).sum())
        assert int((samples.labels[split.val] == label).sum()) == round(0.25 * n)
    # The documented leak: windows of the same site on both sides.
    assert len(sites_on_both_sides(samples, split)) > 0
    np.testing.assert_array_equal(split_by_window(samples, 0.25, seed=7).val, split.val)
    assert not np.array_equal(split_by_window(samples, 0.25, seed=8).val, split.val)


# ---------------------------------------------------------------------------- lodo


@settings(max_examples=40, deadline=None)
@given(sites=site_tables(min_per_class=1), radius=st.sampled_from([0.0, 100.0, 250.0, 1000.0]))
def test_lodo_never_trains_near_or_on_the_held_out_deposit(sites: SiteTable, radius: float) -> None:
    samples = make_samples(sites, GRID.shape, shift=3)
    splits = leave_one_deposit_out(samples, sites, GRID, exclusion_radius=radius)
    labels = np.asarray(sites.labels)
    deposits = np.flatnonzero(labels == 1)
    assert [int(s.held_out[0]) for s in splits] == deposits.tolist()
    cw, ch = GRID.cell_size
    for split, d in zip(splits, deposits, strict=True):
        assert split.name == f"lodo-{sites.ids[d]}"
        assert np.all(samples.site[split.val] == d)
        assert split.val.size == int((samples.site == d).sum())
        assert not sites_on_both_sides(samples, split)
        assert d not in samples.site[split.train]
        # Independent distance check in map units (cells are 100 x 50).
        dist = np.hypot((samples.cols - sites.cols[d]) * cw, (samples.rows - sites.rows[d]) * ch)
        assert np.all(dist[split.train] > radius)
        # Everything else stays in training, non-deposits included.
        rest = (samples.site != d) & (dist > radius)
        np.testing.assert_array_equal(split.train, np.flatnonzero(rest))


def test_lodo_radius_drops_neighbouring_windows_only_within_radius() -> None:
    # Deposit 0 at (10, 10); non-deposit 1 two columns east (200 m), non-deposit 2 far away.
    sites = make_sites([10, 10, 2], [10, 12, 2], [1, 0, 0])
    samples = make_samples(sites, GRID.shape, shift=3)
    (no_radius,) = leave_one_deposit_out(samples, sites, GRID, 0.0)
    assert np.all(samples.site[no_radius.train] != 0)
    assert set(samples.site[no_radius.train].tolist()) == {1, 2}
    (with_radius,) = leave_one_deposit_out(samples, sites, GRID, 150.0)
    kept = with_radius.train
    # Site 1's windows in columns 11 (100 m away, rows within 1 cell = 50 m) go; column 13 stays.
    assert not np.any((samples.site[kept] == 1) & (samples.cols[kept] == 11))
    assert np.any((samples.site[kept] == 1) & (samples.cols[kept] == 13))
    assert int((samples.site[kept] == 2).sum()) == 9
    with pytest.raises(GkdcnError, match="at least one deposit"):
        leave_one_deposit_out(samples, make_sites([1, 2, 3], [1, 2, 3], [0, 0, 0]), GRID)


# ---------------------------------------------------------------------------- blocks


@settings(max_examples=40, deadline=None)
@given(
    sites=site_tables(),
    seed=st.integers(0, 2**32 - 1),
    folds=st.integers(2, 4),
    block_size=st.sampled_from([300.0, 500.0, 800.0]),
)
def test_spatial_blocks_partition_sites_into_folds(
    sites: SiteTable, seed: int, folds: int, block_size: float
) -> None:
    samples = make_samples(sites, GRID.shape, shift=3)
    try:
        splits = spatial_blocks(samples, sites, GRID, block_size, folds, seed)
    except GkdcnError as exc:
        assert "contain deposits" in str(exc)
        return
    assert len(splits) == folds
    labels = np.asarray(sites.labels)
    vals = [s.val for s in splits]
    # Folds' validation sets are disjoint and cover all samples; same for held-out sites.
    assert np.sort(np.concatenate(vals)).tolist() == list(range(len(samples)))
    assert np.sort(np.concatenate([s.held_out for s in splits])).tolist() == list(range(len(sites)))
    x, y = GRID.xy(sites.rows, sites.cols)
    left, _, _, top = GRID.bounds
    block_of = list(
        zip(
            np.floor((x - left) / block_size).tolist(),
            np.floor((top - y) / block_size).tolist(),
            strict=True,
        )
    )
    for split in splits:
        assert not sites_on_both_sides(samples, split)
        assert np.union1d(split.train, split.val).size == len(samples)
        assert labels[split.held_out].sum() >= 1  # every fold validates on a deposit
        held = set(split.held_out.tolist())
        # Whole blocks move together: no block is split across folds.
        for i in range(len(sites)):
            for j in range(len(sites)):
                if block_of[i] == block_of[j]:
                    assert (i in held) == (j in held)
    again = spatial_blocks(samples, sites, GRID, block_size, folds, seed)
    for a, b in zip(splits, again, strict=True):
        np.testing.assert_array_equal(a.val, b.val)


def test_spatial_blocks_errors_when_too_few_deposit_blocks() -> None:
    sites = make_sites([1, 2, 15, 18], [1, 2, 20, 3], [1, 1, 0, 0])  # both deposits in one block
    samples = make_samples(sites, GRID.shape)
    with pytest.raises(GkdcnError, match="only 1 block"):
        spatial_blocks(samples, sites, GRID, 1000.0, 2, 0)


def test_spatial_blocks_balance_deposits() -> None:
    # Eight deposits, each in its own 500 m block, dealt over 4 folds: two per fold.
    rows = [0, 0, 0, 0, 19, 19, 19, 19, 10]
    cols = [0, 6, 12, 18, 0, 6, 12, 18, 3]
    sites = make_sites(rows, cols, [1] * 8 + [0])
    samples = make_samples(sites, GRID.shape)
    splits = spatial_blocks(samples, sites, GRID, 500.0, 4, seed=11)
    counts = [int(np.asarray(sites.labels)[s.held_out].sum()) for s in splits]
    assert counts == [2, 2, 2, 2]
    other = spatial_blocks(samples, sites, GRID, 500.0, 4, seed=12)
    assert any(
        not np.array_equal(a.held_out, b.held_out) for a, b in zip(splits, other, strict=True)
    )


# ---------------------------------------------------------------------------- dispatch


def test_make_splits_dispatches_on_config() -> None:
    rng = np.random.default_rng(5)
    sites = make_sites(
        rng.integers(0, 20, 16).tolist(), rng.integers(0, 24, 16).tolist(), [1] * 6 + [0] * 10
    )
    samples = make_samples(sites, GRID.shape)
    (site,) = make_splits(samples, sites, GRID, SplitConfig(method="site", seed=3))
    assert site.name == "site"
    np.testing.assert_array_equal(site.val, split_by_site(samples, sites, 0.2, 3).val)
    (window,) = make_splits(samples, sites, GRID, SplitConfig(method="window"))
    assert window.name == "window"
    lodo = make_splits(samples, sites, GRID, SplitConfig(method="lodo", exclusion_radius=200.0))
    assert len(lodo) == 6
    blocks = make_splits(
        samples, sites, GRID, SplitConfig(method="blocks", block_size=100.0, folds=3)
    )
    assert len(blocks) == 3 and all(s.name.startswith("blocks-") for s in blocks)
