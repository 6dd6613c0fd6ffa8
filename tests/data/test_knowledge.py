"""Faults -> distance -> proximity weight (gkdcn.data.knowledge)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from shapely.geometry import LineString, Point

from gkdcn.config import DecayConfig
from gkdcn.data.knowledge import (
    distance_to_lines,
    fault_mask,
    proximity_weight,
    ring_weights,
    weights_from_faults,
)
from gkdcn.errors import GkdcnError
from gkdcn.io.grid import Grid

TIANSHAN = Path(__file__).parents[3] / "shared/data/tianshan"
CRS_UTM = CRS.from_epsg(32645)


def _grid(height: int, width: int, cell_w: float = 1000.0, cell_h: float = 1000.0) -> Grid:
    return Grid(CRS_UTM, Affine(cell_w, 0.0, 0.0, 0.0, -cell_h, height * cell_h), height, width)


def _lines(*geoms: LineString, crs: CRS | None = CRS_UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"fault_id": list(range(len(geoms)))}, geometry=list(geoms), crs=crs)


def _ring_formula(distance: np.ndarray, width: float, n: int, p: float) -> np.ndarray:
    """The paper's ring weight, written out independently of the module."""
    ring = np.floor(distance / width) + 1
    w = (ring**-p - n**-p) / (1 - n**-p)
    return np.where(ring >= n, 0.0, w)


def test_vertical_fault_distances_and_ring_weights_by_column() -> None:
    grid = _grid(3, 51)
    # A fault through the centres of column 10 touches only that column.
    fault = _lines(LineString([(10_500.0, -1000.0), (10_500.0, 4000.0)]))
    distance = distance_to_lines(fault, grid)
    expected_d = np.abs(np.arange(51) - 10) * 1000.0
    assert distance.dtype == np.float64
    np.testing.assert_allclose(distance, np.broadcast_to(expected_d, (3, 51)))

    decay = DecayConfig(kind="rings", ring_width=2000.0, rings=12, exponent=0.46)
    weight = proximity_weight(distance, decay)
    assert weight.dtype == np.float32
    expected_w = _ring_formula(expected_d, 2000.0, 12, 0.46)
    np.testing.assert_allclose(weight[1], expected_w, rtol=1e-6, atol=1e-7)
    assert weight[0, 10] == 1.0 and weight[0, 11] == 1.0  # fault cell and first ring: ring 1
    assert weight[0, 12] < 1.0  # 2000 m: ring 2
    assert np.all(weight[:, 32:] == 0)  # 22 km and beyond: ring 12 -> 0
    assert weight[0, 31] > 0  # 21 km: ring 11, the last non-zero level


def test_non_square_cells_use_per_axis_spacing() -> None:
    grid = _grid(9, 7, cell_w=500.0, cell_h=1000.0)
    vertical = _lines(LineString([(250.0, -10.0), (250.0, 10_000.0)]))  # column 0
    np.testing.assert_allclose(distance_to_lines(vertical, grid)[4], np.arange(7) * 500.0)
    horizontal = _lines(LineString([(-10.0, 8500.0), (4000.0, 8500.0)]))  # row 0
    np.testing.assert_allclose(distance_to_lines(horizontal, grid)[:, 3], np.arange(9) * 1000.0)


def test_oblique_fault_distances_are_euclidean() -> None:
    grid = _grid(20, 20)
    fault = _lines(LineString([(500.0, 19_500.0), (500.0, 19_500.0 - 1e-3)]))  # one cell, (0, 0)
    distance = distance_to_lines(fault, grid)
    rows, cols = np.mgrid[0:20, 0:20]
    np.testing.assert_allclose(distance, np.hypot(rows, cols) * 1000.0)


def test_ring_boundaries_fall_in_the_outer_ring() -> None:
    decay = DecayConfig(ring_width=2000.0, rings=12, exponent=0.46)
    w = proximity_weight(np.array([0.0, 1999.999, 2000.0, 21_999.0, 22_000.0, np.inf]), decay)
    levels = ring_weights(decay).astype(np.float32)
    np.testing.assert_array_equal(w, [levels[0], levels[0], levels[1], levels[10], 0.0, 0.0])


def test_exponential_decay_and_nan() -> None:
    decay = DecayConfig(kind="exponential", scale=3000.0)
    d = np.array([[0.0, 1500.0, 3000.0], [9000.0, np.nan, 1e9]])
    w = proximity_weight(d, decay)
    expected = np.array([[1.0, np.exp(-0.5), np.exp(-1.0)], [np.exp(-3.0), 0.0, 0.0]])
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-7)
    assert w.dtype == np.float32


def test_nan_distance_gives_zero_ring_weight() -> None:
    w = proximity_weight(np.array([np.nan, 0.0]), DecayConfig())
    np.testing.assert_array_equal(w, [0.0, 1.0])


def test_negative_distance_is_refused() -> None:
    with pytest.raises(GkdcnError, match="non-negative"):
        proximity_weight(np.array([-1.0]), DecayConfig())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=2, max_size=30),
    st.floats(10.0, 5000.0),
    st.integers(2, 30),
    st.floats(0.05, 3.0),
)
def test_ring_weight_is_in_unit_interval_and_non_increasing(
    distances: list[float], width: float, rings: int, exponent: float
) -> None:
    d = np.sort(np.array(distances))
    decay = DecayConfig(ring_width=width, rings=rings, exponent=exponent)
    w = proximity_weight(d, decay)
    assert np.all((w >= 0) & (w <= 1))
    assert np.all(np.diff(w) <= 0)


def test_weights_from_faults_returns_weight_and_distance() -> None:
    grid = _grid(5, 9)
    fault = _lines(LineString([(4500.0, -100.0), (4500.0, 6000.0)]))
    weight, distance = weights_from_faults(fault, grid, DecayConfig(ring_width=1000.0, rings=4))
    np.testing.assert_allclose(distance[0], np.abs(np.arange(9) - 4) * 1000.0)
    np.testing.assert_array_equal(
        weight, proximity_weight(distance, DecayConfig(ring_width=1000.0, rings=4))
    )
    assert weight.shape == grid.shape


def test_lines_outside_the_grid_are_an_error() -> None:
    grid = _grid(5, 5)
    far = _lines(LineString([(1e6, 1e6), (1.1e6, 1.2e6)]))
    with pytest.raises(GkdcnError, match="no line touches the grid"):
        distance_to_lines(far, grid)


def test_empty_and_non_line_inputs_are_errors() -> None:
    grid = _grid(5, 5)
    with pytest.raises(GkdcnError, match="no line geometries"):
        distance_to_lines(gpd.GeoDataFrame(geometry=[], crs=CRS_UTM), grid)
    with pytest.raises(GkdcnError, match="must be lines"):
        distance_to_lines(gpd.GeoDataFrame(geometry=[Point(2500, 2500)], crs=CRS_UTM), grid)


def test_crs_mismatch_is_an_error() -> None:
    grid = _grid(5, 5)
    wgs = _lines(LineString([(87.0, 43.0), (87.1, 43.1)]), crs=CRS.from_epsg(4326))
    with pytest.raises(GkdcnError, match="reproject"):
        fault_mask(wgs, grid)


def test_lines_without_crs_are_taken_as_grid_crs() -> None:
    grid = _grid(5, 5)
    mask = fault_mask(_lines(LineString([(2500.0, -1.0), (2500.0, 6000.0)]), crs=None), grid)
    assert mask[:, 2].all() and mask.sum() == 5


@pytest.mark.skipif(not TIANSHAN.is_dir(), reason="tianshan data not present")
def test_tianshan_weight_levels_follow_the_ring_formula() -> None:
    with rasterio.open(TIANSHAN / "geology_weights.tif") as src:
        levels = np.unique(src.read(1))
    assert len(levels) == 12
    decay = DecayConfig(ring_width=2000.0, rings=12, exponent=0.46)
    expected = np.sort(np.append(ring_weights(decay), 0.0)).astype(np.float32)
    np.testing.assert_array_max_ulp(levels.astype(np.float32), expected, maxulp=1)
    # And proximity_weight reproduces the same 12 levels from ring-centre distances.
    ours = proximity_weight(np.arange(13) * 2000.0 + 1000.0, decay)
    np.testing.assert_array_max_ulp(np.sort(np.unique(ours)), expected, maxulp=1)
