"""Point samples to element grids (gkdcn.data.gridding, ``gkdcn grid``) and the synthetic survey."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from gkdcn.data import gridding
from gkdcn.data.gridding import GriddingOptions, grid_samples, read_samples, target_grid
from gkdcn.data.survey import NOT_ANALYSED, make_survey
from gkdcn.data.synthetic import SyntheticSpec, make_district
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import MARKER
from gkdcn.io.rasters import grid_of
from helpers import run_cli, write_raster

CRS = "EPSG:32645"


@pytest.fixture(scope="module")
def district() -> object:
    return make_district(SyntheticSpec(height=40, width=48, n_layers=6, n_deposits=5, seed=3))


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_survey_gridded_reproduces_the_district(district: object, tmp_path: Path) -> None:
    spec = district.spec  # type: ignore[attr-defined]
    table = make_survey(district, 2500, seed=0)  # type: ignore[arg-type]
    # The survey is written the way laboratories report: codes for below detection / no value.
    assert (table[district.names] == NOT_ANALYSED).to_numpy().any()  # type: ignore[attr-defined]
    assert ((table[district.names] < 0) & (table[district.names] != NOT_ANALYSED)).any().any()  # type: ignore[attr-defined]
    path = _csv(tmp_path / "samples.csv", table)
    options = GriddingOptions(crs=CRS, cell=spec.cell_size, nodata=(NOT_ANALYSED,))
    samples = read_samples(path, options)
    assert any("exact duplicate" in note for note in samples.notes)
    grid, _ = target_grid(samples, options)
    assert grid.differences(district.grid) == []  # type: ignore[attr-defined]  # round origin
    result = grid_samples(samples, grid, options)
    # Cells with a sample within one cell: dense enough that the map must follow the truth.
    tree_x, tree_y = samples.x, samples.y
    rows, cols = np.indices(grid.shape)
    cx, cy = grid.xy(rows.ravel(), cols.ravel())
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.column_stack([tree_x, tree_y])).query(np.column_stack([cx, cy]))
    dense = (d <= spec.cell_size).reshape(grid.shape)
    for i, name in enumerate(district.names):  # type: ignore[attr-defined]
        truth = np.log10(district.values[i])  # type: ignore[attr-defined]
        est = np.log10(result.layers[name])
        ok = dense & np.isfinite(truth) & np.isfinite(est)
        assert ok.sum() > 0.5 * grid.height * grid.width
        r = np.corrcoef(truth[ok], est[ok])[0, 1]
        assert r > 0.9, (name, r)
    cv = result.cross_validation.set_index("element")
    assert set(cv.index) == set(district.names)  # type: ignore[attr-defined]
    assert (cv["space"] == "log10").all()
    assert (cv["cv_r2"] > 0.5).all() and (cv["cv_r2"] <= 1).all()


def test_far_cells_are_nodata_and_near_cells_have_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10_000, 300)
    y = rng.uniform(0, 20_000, 300)
    frame = pd.DataFrame({"x": x, "y": y, "Cu": 10 + x / 1000})
    path = _csv(tmp_path / "s.csv", frame)
    options = GriddingOptions(crs=CRS, cell=1000, max_distance=1500, like=None)
    samples = read_samples(path, options)
    grid, _ = target_grid(samples, options)
    # Widen the grid eastwards: cells beyond 10 km + 1.5 km must stay empty.
    wide = grid.__class__(grid.crs, grid.transform, grid.height, grid.width + 8)
    cu = grid_samples(samples, wide, options).layers["Cu"]
    assert np.isfinite(cu[:, :10]).mean() > 0.95
    assert np.isnan(cu[:, 12:]).all()
    # IDW of a linear trend stays within the sample range.
    assert np.nanmin(cu) >= 10 and np.nanmax(cu) <= 20


def test_like_lands_exactly_on_the_given_grid(tmp_path: Path) -> None:
    transform = Affine(750.0, 0.0, 500_123.4, 0.0, -750.0, 4_010_077.7)
    like = write_raster(tmp_path / "like.tif", np.zeros((13, 17), np.float32), transform=transform)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x": rng.uniform(500_123.4, 500_123.4 + 17 * 750, 200),
            "y": rng.uniform(4_010_077.7 - 13 * 750, 4_010_077.7, 200),
            "Au": rng.lognormal(0, 1, 200),
        }
    )
    path = _csv(tmp_path / "s.csv", frame)
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS, "--like", str(like)
    )
    assert code == 0, out
    assert grid_of(tmp_path / "el" / "Au.tif").differences(grid_of(like)) == []
    with rasterio.open(tmp_path / "el" / "Au.tif") as ds:
        assert ds.descriptions == ("Au",)
        assert ds.nodata == gridding.NODATA
    cv = pd.read_csv(tmp_path / "el" / gridding.CV_FILE)
    assert list(cv["element"]) == ["Au"]


def test_missing_values_sentinels_and_detection_limits(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d", "e", "f", "g"],
            "x": [0.0, 1000, 2000, 0, 1000, 2000, 500],
            "y": [0.0, 0, 0, 1000, 1000, 1000, 500],
            "Au": ["1.0", "<0.5", "-0.4", "-9999", "3e38", "2.0", "3.0"],
            "Rock": ["granite", "shale", "granite", "shale", "granite", "shale", "shale"],
        }
    )
    path = _csv(tmp_path / "s.csv", frame)
    half = read_samples(path, GriddingOptions(crs=CRS, nodata=(-9999,)))
    np.testing.assert_allclose(half.values["Au"], [1.0, 0.25, 0.2, np.nan, np.nan, 2.0, 3.0])
    assert list(half.values) == ["Au"]  # ids and text columns are never gridded
    notes = " | ".join(half.notes)
    assert (
        "--nodata read as no value: Au 1" in notes
        and "1e30" in notes
        and "below detection limit d: Au 1 (<0.4)" in notes
        and "text <d read as below detection limit d: Au 1 (<0.5)" in notes
        and "half their detection limit" in notes
    )
    assert "not numeric" in notes and "Rock" in notes
    dropped = read_samples(
        path, GriddingOptions(crs=CRS, nodata=(-9999,), below_detection="nodata")
    )
    assert np.isnan(dropped.values["Au"][[1, 2]]).all()
    kept = read_samples(path, GriddingOptions(crs=CRS, nodata=(-9999,), below_detection="keep"))
    assert kept.values["Au"][2] == -0.4 and kept.values["Au"][1] == 0.25


def test_geographic_samples_are_gridded_in_utm(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "lon": rng.uniform(87.0, 87.2, 50),
            "lat": rng.uniform(41.0, 41.2, 50),
            "Cu": rng.lognormal(3, 0.2, 50),
        }
    )
    path = _csv(tmp_path / "s.csv", frame)
    samples = read_samples(path, GriddingOptions(x="lon", y="lat", crs="EPSG:4326"))
    assert samples.crs is not None and samples.crs.to_epsg() == 32645
    assert any("UTM" in note for note in samples.notes)
    assert samples.x.min() > 100_000  # metres, not degrees


def test_duplicates_are_merged_by_averaging(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "x": [0.0, 0.0, 0.0, 500, 900],
            "y": [0.0, 0.0, 0.0, 500, 100],
            "Zn": [10.0, 10.0, 40.0, 5, 6],
        }
    )
    samples = read_samples(_csv(tmp_path / "s.csv", frame), GriddingOptions(crs=CRS))
    assert len(samples) == 3
    assert samples.values["Zn"][0] == pytest.approx(20.0)
    assert "2 sample(s) share coordinates" in samples.notes[-1]
    assert "1 exact duplicate(s), 1 with different values" in samples.notes[-1]


def test_idw_takes_the_sample_value_on_a_sample() -> None:
    xs = np.array([0.0, 10.0, 0.0])
    ys = np.array([0.0, 0.0, 10.0])
    v = np.array([1.0, 2.0, 3.0])
    est = gridding.idw(
        xs, ys, v, np.array([0.0, 5.0, 100.0]), np.array([0.0, 0.0, 100.0]), max_distance=20
    )
    assert est[0] == 1.0 and 1.0 < est[1] < 2.0 and np.isnan(est[2])


def test_verde_spline_grids_a_smooth_field(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 20_000, 150)
    y = rng.uniform(0, 20_000, 150)
    field = lambda a, b: 50 * np.exp(np.sin(a / 6000) + np.cos(b / 7000))  # noqa: E731
    path = _csv(tmp_path / "s.csv", pd.DataFrame({"x": x, "y": y, "Ni": field(x, y)}))
    options = GriddingOptions(crs=CRS, cell=1000, method="verde-spline", folds=3)
    samples = read_samples(path, options)
    grid, _ = target_grid(samples, options)
    result = grid_samples(samples, grid, options)
    rows, cols = np.indices(grid.shape)
    gx, gy = grid.xy(rows, cols)
    est, truth = result.layers["Ni"], field(gx, gy)
    ok = np.isfinite(est)
    assert np.corrcoef(np.log(est[ok]), np.log(truth[ok]))[0, 1] > 0.98
    assert result.cross_validation["cv_r2"].iloc[0] > 0.9


@pytest.mark.parametrize(
    ("frame", "args", "message"),
    [
        (
            pd.DataFrame({"x": [0.0, 1, 2], "y": [0.0, 1, 3], "rock": ["a", "b", "c"]}),
            ["--crs", CRS],
            "no numeric element columns",
        ),
        (pd.DataFrame({"x": [0.0, 1, 2], "y": [0.0, 1, 3], "Cu": [1.0, 2, 3]}), [], "no CRS"),
        (
            pd.DataFrame({"x": [0.0], "y": [0.0], "Cu": [1.0]}),
            ["--crs", CRS],
            "1 sample location(s)",
        ),
        (
            pd.DataFrame({"x": [5.0] * 4, "y": [5.0] * 4, "Cu": [1.0] * 4}),
            ["--crs", CRS],
            "all 4 samples lie at one location",
        ),
        (
            pd.DataFrame({"x": [0.0, 1, 2], "y": [0.0, 1, 3], "Cu": [1.0, 2, 3]}),
            ["--crs", CRS, "--method", "kriging"],
            "--method must be one of",
        ),
        (
            pd.DataFrame({"x": [0.0, 1, 2], "y": [0.0, 1, 3], "Cu": [1.0, 2, 3]}),
            ["--crs", CRS, "--columns", "Au"],
            "column(s) not found: Au",
        ),
    ],
)
def test_bad_inputs_get_one_line_errors(
    tmp_path: Path, frame: pd.DataFrame, args: list[str], message: str
) -> None:
    path = _csv(tmp_path / "s.csv", frame)
    code, out = run_cli("grid", str(path), "--out", str(tmp_path / "el"), *args)
    assert code == 2, out
    assert message in out
    assert out.strip().startswith("error:") and len(out.strip().splitlines()) <= 2  # rich may wrap
    assert not (tmp_path / "el").exists()


def test_grid_refuses_to_overwrite(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [0.0, 1000, 2000], "y": [0.0, 1000, 3000], "Cu": [1.0, 2, 3]})
    path = _csv(tmp_path / "s.csv", frame)
    (tmp_path / "el").mkdir()
    code, out = run_cli("grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS)
    assert code == 2 and "--overwrite" in out
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS, "--overwrite"
    )
    assert code == 0, out and (tmp_path / "el" / "Cu.tif").exists()


def test_target_grid_errors() -> None:
    samples = gridding.SampleTable(
        path=Path("s.csv"), crs=None, x=np.array([0.0, 1e7, 5.0]), y=np.array([0.0, 1e7, 3.0]),
        values={"Cu": np.ones(3)},
    )  # fmt: skip
    with pytest.raises(GkdcnError, match="too large"):
        target_grid(samples, GriddingOptions(cell=1.0))
    with pytest.raises(GkdcnError, match="positive"):
        target_grid(samples, GriddingOptions(cell=-5.0))
    assert gridding.nice_cell(1130.0) == 500.0 and gridding.nice_cell(90.0) == 20.0
    assert isinstance(InputError("a", "b"), GkdcnError)


def test_grid_reads_point_vector_files(tmp_path: Path) -> None:
    import geopandas as gpd

    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 5000, 40), rng.uniform(0, 5000, 40)
    gdf = gpd.GeoDataFrame(
        {"Cu": rng.lognormal(3, 0.3, 40), "site": [f"s{i}" for i in range(40)]},
        geometry=gpd.points_from_xy(x, y),
        crs=CRS,
    )
    gdf.to_file(tmp_path / "samples.gpkg", driver="GPKG")
    code, out = run_cli(
        "grid", str(tmp_path / "samples.gpkg"), "--out", str(tmp_path / "el"), "--cell", "500"
    )
    assert code == 0, out
    names = sorted(p.name for p in (tmp_path / "el").iterdir())
    assert names == [MARKER, "Cu.tif", gridding.CV_FILE]


def test_synth_samples_writes_a_survey_and_refuses_too_few(tmp_path: Path) -> None:
    code, out = run_cli("synth", str(tmp_path / "d"), "--samples", "2")
    assert code == 2 and "--samples must be at least 3" in out
    assert not (tmp_path / "d").exists()
    code, out = run_cli(
        "synth",
        str(tmp_path / "d"),
        "--height",
        "32",
        "--width",
        "32",
        "--layers",
        "5",
        "--deposits",
        "4",
        "--samples",
        "50",
    )
    assert code == 0, out
    table = pd.read_csv(tmp_path / "d" / "samples.csv")
    assert list(table.columns[:3]) == ["sample_id", "x", "y"] and len(table) >= 50
    again = make_survey(
        make_district(SyntheticSpec(height=32, width=32, n_layers=5, n_deposits=4)), 50, 0
    )
    pd.testing.assert_frame_equal(table, again, check_dtype=False)  # seeded: the same survey


def test_like_reprojects_samples_to_the_raster_crs(tmp_path: Path) -> None:
    from pyproj import Transformer

    transform = Affine(1000.0, 0.0, 500_000.0, 0.0, -1000.0, 4_600_000.0)
    like = write_raster(tmp_path / "like.tif", np.zeros((10, 10), np.float32), transform=transform)
    rng = np.random.default_rng(6)
    x, y = rng.uniform(500_000, 510_000, 100), rng.uniform(4_590_000, 4_600_000, 100)
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    frame = pd.DataFrame({"lon": lon, "lat": lat, "Cu": 10 + (x - 500_000) / 1000})
    path = _csv(tmp_path / "s.csv", frame)
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--x", "lon", "--y", "lat",
        "--crs", "EPSG:4326", "--like", str(like),
    )  # fmt: skip
    assert code == 0, out
    with rasterio.open(tmp_path / "el" / "Cu.tif") as ds:
        cu = ds.read(1, masked=True)
    # The east-west trend lands in the right columns: the samples were reprojected, not shifted.
    assert cu[:, 0].mean() < 12 and cu[:, -1].mean() > 18


# ---- a geochemist's lab table: censoring codes, units, surveys, identifiers, coordinates


def _lab_table(n: int = 120, seed: int = 7) -> pd.DataFrame:
    """A lab table with the quirks of a real one: upper-case lon/lat with Y before X, gold in
    ppb with zeros, BDL words and -9999 for "not analysed", iron as element and oxide, a
    detection-limit column, a report number and a survey code whose laboratories differ 20x."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(119.50, 119.56, n)
    lat = rng.uniform(-31.70, -31.64, n)
    au = np.round(rng.lognormal(np.log(5.0), 0.8, n), 2).astype(object)  # ppb
    au[:10] = 0.0
    au[10:14] = "BDL"
    au[14:18] = -9999
    survey = np.where(np.arange(n) % 2 == 0, 82539, 84462)
    cu = rng.lognormal(np.log(20.0), 0.3, n) * np.where(survey == 84462, 1 / 20, 1.0)
    fe = rng.lognormal(np.log(30_000.0), 0.2, n)
    return pd.DataFrame(
        {
            "Y": lat,
            "X": lon,
            "SAMPLEID": rng.permutation(n) + 3_651_357,
            "REPORT_NO": survey,
            "Au_ppb": au,
            "Au_ppb_DL": 1.0,
            "Cu_ppm": cu,
            "Fe_ppm": fe,
            "Fe2O3_pct": np.where(np.arange(n) < n // 2, fe / 6994.0, -9999),
            "Mo_ppm": ["<0.5"] * n,
            "Eh_mV": rng.normal(-50.0, 80.0, n),  # a measurement that can be negative
        }
    )


def test_a_lab_table_is_gridded_by_every_stated_rule(tmp_path: Path) -> None:
    path = _csv(tmp_path / "lab.csv", _lab_table())
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", "EPSG:4326",
        "--survey-column", "report_no",
    )  # fmt: skip
    assert code == 0, out
    text = " ".join(out.split())
    names = sorted(p.stem for p in (tmp_path / "el").glob("*.tif"))
    # One layer per element, named without the unit; no identifier, code, limit or
    # all-censored column.
    assert names == ["Au", "Cu", "Eh_mV", "Fe"], names
    assert "zeros and negative values are kept as data (add a unit" in text
    assert "negative numbers -d read as below detection" not in text  # not Eh's -120 mV
    with rasterio.open(tmp_path / "el" / "Eh_mV.tif") as ds:
        assert ds.read(1, masked=True).min() < 0
    assert "SAMPLEID (identifier name)" in text
    assert "Fe_ppm (120 detected) kept, Fe2O3_pct (60) dropped" in text
    assert "detection-limit columns (never gridded): Au_ppb_DL for Au_ppb" in text
    assert "exact zeros read as below detection" in text and "Au_ppb 10 (<1)" in text
    assert "text BDL / b.d.l. / n.d. / nd read as below detection" in text
    assert "warning:" in text and "repeated digits" in text and "Au_ppb 4 (-9999)" in text
    assert "every value below detection, not gridded" in text and "Mo_ppm (120, <0.5)" in text
    assert "survey medians (REPORT_NO) differ by more than 10x in 1 column(s): Cu" in text
    assert "--level quantile or robust-z" in text
    assert "converted: Au_ppb x 0.001" in text
    au_row = next(line for line in out.splitlines() if line.startswith("Au "))
    assert au_row.split()[1:3] == ["Au_ppb", "ppm"]
    assert au_row.endswith("code+dl_column+zero+text")  # the rules of that column, in order
    with rasterio.open(tmp_path / "el" / "Au.tif") as ds:
        au = ds.read(1, masked=True)
        tags = ds.tags(1)
    # In ppm, gridded in log space (zeros censored), and no -9999 became 4999.5.
    assert au.min() > 0 and au.max() < 0.1
    assert tags["unit"] == "ppm" and tags["source_column"] == "Au_ppb"
    cv = pd.read_csv(tmp_path / "el" / gridding.CV_FILE).set_index("element")
    # 10 zeros, 4 BDL and the detected values below their 1 ppb detection-limit column
    under = int((_lab_table()["Au_ppb"][18:].astype(float) < 1.0).sum())
    assert under > 0 and f"Au_ppb {under} (<1)" in text
    assert cv.loc["Au", "space"] == "log10" and cv.loc["Au", "censored"] == 14 + under
    assert "zero 10 (<1)" in cv.loc["Au", "censoring"]


def test_levelling_brings_surveys_together(tmp_path: Path) -> None:
    path = _csv(tmp_path / "lab.csv", _lab_table())
    options = GriddingOptions(x="x", y="y", crs="EPSG:4326", survey_column="REPORT_NO")
    raw = read_samples(path, options)
    quantile = read_samples(path, replace(options, level="quantile"))
    robust = read_samples(path, replace(options, level="robust-z"))
    assert any("not levelled" in note for note in raw.notes)
    assert any("quantile matching" in note for note in quantile.notes)
    assert any("robust z-score" in note for note in robust.notes)
    assert quantile.info["Cu"].levelled == "quantile"
    # Duplicated coordinates are absent, so the rows stay in order: the survey of each row.
    survey = _lab_table()["REPORT_NO"].to_numpy()
    for table in (quantile, robust):
        cu = table.values["Cu"]
        ratio = np.median(cu[survey == 82539]) / np.median(cu[survey == 84462])
        assert 0.8 < ratio < 1.25, ratio
    cu = raw.values["Cu"]
    assert np.median(cu[survey == 82539]) / np.median(cu[survey == 84462]) > 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "quantile"], "--level quantile needs --survey-column"),
        (["--survey-column", "lab"], "--survey-column 'lab' not found"),
        (["--level", "mean", "--survey-column", "REPORT_NO"], "--level must be one of"),
        (["--max-distance", "1"], "--max-distance 1 is less than half the cell size"),
        (["--columns", "Mo_ppm"], "no column has detected values to grid"),
        (["--x", "Y", "--y", "X"], "not latitudes (are --x and --y swapped?)"),
    ],
)
def test_lab_table_bad_options_get_one_line_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = _csv(tmp_path / "lab.csv", _lab_table())
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", "EPSG:4326", *args
    )
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in out, out
    assert not (tmp_path / "el").exists()


def test_coordinate_errors_name_the_flags_and_match_any_case(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Lon": [0.0, 1, 2], "Lat": [0.0, 1, 2], "Cu": [1.0, 2, 3]})
    path = _csv(tmp_path / "s.csv", frame)
    code, out = run_cli("grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS)
    assert code == 2
    text = " ".join(out.split())
    assert "name them with --x and --y (perhaps --x Lon --y Lat)" in text
    assert "config" not in text
    frame = pd.DataFrame({"X": [0.0, 1000, 2000], "Y": [0.0, 1000, 3000], "Cu": [1.0, 2, 3]})
    upper = read_samples(_csv(tmp_path / "u.csv", frame), GriddingOptions(crs=CRS))
    assert len(upper) == 3
    code, out = run_cli("grid", str(tmp_path / "u.csv"), "--out", str(tmp_path / "el"))
    assert code == 2 and "--crs" in out and "EPSG:4326" not in out
    degrees = pd.DataFrame(
        {"x": [119.5, 119.6, 119.7], "y": [-31.6, -31.7, -31.8], "Cu": [1, 2, 3]}
    )
    code, out = run_cli(
        "grid", str(_csv(tmp_path / "d.csv", degrees)), "--out", str(tmp_path / "el")
    )
    assert code == 2 and "--crs EPSG:4326" in " ".join(out.split())
    import geopandas as gpd

    points = gpd.GeoDataFrame(
        {"Cu": [1.0, 2, 3]}, geometry=gpd.points_from_xy([0, 9, 5], [0, 1, 7])
    )
    with pytest.warns(UserWarning):  # pyogrio: "crs was not provided"
        points.to_file(tmp_path / "p.gpkg")
    code, out = run_cli("grid", str(tmp_path / "p.gpkg"), "--out", str(tmp_path / "el"))
    assert code == 2 and "p.gpkg: has no CRS: give it with --crs" in " ".join(out.split())


def test_excel_needs_openpyxl_or_is_read(tmp_path: Path) -> None:
    import importlib.util

    path = tmp_path / "lab.xlsx"
    frame = pd.DataFrame({"x": [0.0, 1000, 2000, 500], "y": [0.0, 1000, 3000, 200]})
    frame["Cu_ppm"] = [1.0, 2.0, "<0.5", 4.0]
    if importlib.util.find_spec("openpyxl") is None:
        path.write_bytes(b"PK\x03\x04 not really a workbook")
        code, out = run_cli("grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS)
        assert code == 2
        assert f"{path}: reading .xlsx workbooks needs the package openpyxl" in " ".join(
            out.split()
        )
        return
    frame.to_excel(path, index=False)
    samples = read_samples(path, GriddingOptions(crs=CRS))
    np.testing.assert_allclose(samples.values["Cu"], [1.0, 2.0, 0.25, 4.0])


def test_like_a_raster_of_another_area_is_a_one_line_error(tmp_path: Path) -> None:
    transform = Affine(1000.0, 0.0, 200_000.0, 0.0, -1000.0, 9_000_000.0)
    like = write_raster(tmp_path / "far.tif", np.zeros((10, 10), np.float32), transform=transform)
    frame = pd.DataFrame(
        {"x": [500_000.0, 501_000, 502_000], "y": [4e6, 4.001e6, 4.002e6], "Cu": [1.0, 2, 3]}
    )
    path = _csv(tmp_path / "s.csv", frame)
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS, "--like", str(like)
    )
    assert code == 2, out
    assert f"error: {like}: no cell of its grid lies within" in " ".join(out.split())
    assert not (tmp_path / "el").exists()
    degrees = Affine(0.01, 0.0, 87.0, 0.0, -0.01, 42.0)
    geographic = write_raster(
        tmp_path / "deg.tif", np.zeros((5, 5), np.float32), crs="EPSG:4326", transform=degrees
    )
    code, out = run_cli(
        "grid", str(path), "--out", str(tmp_path / "el"), "--crs", CRS, "--like", str(geographic)
    )
    assert code == 2 and f"{geographic}: its grid is in degrees" in " ".join(out.split())


GEOCHEMAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "geochemad"


@pytest.mark.skipif(not GEOCHEMAD.is_dir(), reason="GeoChemAD tables not present")
def test_geochemad_rock_chip_gold_table_reads_by_the_rules() -> None:
    table = GEOCHEMAD / "area4_rock2_au" / "area4_rockchip_au.csv"
    options = GriddingOptions(crs="EPSG:4326", survey_column="WAMEX_A_NO")
    samples = read_samples(table, options)
    notes = " ".join(samples.notes)
    assert "Au" in samples.values and "Au_ppm" not in samples.values
    assert "WAMEX_A_NO" not in samples.values and "SAMPLEID" not in samples.values
    au = samples.values["Au"]
    assert np.nanmax(au) < 100 and (au[np.isfinite(au)] > 0).all()  # no -9999 as <9999
    assert samples.info["Au"].censored == 31  # 16 at -0.001 and 15 zeros
    assert "Fe2O3T_pct (202) dropped" in notes
    assert any("-9999" in text for text in samples.warnings)
