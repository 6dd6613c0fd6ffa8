"""Tests for gkdcn.io.rasters: element layers, the alignment rule, GeoTIFF output."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS as RasterioCRS  # noqa: N811
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from gkdcn.errors import GkdcnError, InputError, OutputExistsError
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import (
    AlignmentWarning,
    ArraySource,
    ElementSource,
    grid_of,
    open_elements,
    read_layer_on_grid,
    read_probability_map,
    write_geotiff,
)
from helpers import CELL, CRS, ORIGIN, TRANSFORM

MakeRaster = Callable[..., Path]
SHAPE = (6, 8)


def values(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, size=shape).astype(np.float32)


def one_line_error(exc: pytest.ExceptionInfo[GkdcnError], *fragments: str) -> str:
    text = str(exc.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


GRID = Grid(crs=RasterioCRS.from_string(CRS), transform=TRANSFORM, height=6, width=8)


# --- open_elements ------------------------------------------------------------------------


def test_folder_layers_sorted_case_sensitive(make_raster: MakeRaster, tmp_path: Path) -> None:
    data = {name: values(i) for i, name in enumerate(["b", "B", "Al2O3", "Ag", "As"])}
    for name, v in data.items():
        make_raster(f"el/{name}.tif", v)
    (tmp_path / "el" / "notes.txt").write_text("not a layer")
    with open_elements(tmp_path / "el") as src:
        # Code-point order: upper case first, 'Ag' < 'Al2O3' < 'As'.
        assert src.names == ["Ag", "Al2O3", "As", "B", "b"]
        assert src.grid == GRID
        stack = src.read()
        assert stack.dtype == np.float32 and stack.shape == (5, *SHAPE)
        for i, name in enumerate(src.names):
            np.testing.assert_array_equal(stack[i], data[name])
        assert [p.stem for p in src.paths] == src.names


def test_explicit_layers_and_exclude(make_raster: MakeRaster, tmp_path: Path) -> None:
    for i, name in enumerate(["Cu", "Au", "As"]):
        make_raster(f"el/{name}.tif", values(i) + 1000 * i)
    with open_elements(tmp_path / "el", layers=["Cu", "As"]) as src:
        assert src.names == ["Cu", "As"]
        assert src.read()[1].min() > 2000  # As was written with offset 2000
    with open_elements(tmp_path / "el", exclude=["Au"]) as src:
        assert src.names == ["As", "Cu"]
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el", layers=["Cu", "Pb"])
    one_line_error(exc, "layers not found: Pb", "available: As, Au, Cu")
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el", exclude=["Hg"])
    one_line_error(exc, "Hg")


def test_nodata_and_nan_become_invalid(make_raster: MakeRaster, tmp_path: Path) -> None:
    a = values(0)
    a[1, 2] = -3.4028235e38  # the Tianshan-style float32 nodata, stored rounded
    b = values(1)
    b[3, 4] = np.nan  # NaN in data: masked, not an error
    b[0, 0] = np.inf
    make_raster("el/A.tif", a, nodata=-3.4028234663852886e38)
    make_raster("el/B.tif", b)
    with open_elements(tmp_path / "el") as src:
        stack = src.read()
        valid = src.valid()
    assert np.isnan(stack[0, 1, 2]) and np.isnan(stack[1, 3, 4]) and np.isnan(stack[1, 0, 0])
    assert np.isfinite(stack).sum() == stack.size - 3
    expected = np.ones(SHAPE, dtype=bool)
    expected[1, 2] = expected[3, 4] = expected[0, 0] = False
    np.testing.assert_array_equal(valid, expected)


def test_integer_nodata_masked(make_raster: MakeRaster) -> None:
    data = np.arange(48, dtype=np.uint8).reshape(SHAPE)
    path = make_raster("lab.tif", data, nodata=5)
    out = read_layer_on_grid(path, GRID, "strict", "nearest")
    assert out.dtype == np.float32
    assert np.isnan(out[0, 5]) and np.isfinite(out).sum() == 47
    assert out[2, 3] == data[2, 3]


def test_window_read_matches_full_read(make_raster: MakeRaster, tmp_path: Path) -> None:
    for i, name in enumerate(["X", "Y"]):
        make_raster(f"el/{name}.tif", values(i, (40, 50)))
    with open_elements(tmp_path / "el") as src:
        full = src.read()
        part = src.read(Window(col_off=7, row_off=11, width=20, height=9))
        np.testing.assert_array_equal(part, full[:, 11:20, 7:27])
        assert src.valid(Window(0, 0, 5, 3)).shape == (3, 5)
        with pytest.raises(ValueError):
            src.read(Window(45, 0, 10, 10))  # beyond the grid


def test_multiband_file_with_descriptions(make_raster: MakeRaster, tmp_path: Path) -> None:
    stack = np.stack([values(i) for i in range(3)])
    path = make_raster("stack.tif", stack, descriptions=["Zn", "Cu", "Au"])
    with open_elements(path) as src:
        assert src.names == ["Au", "Cu", "Zn"]
        np.testing.assert_array_equal(src.read(), stack[[2, 1, 0]])
    with open_elements(path, layers=["Cu"]) as src:
        np.testing.assert_array_equal(src.read()[0], stack[1])


def test_multiband_without_or_with_repeated_descriptions(make_raster: MakeRaster) -> None:
    stack = np.stack([values(i) for i in range(2)])
    bare = make_raster("bare.tif", stack)
    with pytest.raises(InputError) as exc:
        open_elements(bare)
    one_line_error(exc, "bare.tif", "descriptions")
    twice = make_raster("twice.tif", stack, descriptions=["Au", "Au"])
    with pytest.raises(InputError) as exc:
        open_elements(twice)
    one_line_error(exc, "twice.tif", "repeat: Au")


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "nowhere")
    one_line_error(exc, "nowhere", "not found")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "empty")
    one_line_error(exc, "empty", "no .tif")


def test_unreadable_file(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    (tmp_path / "el" / "Cu.tif").write_bytes(b"this is not a GeoTIFF \x00\x01\x02" * 10)
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "Cu.tif", "cannot read")


def test_same_layer_name_twice(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    make_raster("el/Au.tiff", values(1))
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "two files give layer 'Au'", "Au.tif", "Au.tiff")


def test_layer_with_other_shape_strict(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    make_raster("el/Cu.tif", values(1, (7, 8)))
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "Cu.tif", "shape 7 x 8 vs 6 x 8", 'align = "resample"', 'align = "index"')


def test_layer_with_other_crs_strict(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    make_raster("el/Cu.tif", values(1), crs="EPSG:32644")
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "Cu.tif", "CRS EPSG:32644 vs EPSG:32645", "align")


def test_all_nodata_layer(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    make_raster("el/Cu.tif", np.full(SHAPE, -9999, np.float32), nodata=-9999)
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "Cu.tif", "all nodata")


def test_folder_file_with_several_bands(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/Au.tif", values(0))
    make_raster("el/Cu.tif", np.stack([values(1), values(2)]))
    with pytest.raises(InputError) as exc:
        open_elements(tmp_path / "el")
    one_line_error(exc, "Cu.tif", "2 bands")


# --- the alignment rule -----------------------------------------------------------------


def test_same_grid_reads_directly(make_raster: MakeRaster) -> None:
    v = values(3)
    path = make_raster("w.tif", v)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignmentWarning)
        np.testing.assert_array_equal(read_layer_on_grid(path, GRID, "index"), v)
    assert grid_of(path) == GRID


def test_index_alignment_crops_pads_and_warns(make_raster: MakeRaster) -> None:
    big = values(4, (8, 5))  # taller and narrower than the 6 x 8 grid
    shifted = Affine(CELL, 0, ORIGIN[0] - 3 * CELL, 0, -CELL, ORIGIN[1] + 2 * CELL)
    path = make_raster("lab.tif", big, transform=shifted)
    with pytest.warns(AlignmentWarning) as record:
        out = read_layer_on_grid(path, GRID, "index", "nearest")
    message = str(record[0].message)
    assert "lab.tif" in message and "header ignored" in message
    assert "-3 columns" in message and "-2 rows" in message and "8 x 5" in message
    assert out.shape == SHAPE
    np.testing.assert_array_equal(out[:, :5], big[:6, :])  # top-left cells line up
    assert np.isnan(out[:, 5:]).all()  # padded


def test_index_alignment_ignores_crs_difference(make_raster: MakeRaster) -> None:
    path = make_raster(
        "other.tif", values(5), crs="EPSG:4326", transform=Affine(0.01, 0, 80, 0, -0.01, 40)
    )
    with pytest.warns(AlignmentWarning, match="also ignored: CRS"):
        out = read_layer_on_grid(path, GRID, "index")
    np.testing.assert_array_equal(out, values(5))


def test_strict_label_raster_names_both_options(make_raster: MakeRaster) -> None:
    shifted = Affine(CELL, 0, ORIGIN[0] + CELL, 0, -CELL, ORIGIN[1])
    path = make_raster("lab.tif", values(0), transform=shifted)
    with pytest.raises(InputError) as exc:
        read_layer_on_grid(path, GRID, "strict", "nearest")
    one_line_error(exc, "lab.tif", "origin", 'align = "resample"', 'align = "index"')


def test_resample_shifted_grid_nearest(make_raster: MakeRaster) -> None:
    v = values(6)
    shifted = Affine(CELL, 0, ORIGIN[0] + 2 * CELL, 0, -CELL, ORIGIN[1] - CELL)
    path = make_raster("lab.tif", v, transform=shifted)
    out = read_layer_on_grid(path, GRID, "resample", "nearest")
    # Georeferenced: element cell (r, c) is the file's cell (r - 1, c - 2).
    np.testing.assert_array_equal(out[1:, 2:], v[:-1, :-2])
    assert np.isnan(out[0]).all() and np.isnan(out[:, :2]).all()


def test_resample_coarser_grid_and_other_crs(make_raster: MakeRaster) -> None:
    coarse = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = make_raster(
        "coarse.tif", coarse, transform=Affine(2 * CELL, 0, ORIGIN[0], 0, -2 * CELL, ORIGIN[1])
    )
    out = read_layer_on_grid(path, GRID, "resample", "nearest")
    np.testing.assert_array_equal(out, np.kron(coarse, np.ones((2, 2))))
    # A constant layer in geographic coordinates covering the whole grid.
    geo = make_raster(
        "geo.tif",
        np.full((50, 50), 7.0, np.float32),
        crs="EPSG:4326",
        transform=Affine(0.01, 0, 86.8, 0, -0.01, 36.4),
    )
    with rasterio.open(geo) as ds:
        left, bottom, right, top = transform_bounds(ds.crs, CRS, *ds.bounds)
    assert left < GRID.bounds[0] and right > GRID.bounds[2]
    assert bottom < GRID.bounds[1] and top > GRID.bounds[3]
    out = read_layer_on_grid(geo, GRID, "resample", "bilinear")
    np.testing.assert_allclose(out, 7.0)


def test_resample_non_overlapping(make_raster: MakeRaster) -> None:
    far = Affine(CELL, 0, ORIGIN[0] + 100 * CELL, 0, -CELL, ORIGIN[1])
    path = make_raster("far.tif", values(0), transform=far)
    with pytest.raises(InputError) as exc:
        read_layer_on_grid(path, GRID, "resample")
    one_line_error(exc, "far.tif", "does not overlap")


def test_elements_resample_lazy_windows(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/A.tif", values(0, (30, 40)))
    fine = Affine(CELL / 2, 0, ORIGIN[0], 0, -CELL / 2, ORIGIN[1])
    make_raster("el/B.tif", values(1, (60, 80)), transform=fine)
    with open_elements(tmp_path / "el", align="resample") as src:
        full = src.read()
        assert np.isfinite(full).all()
        np.testing.assert_allclose(src.read(Window(5, 7, 10, 12)), full[:, 7:19, 5:15], rtol=1e-6)


def test_elements_index_alignment_warns(make_raster: MakeRaster, tmp_path: Path) -> None:
    make_raster("el/A.tif", values(0))
    make_raster("el/B.tif", values(1, (8, 10)), transform=Affine(CELL, 0, 0, 0, -CELL, 0))
    with pytest.warns(AlignmentWarning, match="B.tif"):
        src = open_elements(tmp_path / "el", align="index")
    with src:
        np.testing.assert_array_equal(src.read()[1], values(1, (8, 10))[:6, :8])
        np.testing.assert_array_equal(src.read(Window(6, 4, 2, 2))[1], values(1, (8, 10))[4:6, 6:8])


# --- write_geotiff ------------------------------------------------------------------------


def test_write_geotiff_round_trip(tmp_path: Path) -> None:
    bands = np.stack([values(0), values(1)])
    bands[0, 2, 2] = np.nan
    target = tmp_path / "out" / "stack.tif"
    write_geotiff(target, bands, GRID, nodata=math.nan, descriptions=["Au", "Cu"])
    with rasterio.open(target) as ds:
        assert ds.crs == GRID.crs and ds.transform == GRID.transform
        assert math.isnan(ds.nodata) and ds.descriptions == ("Au", "Cu")
        assert ds.profile["compress"].lower() == "deflate"
        np.testing.assert_array_equal(ds.read(), bands)
    assert [p.name for p in target.parent.iterdir()] == ["stack.tif"]  # no temporary left


def test_write_geotiff_integer_and_2d(tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, dtype=float)
    mask[1, 1] = 1
    mask[2, 2] = np.nan
    write_geotiff(tmp_path / "m.tif", mask, GRID, nodata=255, dtype="uint8")
    with rasterio.open(tmp_path / "m.tif") as ds:
        data = ds.read(1)
        assert ds.nodata == 255 and data.dtype == np.uint8
        assert data[1, 1] == 1 and data[2, 2] == 255 and data[0, 0] == 0


def test_write_geotiff_tiled_when_big(tmp_path: Path) -> None:
    grid = Grid(crs=GRID.crs, transform=TRANSFORM, height=300, width=260)
    write_geotiff(tmp_path / "big.tif", np.zeros((300, 260), np.float32), grid, nodata=None)
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.block_shapes == [(256, 256)] and ds.nodata is None


def test_write_geotiff_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "w.tif"
    write_geotiff(target, values(0), GRID, nodata=None)
    with pytest.raises(OutputExistsError):
        write_geotiff(target, values(1), GRID, nodata=None)
    with rasterio.open(target) as ds:
        np.testing.assert_array_equal(ds.read(1), values(0))
    write_geotiff(target, values(1), GRID, nodata=None, overwrite=True)
    with rasterio.open(target) as ds:
        np.testing.assert_array_equal(ds.read(1), values(1))


def test_write_geotiff_bad_shape_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit") as info:
        write_geotiff(tmp_path / "x.tif", np.zeros((5, 5)), GRID, nodata=None)
    assert not isinstance(info.value, GkdcnError)  # API misuse: a bug, not a user error
    with pytest.raises(ValueError, match="descriptions"):
        write_geotiff(tmp_path / "x.tif", values(0), GRID, nodata=None, descriptions=["a", "b"])
    assert list(tmp_path.iterdir()) == []


# --- in-memory source and probability maps ----------------------------------------------


def test_array_source_behaves_like_element_source() -> None:
    raw = np.stack([values(0), values(1)])
    raw[1, 2, 3] = np.inf
    with ArraySource(raw, ["Au", "Cu"], GRID) as src:
        assert isinstance(src, ElementSource) and src.names == ["Au", "Cu"] and src.count == 2
        part = src.read(Window(2, 1, 4, 3))
        np.testing.assert_array_equal(part[0], raw[0, 1:4, 2:6])
        assert np.isnan(part[1, 1, 1])  # the inf at (2, 3)
        assert src.valid().sum() == raw[0].size - 1
        part[0] = 0  # a copy: the source is unchanged
        assert src.read()[0, 1, 2] == raw[0, 1, 2]
    with pytest.raises(GkdcnError, match="does not fit"):
        ArraySource(raw, ["Au"], GRID)


def test_read_probability_map(tmp_path: Path) -> None:
    prob = np.linspace(0, 1, 48, dtype=np.float32).reshape(SHAPE)
    std = np.full(SHAPE, 0.1, np.float32)
    stack = np.stack([std, prob])
    stack[:, 0, 0] = -9999
    path = tmp_path / "map.tif"
    write_geotiff(path, stack, GRID, nodata=-9999, descriptions=["std", "probability"])
    out, valid, grid = read_probability_map(path)
    assert grid == GRID and out.dtype == np.float32
    assert not valid[0, 0] and np.isnan(out[0, 0]) and valid.sum() == 47
    np.testing.assert_array_equal(out[valid], prob[valid])
    std_out, _, _ = read_probability_map(path, band=1)
    assert std_out[1, 1] == np.float32(0.1)
    write_geotiff(tmp_path / "bad.tif", prob * 5, GRID, nodata=None)
    with pytest.raises(InputError) as exc:
        read_probability_map(tmp_path / "bad.tif")
    one_line_error(exc, "bad.tif", "outside [0, 1]")


def test_open_elements_checks_do_not_fill_the_block_cache(
    make_raster: MakeRaster, tmp_path: Path
) -> None:
    """Opening reads every layer once (nodata checks): GDAL's default cache (5 % of RAM) would
    keep all those blocks, so a big grid cost its whole decoded size before prediction read a
    row. Measured in a fresh process: resident memory grows by far less than the layers."""
    import subprocess
    import sys

    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc to read resident memory")
    rng = np.random.default_rng(0)
    layers, size = 12, 1024  # 48 MiB of float32 cells, three times the scan's cache
    for i in range(layers):
        make_raster(f"big/L{i:02d}.tif", rng.random((size, size), dtype=np.float32) + 0.1)
    make_raster("small/L00.tif", rng.random((64, 64), dtype=np.float32) + 0.1)
    script = (
        "from gkdcn.io.rasters import open_elements\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        f"with open_elements({str(tmp_path / 'small')!r}):\n"  # GDAL's own start-up memory
        "    pass\n"
        "before = rss()\n"
        f"with open_elements({str(tmp_path / 'big')!r}) as source:\n"
        "    print(rss() - before, len(source.names))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    grown, opened = int(out[0]), int(out[1])
    assert opened == layers
    assert grown < 32 * 2**20, f"opening grew resident memory by {grown / 2**20:.0f} MiB"


def test_write_geotiff_tiles_a_small_grid_too(tmp_path: Path) -> None:
    from affine import Affine

    from gkdcn.io.grid import Grid

    grid = Grid(crs=None, transform=Affine(10, 0, 0, 0, -10, 0), height=40, width=70)
    write_geotiff(tmp_path / "s.tif", np.ones((1, 40, 70), np.float32), grid, nodata=None)
    with rasterio.open(tmp_path / "s.tif") as ds:
        assert ds.profile["tiled"] and ds.block_shapes == [(80, 80)]
        np.testing.assert_array_equal(ds.read(1), np.ones((40, 70), np.float32))
