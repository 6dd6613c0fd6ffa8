"""Grouped deposit folds (many deposits): clusters held out together, nothing near them trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from gkdcn.compare import fold_scheme, make_jobs, make_plan
from gkdcn.config import config_from_dict
from gkdcn.data import samples as samples_module
from gkdcn.data.samples import (
    DEFAULT_DEPOSIT_GROUPS,
    LODO_MAX_DEPOSITS,
    deposit_folds,
    grouped_deposit_folds,
    leave_one_deposit_out,
    make_samples,
)
from gkdcn.data.sites import SiteTable
from gkdcn.data.study import build_samples, load_study
from gkdcn.errors import GkdcnError
from gkdcn.io.grid import Grid
from helpers import make_sites, write_tiny_study

# Anisotropic cells (100 m wide, 50 m tall) so distances must use the real cell size.
GRID = Grid(
    crs=None, transform=Affine(100.0, 0.0, 500_000.0, 0.0, -50.0, 4_000_000.0), height=60, width=60
)


def three_clusters() -> SiteTable:
    """Three tight, far-apart clusters of 4 deposits each, interleaved in the table, + 3 others."""
    centres = [(8, 8), (8, 50), (50, 30)]
    rows, cols, labels = [], [], []
    for j in range(4):
        for r, c in centres:
            rows.append(r + j % 2 * 2)
            cols.append(c + j // 2 * 2)
            labels.append(1)
    rows += [30, 5, 55]
    cols += [30, 30, 5]
    labels += [0, 0, 0]
    return make_sites(rows, cols, labels)


def test_clusters_are_held_out_together_and_nothing_near_them_trains() -> None:
    sites = three_clusters()
    samples = make_samples(sites, GRID.shape, shift=3)
    radius = 400.0
    splits = grouped_deposit_folds(samples, sites, GRID, radius, groups=3, seed=1)
    assert [s.name for s in splits] == ["group-1of3", "group-2of3", "group-3of3"]
    held = [sorted(s.held_out.tolist()) for s in splits]
    # Table order interleaves the clusters: deposit i belongs to cluster i % 3.
    assert held == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    cw, ch = GRID.cell_size
    for split in splits:
        members = split.held_out
        np.testing.assert_array_equal(split.val, np.flatnonzero(np.isin(samples.site, members)))
        assert not set(samples.site[split.train].tolist()) & set(members.tolist())
        near = np.zeros(len(samples), dtype=bool)
        for d in members:
            dist = np.hypot(
                (samples.cols - sites.cols[d]) * cw, (samples.rows - sites.rows[d]) * ch
            )
            near |= dist <= radius
        # Exactly everything else trains, the non-deposits included.
        np.testing.assert_array_equal(
            split.train, np.flatnonzero(~near & ~np.isin(samples.site, members))
        )
        assert "group" in split.description and "400 map units" in split.description
    # Every deposit is scored exactly once.
    assert sorted(d for h in held for d in h) == list(range(12))


@settings(max_examples=25, deadline=None)
@given(
    n_dep=st.integers(3, 14),
    groups=st.integers(2, 14),
    radius=st.sampled_from([0.0, 150.0, 800.0]),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_every_deposit_scored_once_by_a_model_that_never_saw_it(
    n_dep: int, groups: int, radius: float, seed: int, data: st.DataObject
) -> None:
    groups = min(groups, n_dep)
    n = n_dep + 4
    rows = data.draw(st.lists(st.integers(0, GRID.height - 1), min_size=n, max_size=n))
    cols = data.draw(st.lists(st.integers(0, GRID.width - 1), min_size=n, max_size=n))
    sites = make_sites(rows, cols, [1] * n_dep + [0] * 4)
    samples = make_samples(sites, GRID.shape, shift=1)
    splits = grouped_deposit_folds(samples, sites, GRID, radius, groups=groups, seed=seed)
    assert len(splits) == groups
    assert all(s.held_out.size >= 1 for s in splits)
    assert sorted(np.concatenate([s.held_out for s in splits]).tolist()) == list(range(n_dep))
    cw, ch = GRID.cell_size
    for split in splits:
        for d in split.held_out:
            dist = np.hypot((samples.cols - cols[d]) * cw, (samples.rows - rows[d]) * ch)
            assert np.all(dist[split.train] > radius)
            assert d not in samples.site[split.train]
    again = grouped_deposit_folds(samples, sites, GRID, radius, groups=groups, seed=seed)
    for a, b in zip(splits, again, strict=True):  # seeded: the same folds every time
        np.testing.assert_array_equal(a.held_out, b.held_out)
        np.testing.assert_array_equal(a.train, b.train)


def test_deposit_folds_keeps_lodo_for_few_deposits_and_groups_many() -> None:
    rng = np.random.default_rng(0)
    few = LODO_MAX_DEPOSITS
    sites = make_sites(
        rng.integers(0, 60, few + 2).tolist(), rng.integers(0, 60, few + 2).tolist(),
        [1] * few + [0, 0],
    )  # fmt: skip
    samples = make_samples(sites, GRID.shape)
    splits, scheme = deposit_folds(samples, sites, GRID, 100.0)
    lodo = leave_one_deposit_out(samples, sites, GRID, 100.0)
    assert [s.name for s in splits] == [s.name for s in lodo]
    assert scheme.startswith("leave-one-deposit-out") and f"{few} folds" in scheme

    many = 45
    sites = make_sites(
        rng.integers(0, 60, many).tolist(), rng.integers(0, 60, many).tolist(), [1] * many
    )
    samples = make_samples(sites, GRID.shape)
    splits, scheme = deposit_folds(samples, sites, GRID, 100.0)
    assert len(splits) == DEFAULT_DEPOSIT_GROUPS
    assert scheme.startswith("grouped deposit folds") and "45 deposits" in scheme
    splits, scheme = deposit_folds(samples, sites, GRID, 100.0, groups=many)
    assert len(splits) == many and scheme.startswith("leave-one-deposit-out")


def test_bad_group_counts_are_one_line_errors() -> None:
    sites = three_clusters()
    samples = make_samples(sites, GRID.shape)
    for groups in (1, 13):
        with pytest.raises(GkdcnError, match="use 2 to 12 groups"):
            grouped_deposit_folds(samples, sites, GRID, groups=groups)
    with pytest.raises(GkdcnError, match="exclusion radius"):
        grouped_deposit_folds(samples, sites, GRID, -1.0, groups=2)


def test_compare_lodo_groups_many_deposits_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "study"
    raw = write_tiny_study(
        root,
        split={"method": "site", "validation_fraction": 0.25, "seed": 0, "exclusion_radius": 2.0},
        compare={"seeds": 1, "models": ["cnn"], "protocols": ["lodo"], "heldout_background": 0},
    )
    study = load_study(config_from_dict(raw, base_dir=root))
    samples, _ = build_samples(study)
    plan = make_plan(study.config)
    deposits = np.flatnonzero(study.sites.labels == 1).tolist()
    folds = {job.fold for job in make_jobs(study, samples, plan)}
    assert folds == {f"lodo-{study.sites.ids[d]}" for d in deposits}  # few deposits: LODO
    assert fold_scheme("lodo", study, samples).startswith("leave-one-deposit-out")
    # The tiny study's 4 deposits count as "many" once the threshold is below them.
    monkeypatch.setattr(samples_module, "LODO_MAX_DEPOSITS", 3)
    monkeypatch.setattr(samples_module, "DEFAULT_DEPOSIT_GROUPS", 2)
    jobs = list(make_jobs(study, samples, plan))
    assert sorted(job.fold for job in jobs) == ["group-1of2", "group-2of2"]
    assert sorted(d for job in jobs for d in job.split.held_out) == deposits
    for job in jobs:
        assert not np.isin(samples.site[job.split.train], job.split.held_out).any()
    assert fold_scheme("lodo", study, samples).startswith("grouped deposit folds: 4 deposits")
