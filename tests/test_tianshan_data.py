"""The authors' Tianshan release through our data layer: cells, windows and the alignment check.

Skipped when the release is not next to the repository (``../shared/data/tianshan``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parents[2] / "shared/data/tianshan"
if not DATA.is_dir():
    pytest.skip(f"Tianshan data not found at {DATA}", allow_module_level=True)

from gkdcn.config import StudyConfig, config_from_dict, load_config  # noqa: E402
from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL  # noqa: E402
from gkdcn.data.study import Study, load_study  # noqa: E402
from gkdcn.errors import InputError  # noqa: E402
from gkdcn.io.rasters import open_elements  # noqa: E402

EXAMPLE = Path(__file__).parents[1] / "examples" / "tianshan.toml"
WINDOW = 9

# The README's cells on the element grid.
DEPOSITS = [(5, 51), (26, 100), (36, 126), (42, 159), (44, 87), (45, 87), (45, 175), (59, 177),
            (70, 232), (91, 241)]  # fmt: skip
NON_DEPOSITS = [(7, 11), (29, 39), (29, 62), (46, 114), (58, 65), (59, 200), (64, 107), (83, 94),
                (91, 153), (91, 221)]  # fmt: skip


@pytest.fixture(scope="module")
def config() -> StudyConfig:
    return load_config(EXAMPLE, data_dir=DATA)


@pytest.fixture(scope="module")
def study(config: StudyConfig) -> Study:
    return load_study(config)


def cells(rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def test_elements_read_fast_and_in_the_authors_order() -> None:
    start = time.perf_counter()
    with open_elements(DATA / "Geochemical_data") as source:
        stack = source.read()
        names = source.names
    elapsed = time.perf_counter() - start
    assert names[:6] == ["Ag", "Al2O3", "As", "Au", "B", "Ba"]
    assert names[-3:] == ["Y", "Zn", "Zr"] and len(names) == 39
    assert stack.shape == (39, 117, 289) and np.isfinite(stack).all()
    assert elapsed < 5.0  # about 0.3 s unloaded; generous for a busy CI machine


def test_sites_land_on_the_readme_cells(study: Study) -> None:
    assert study.grid.shape == (117, 289) and study.grid.crs.to_epsg() == 32645
    deposits, negatives = study.sites.deposits(), study.sites.non_deposits()
    assert cells(deposits.rows, deposits.cols) == DEPOSITS
    assert cells(negatives.rows, negatives.cols) == NON_DEPOSITS
    assert study.valid.all() and study.skipped == 0
    ignored = [n for n in study.notes if "header ignored" in n]
    assert len(ignored) == 3  # two label rasters and the weights
    assert any("Au_deposits0.tif" in n and "119 x 292" in n for n in ignored)


def test_knowledge_is_the_cropped_weight_raster(study: Study) -> None:
    import rasterio

    with rasterio.open(DATA / "geology_weights.tif") as ds:
        weights = ds.read(1)
    assert study.knowledge is not None
    np.testing.assert_array_equal(study.knowledge, weights[:117, :289])
    assert study.knowledge.min() == 0.0 and study.knowledge.max() == 1.0


@pytest.mark.parametrize("name", ["train", "verify"])
def test_windows_equal_the_authors_samples(study: Study, name: str) -> None:
    from gkdcn.data.samples import extract_windows

    authors = np.load(DATA / f"{name}_data.npy").transpose(0, 3, 1, 2)  # to (N, C, 9, 9)
    labels = np.load(DATA / f"{name}_labels.npy")
    assert authors.shape[1:] == (39, WINDOW, WINDOW)
    # Candidate centres: each site cell and its 8 neighbours, with the site's label.
    sites = study.sites
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    rows = np.array([r + dr for r in sites.rows for dr, _ in offsets])
    cols = np.array([c + dc for c in sites.cols for _, dc in offsets])
    cand_labels = np.repeat(sites.labels, len(offsets))
    # The example config feeds the knowledge weight as an extra channel; the authors' windows hold
    # the 39 elements only, so compare those.
    elements = [i for i, n in enumerate(study.names) if n != KNOWLEDGE_CHANNEL]
    ours = extract_windows(study.raw[elements], rows, cols, WINDOW, "zero")
    assert ours.shape == (len(rows), 39, WINDOW, WINDOW)
    flat = ours.reshape(len(rows), -1)
    for i, window in enumerate(authors):
        match = np.flatnonzero((flat == window.reshape(1, -1)).all(axis=1))
        assert match.size > 0, f"{name} window {i} matches no candidate centre"
        assert (cand_labels[match] == labels[i]).all(), f"{name} window {i}: label differs"


def test_without_index_alignment_loading_fails(config: StudyConfig) -> None:
    strict = config_from_dict(
        {**config.to_toml_dict(), "align": "strict"}, base_dir=config.base_dir
    )
    with pytest.raises(InputError) as exc:
        load_study(strict)
    text = str(exc.value)
    assert "\n" not in text
    assert (
        "Au_deposits0.tif" in text and "origin" in text and "shape 119 x 292 vs 117 x 289" in text
    )
    assert 'align = "index"' in text and 'align = "resample"' in text
