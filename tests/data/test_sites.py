"""Tests for gkdcn.data.sites and gkdcn.io.vectors: sites from rasters and points, negatives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.crs import CRS as RasterioCRS  # noqa: N811
from shapely.geometry import LineString, Point, Polygon

from gkdcn.data.sites import (
    SiteTable,
    drop_invalid,
    sample_negatives,
    sites_from_points,
    sites_from_raster,
)
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import AlignmentWarning
from gkdcn.io.vectors import read_lines, read_points
from helpers import CELL, CRS, ORIGIN, TRANSFORM

MakeRaster = Callable[..., Path]
GRID = Grid(crs=RasterioCRS.from_string(CRS), transform=TRANSFORM, height=10, width=12)


def centre(row: int, col: int) -> tuple[float, float]:
    return ORIGIN[0] + (col + 0.5) * CELL, ORIGIN[1] - (row + 0.5) * CELL


def assert_one_line(exc: pytest.ExceptionInfo[GkdcnError], *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


# --- SiteTable ----------------------------------------------------------------------------


def table() -> SiteTable:
    return SiteTable(
        ids=np.array(["D01", "D02", "N01"]),
        labels=np.array([1, 1, 0]),
        rows=np.array([1, 4, 7]),
        cols=np.array([2, 5, 9]),
    )


def test_site_table_basics() -> None:
    t = table()
    assert len(t) == 3
    assert t.labels.dtype == np.int8 and t.rows.dtype == np.int64 and t.cols.dtype == np.int64
    assert t.deposits().ids.tolist() == ["D01", "D02"]
    assert t.non_deposits().rows.tolist() == [7]
    both = t.deposits().concat(t.non_deposits())
    assert both.ids.tolist() == ["D01", "D02", "N01"]
    assert t.subset(np.array([2, 0])).ids.tolist() == ["N01", "D01"]
    with pytest.raises(ValueError):
        SiteTable(ids=np.array(["a"]), labels=np.array([2]), rows=np.array([0]), cols=np.array([0]))
    with pytest.raises(ValueError):
        SiteTable(ids=np.array(["a", "b"]), labels=np.array([1]), rows=[0], cols=[0])


def test_site_table_frame_round_trip() -> None:
    t = table()
    frame = t.to_frame(GRID)
    assert list(frame.columns) == ["site_id", "label", "row", "col", "x", "y"]
    assert (frame.x[0], frame.y[0]) == centre(1, 2)
    back = SiteTable.from_frame(frame)
    for name in ("ids", "labels", "rows", "cols"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))


# --- sites from rasters -------------------------------------------------------------------


def test_sites_from_raster_ids_sorted_and_nodata_ignored(make_raster: MakeRaster) -> None:
    data = np.zeros(GRID.shape, dtype=np.uint8)
    data[6, 1] = data[2, 8] = data[2, 3] = 1
    data[0, 0] = 9  # nodata: never a site, whatever `value`
    path = make_raster("lab.tif", data, nodata=9)
    sites = sites_from_raster(path, GRID, "strict", value=1, label=1, id_prefix="D")
    assert sites.ids.tolist() == ["D01", "D02", "D03"]
    assert list(zip(sites.rows.tolist(), sites.cols.tolist(), strict=True)) == [
        (2, 3),
        (2, 8),
        (6, 1),
    ]
    assert (sites.labels == 1).all()
    assert len(sites_from_raster(path, GRID, "strict", value=9, label=1, id_prefix="D")) == 0
    # The Tianshan non-deposit coding: 0 marks the site, 1 elsewhere.
    coded = 1 - np.minimum(data, 1)
    coded[0, 0] = 9
    inverted = make_raster("neg.tif", coded, nodata=9)
    negatives = sites_from_raster(inverted, GRID, "strict", value=0, label=0, id_prefix="N")
    assert negatives.ids.tolist() == ["N01", "N02", "N03"] and (negatives.labels == 0).all()


def test_sites_from_raster_index_aligned(make_raster: MakeRaster) -> None:
    data = np.zeros((12, 15), dtype=np.uint8)
    data[3, 4] = 1
    data[11, 14] = 1  # outside the 10 x 12 element grid once lined up by index: cropped
    path = make_raster("lab.tif", data, transform=Affine(CELL, 0, 0, 0, -CELL, 0))
    with pytest.raises(InputError) as exc:
        sites_from_raster(path, GRID, "strict", 1, 1, "D")
    assert_one_line(exc, "lab.tif", "align")
    with pytest.warns(AlignmentWarning):
        sites = sites_from_raster(path, GRID, "index", 1, 1, "D")
    assert (sites.rows.tolist(), sites.cols.tolist()) == ([3], [4])


def test_drop_invalid_reports_ids() -> None:
    valid = np.ones(GRID.shape, dtype=bool)
    valid[4, 5] = False
    kept, messages = drop_invalid(table(), valid)
    assert kept.ids.tolist() == ["D01", "N01"]
    assert len(messages) == 1 and "D02" in messages[0] and "nodata" in messages[0]


# --- sites from points --------------------------------------------------------------------


def points(coords: list[tuple[float, float]], ids: list[str]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"site_id": ids}, geometry=[Point(x, y) for x, y in coords], crs=CRS)


def test_sites_from_points_skips_and_reports() -> None:
    valid = np.ones(GRID.shape, dtype=bool)
    valid[5, 5] = False
    x, y = centre(2, 3)
    gdf = points(
        [
            (x, y),
            centre(5, 5),  # on nodata
            (ORIGIN[0] - 10.0, ORIGIN[1] - 10.0),  # just west of the grid
            (x + 300.0, y - 200.0),  # same cell as the first
            centre(9, 11),  # last cell: inside
        ],
        ["a", "b", "c", "d", "e"],
    )
    sites, messages = sites_from_points(gdf, GRID, valid, label=1)
    assert sites.ids.tolist() == ["a", "e"]
    assert sites.rows.tolist() == [2, 9] and sites.cols.tolist() == [3, 11]
    assert len(messages) == 3
    assert "site b" in messages[0] and "nodata" in messages[0]
    assert "site c" in messages[1] and "outside" in messages[1]
    assert "site d" in messages[2] and "with site a" in messages[2]


# --- negatives ----------------------------------------------------------------------------


def test_sample_negatives_distance_validity_and_seed() -> None:
    grid = Grid(crs=None, transform=Affine(100, 0, 0, 0, -50, 0), height=40, width=30)
    deposits = SiteTable(
        np.array(["D1", "D2"]), np.array([1, 1]), np.array([10, 30]), np.array([5, 20])
    )
    valid = np.ones(grid.shape, dtype=bool)
    valid[:, 25:] = False
    neg = sample_negatives(deposits, valid, grid, count=25, min_distance=800.0, seed=3)
    assert len(neg) == 25 and (neg.labels == 0).all()
    assert valid[neg.rows, neg.cols].all()
    # Distances between cell centres with 100 m x 50 m cells.
    dx = (neg.cols[:, None] - deposits.cols[None]) * 100.0
    dy = (neg.rows[:, None] - deposits.rows[None]) * 50.0
    assert np.hypot(dx, dy).min() >= 800.0
    assert len(set(zip(neg.rows.tolist(), neg.cols.tolist(), strict=True))) == 25
    assert neg.ids[0] == "R01"
    order = neg.rows * grid.width + neg.cols
    assert (np.diff(order) > 0).all()
    again = sample_negatives(deposits, valid, grid, count=25, min_distance=800.0, seed=3)
    np.testing.assert_array_equal(again.rows, neg.rows)
    other = sample_negatives(deposits, valid, grid, count=25, min_distance=800.0, seed=4)
    assert not np.array_equal(other.rows * 100 + other.cols, neg.rows * 100 + neg.cols)


def test_sample_negatives_not_enough_cells() -> None:
    deposits = SiteTable(np.array(["D1"]), np.array([1]), np.array([5]), np.array([6]))
    valid = np.ones(GRID.shape, dtype=bool)
    with pytest.raises(InputError) as exc:
        sample_negatives(deposits, valid, GRID, count=10, min_distance=20_000.0, seed=0)
    assert_one_line(exc, "only 0 valid cells", "min_distance")


# --- read_points / read_lines -------------------------------------------------------------


def test_read_points_csv(tmp_path: Path) -> None:
    path = tmp_path / "deps.csv"
    x, y = centre(2, 3)
    pd.DataFrame({"name": ["Au-1", "Au-2"], "E": [x, x + 1000], "N": [y, y]}).to_csv(
        path, index=False
    )
    gdf = read_points(path, x="E", y="N", id="name", target_crs=GRID.crs)
    assert gdf["site_id"].tolist() == ["Au-1", "Au-2"]
    assert gdf.crs is not None and gdf.crs.to_epsg() == 32645  # the grid CRS by default
    assert (gdf.geometry.x[0], gdf.geometry.y[0]) == (x, y)
    plain = read_points(path, x="E", y="N")
    assert plain["site_id"].tolist() == ["1", "2"]


def test_read_points_csv_other_crs_reprojected(tmp_path: Path) -> None:
    path = tmp_path / "deps.csv"
    pd.DataFrame({"lon": [87.0], "lat": [36.1]}).to_csv(path, index=False)
    gdf = read_points(path, x="lon", y="lat", crs="EPSG:4326", target_crs=GRID.crs)
    assert gdf.crs.to_epsg() == 32645
    assert abs(gdf.geometry.x[0] - 500_000.0) < 1.0  # 87 E is UTM 45N's central meridian


def test_read_points_csv_errors(tmp_path: Path) -> None:
    missing = tmp_path / "m.csv"
    missing.write_text("a,b\n1,2\n")
    with pytest.raises(InputError) as exc:
        read_points(missing)
    assert_one_line(exc, "m.csv", "'x', 'y' not found", "columns: a, b")
    text = tmp_path / "t.csv"
    text.write_text("x,y\n1,2\nabc,3\n")
    with pytest.raises(InputError) as exc:
        read_points(text)
    assert_one_line(exc, "t.csv", "column 'x' is not a number in line(s) 3")
    empty = tmp_path / "e.csv"
    empty.write_text("x,y\n")
    with pytest.raises(InputError) as exc:
        read_points(empty)
    assert_one_line(exc, "e.csv", "no points")
    with pytest.raises(InputError) as exc:
        read_points(tmp_path / "absent.csv")
    assert_one_line(exc, "absent.csv", "not found")
    dupes = tmp_path / "d.csv"
    dupes.write_text("id,x,y\nA,1,2\nA,3,4\n")
    with pytest.raises(InputError) as exc:
        read_points(dupes, id="id")
    assert_one_line(exc, "d.csv", "repeat", "A")


def test_read_points_vector_files(tmp_path: Path) -> None:
    x, y = centre(1, 1)
    gdf = gpd.GeoDataFrame({"code": ["P1"]}, geometry=[Point(x, y)], crs=CRS)
    gdf.to_crs("EPSG:4326").to_file(tmp_path / "pts.gpkg")
    back = read_points(tmp_path / "pts.gpkg", id="code", target_crs=GRID.crs)
    assert back.crs.to_epsg() == 32645 and back["site_id"].tolist() == ["P1"]
    assert abs(back.geometry.x[0] - x) < 1e-3 and abs(back.geometry.y[0] - y) < 1e-3

    with pytest.warns(UserWarning, match="crs"):  # pyogrio's own complaint about no CRS
        gpd.GeoDataFrame({"code": ["P1"]}, geometry=[Point(x, y)]).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(InputError) as exc:
        read_points(tmp_path / "nocrs.gpkg", target_crs=GRID.crs)
    assert_one_line(exc, "nocrs.gpkg", "no CRS")
    given = read_points(tmp_path / "nocrs.gpkg", crs=CRS, target_crs=GRID.crs)
    assert given.geometry.x[0] == x

    poly = Polygon([(x, y), (x + 10, y), (x, y + 10)])
    gpd.GeoDataFrame(geometry=[poly], crs=CRS).to_file(tmp_path / "poly.gpkg")
    with pytest.raises(InputError) as exc:
        read_points(tmp_path / "poly.gpkg")
    assert_one_line(exc, "poly.gpkg", "expected points", "Polygon")

    (tmp_path / "junk.gpkg").write_bytes(b"garbage" * 20)
    with pytest.raises(InputError) as exc:
        read_points(tmp_path / "junk.gpkg")
    assert_one_line(exc, "junk.gpkg", "cannot read")


def test_read_lines(tmp_path: Path) -> None:
    x, y = centre(0, 0)
    lines = gpd.GeoDataFrame(
        {"kind": ["fault", "zone"]},
        geometry=[
            LineString([(x, y), (x + 5000, y - 5000)]),
            Polygon([(x, y), (x + 1, y), (x, y + 1)]),
        ],
        crs=CRS,
    )
    lines.to_file(tmp_path / "mixed.gpkg")
    out = read_lines(tmp_path / "mixed.gpkg", target_crs=GRID.crs)
    assert out.geom_type.tolist() == ["LineString"] and out["kind"].tolist() == ["fault"]

    gpd.GeoDataFrame(geometry=[Point(x, y)], crs=CRS).to_file(tmp_path / "pts.gpkg")
    with pytest.raises(InputError) as exc:
        read_lines(tmp_path / "pts.gpkg")
    assert_one_line(exc, "pts.gpkg", "no lines", "Point")

    wgs = gpd.GeoDataFrame(geometry=[LineString([(87.0, 36.1), (87.05, 36.12)])], crs="EPSG:4326")
    wgs.to_file(tmp_path / "wgs.gpkg")
    projected = read_lines(tmp_path / "wgs.gpkg", target_crs=GRID.crs)
    assert projected.crs.to_epsg() == 32645
    assert abs(projected.geometry[0].coords[0][0] - 500_000.0) < 1.0

    with pytest.raises(InputError) as exc:
        read_lines(tmp_path / "absent.shp")
    assert_one_line(exc, "absent.shp", "not found")


def test_a_finer_label_raster_loses_no_site_when_resampled(tmp_path: Path) -> None:
    import warnings

    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from gkdcn.data.sites import sites_from_raster
    from gkdcn.io.grid import Grid

    grid = Grid(
        crs=CRS.from_epsg(32645), transform=Affine(1000, 0, 0, 0, -1000, 0), height=20, width=30
    )
    fine = np.zeros((80, 120), np.uint8)  # 250 m cells: 4 x 4 of them in each element cell
    fine[[3, 41, 41, 79], [5, 60, 61, 119]] = 1  # two of them share an element cell
    profile = {"driver": "GTiff", "height": 80, "width": 120, "count": 1, "crs": grid.crs}
    path = tmp_path / "fine.tif"
    with rasterio.open(path, "w", dtype="uint8", transform=Affine(250, 0, 0, 0, -250, 0),
                       **profile) as dst:  # fmt: skip
        dst.write(fine, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sites = sites_from_raster(path, grid, "resample", 1, 1, "D")
    assert list(zip(sites.rows, sites.cols, strict=True)) == [(0, 1), (10, 15), (19, 29)]
    assert any("make one site" in str(w.message) for w in caught)
