"""The synthetic demo district (gkdcn.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import Point

from gkdcn.config import load_config
from gkdcn.data.synthetic import (
    ELEMENTS,
    NODATA,
    PATHFINDERS,
    District,
    SyntheticSpec,
    generate_district,
    load_truth,
    make_district,
    pathfinder_score,
    spec_from_dict,
)
from gkdcn.errors import GkdcnError, InputError, OutputExistsError
from gkdcn.io.atomic import MARKER

SPEC = SyntheticSpec()


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "district"
    config = generate_district(out, SPEC)
    assert config == out / "study.toml"
    return out


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _elements(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: _read(p) for p in sorted((folder / "elements").glob("*.tif"))}


def _deposit_cells(folder: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    table = pd.read_csv(folder / "deposits.csv")
    rows, cols = SPEC.grid.rowcol(table["x"].to_numpy(), table["y"].to_numpy())
    return table, rows, cols


def _score(layers: dict[str, np.ndarray]) -> np.ndarray:
    """Mean z-score of log10 pathfinders, computed here independently of the module."""
    stack = np.stack([layers[name] for name in PATHFINDERS]).astype(np.float64)
    stack[stack == NODATA] = np.nan
    logs = np.log10(stack)
    z = [(lay - np.nanmean(lay)) / np.nanstd(lay) for lay in logs]
    return np.mean(z, axis=0)


def test_same_seed_gives_identical_outputs(district: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_district(again, SPEC)
    first, second = _elements(district), _elements(again)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    np.testing.assert_array_equal(load_truth(district), load_truth(again))
    assert (district / "deposits.csv").read_text() == (again / "deposits.csv").read_text()
    a = gpd.read_file(district / "faults.gpkg")
    b = gpd.read_file(again / "faults.gpkg")
    assert list(a.geometry.to_wkt()) == list(b.geometry.to_wkt())


def test_different_seed_differs(district: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_district(other, SPEC.model_copy(update={"seed": 1}))
    assert not np.array_equal(_read(district / "elements/Au.tif"), _read(other / "elements/Au.tif"))
    assert not np.array_equal(load_truth(district), load_truth(other))
    assert (district / "deposits.csv").read_text() != (other / "deposits.csv").read_text()


def test_fewer_layers_keep_the_same_geology(district: Path) -> None:
    # Components draw from independent streams: n_layers does not move faults or deposits.
    small = make_district(SPEC.model_copy(update={"n_layers": 6}))
    assert small.names == [e.name for e in ELEMENTS[:6]]
    full = _elements(district)
    for name, values in zip(small.names, small.values, strict=True):
        np.testing.assert_array_equal(np.nan_to_num(values, nan=NODATA), full[name])
    table = pd.read_csv(district / "deposits.csv")
    np.testing.assert_array_equal(small.deposit_x, table["x"].to_numpy())
    np.testing.assert_array_equal(small.truth, load_truth(district))


def test_rasters_have_the_spec_grid(district: Path) -> None:
    expected_names = {e.name for e in ELEMENTS[: SPEC.n_layers]}
    paths = sorted((district / "elements").glob("*.tif"))
    assert {p.stem for p in paths} == expected_names
    transform = Affine(1000.0, 0.0, 500000.0, 0.0, -1000.0, 4600000.0)
    for path in [*paths, district / "truth.tif"]:
        with rasterio.open(path) as src:
            assert src.crs == CRS.from_epsg(32645), path
            assert src.transform.almost_equals(transform), path
            assert (src.height, src.width, src.count) == (96, 128, 1), path
            if path.parent.name == "elements":
                assert src.dtypes[0] == "float32" and src.nodata == NODATA
                assert src.descriptions[0] == path.stem
            else:
                assert src.dtypes[0] == "uint8" and src.nodata == 255


def test_values_are_positive_with_realistic_medians(district: Path) -> None:
    layers = _elements(district)
    for spec in ELEMENTS[: SPEC.n_layers]:
        values = layers[spec.name][layers[spec.name] != NODATA]
        assert np.all(values > 0), spec.name
        # Anomalies lift the upper tail, not the median: within a factor 1.6 of the target.
        assert spec.median / 1.6 < np.median(values) < spec.median * 1.6, spec.name


def test_deposits_sit_in_mineralised_anomalies_near_faults(district: Path) -> None:
    table, rows, cols = _deposit_cells(district)
    assert list(table.columns) == ["site_id", "x", "y"]
    assert len(table) == SPEC.n_deposits and table["site_id"].is_unique
    assert SPEC.grid.inside(rows, cols).all()
    truth = load_truth(district)
    assert np.all(truth[rows, cols] == 1)

    score = _score(_elements(district))
    threshold = np.nanpercentile(score, 90)
    assert np.all(score[rows, cols] >= threshold)

    faults = gpd.read_file(district / "faults.gpkg")
    assert faults.crs == CRS.from_epsg(32645)
    assert set(faults.geom_type) == {"LineString"} and len(faults) == SPEC.n_faults
    for x, y in zip(table["x"], table["y"], strict=True):
        assert faults.distance(Point(x, y)).min() <= 4.5 * SPEC.cell_size
    # Distinct deposits: no two in the same or neighbouring cells.
    gap = np.maximum(
        np.abs(rows[:, None] - rows[None, :]), np.abs(cols[:, None] - cols[None, :])
    ) + 99 * np.eye(len(rows), dtype=int)
    assert gap.min() >= 2


def test_anomaly_bodies_are_elongated_and_carry_the_pathfinders(district: Path) -> None:
    truth = load_truth(district)
    layers = _elements(district)
    labels, n = ndimage.label(truth == 1)
    assert n >= 3
    ratios = []
    for k in range(1, n + 1):
        rr, cc = np.nonzero(labels == k)
        if len(rr) >= 10:
            small, large = np.linalg.eigvalsh(np.cov(np.vstack([rr, cc])))
            ratios.append(np.sqrt(large / small))
    assert np.median(ratios) >= 1.8  # curved, elongated bodies, not round blobs
    background = truth == 0
    au = np.log10(np.where(truth == 255, 1.0, layers["Au"]))
    co = np.log10(np.where(truth == 255, 1.0, layers["Co"]))
    au_uplift = au[truth == 1].mean() - au[background].mean()
    co_uplift = co[truth == 1].mean() - co[background].mean()
    assert au_uplift > 0.3 and abs(co_uplift) < 0.5 * au_uplift


def test_barren_anomalies_exist_without_deposits(district: Path) -> None:
    truth = load_truth(district)
    _, rows, cols = _deposit_cells(district)
    assert (truth == 2).sum() > 0
    assert not np.any(truth[rows, cols] == 2)
    score = _score(_elements(district))
    assert np.nanmean(score[truth == 2]) > np.nanmean(score[truth == 0]) + 0.2
    # Some barren anomalies lie well away from every fault.
    faults = gpd.read_file(district / "faults.gpkg")
    x, y = SPEC.grid.xy(*np.nonzero(truth == 2))
    lines = faults.geometry.union_all()
    far = [lines.distance(Point(px, py)) for px, py in zip(x, y, strict=True)]
    assert max(far) >= 8 * SPEC.cell_size


def test_nodata_holes_in_every_layer_and_free_of_deposits(district: Path) -> None:
    truth = load_truth(district)
    holes = truth == 255
    assert holes.any()
    _, count = ndimage.label(holes)
    assert 1 <= count <= SPEC.nodata_holes
    for name, layer in _elements(district).items():
        np.testing.assert_array_equal(layer == NODATA, holes, err_msg=name)
    _, rows, cols = _deposit_cells(district)
    assert not holes[rows, cols].any()


def test_study_toml_loads_and_its_paths_exist(district: Path) -> None:
    cfg = load_config(district / "study.toml")
    assert cfg.resolve(cfg.elements.path).is_dir()
    assert cfg.resolve(cfg.sites.deposits.points).is_file()  # type: ignore[union-attr]
    assert cfg.knowledge.faults is not None and cfg.resolve(cfg.knowledge.faults).is_file()
    assert cfg.sites.non_deposits is None
    assert cfg.sites.negatives.count == SPEC.n_deposits
    assert cfg.knowledge.decay.kind == "rings"
    assert cfg.knowledge.decay.ring_width == 2 * SPEC.cell_size
    assert (cfg.knowledge.decay.rings, cfg.knowledge.decay.exponent) == (12, 0.46)
    assert (cfg.transform.method, cfg.samples.window, cfg.samples.shift) == ("clr", 9, 3)
    assert cfg.split.method == "site"
    assert "seed 0" in (district / "README.md").read_text()


def test_refuses_to_overwrite_and_leaves_folder_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        generate_district(out, SPEC)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temp folder left behind

    # --overwrite never deletes a folder of the user's files ...
    small = SyntheticSpec(height=32, width=32, n_layers=5, n_faults=1, n_deposits=2, seed=3)
    with pytest.raises(GkdcnError, match="did not write"):
        generate_district(out, small, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # ... but replaces a district it wrote itself (marked as its output)
    (out / "notes.txt").unlink()
    generate_district(out, small, overwrite=True)  # an empty folder may be replaced
    assert (out / MARKER).read_text().startswith("written by gkdcn synth")
    generate_district(out, small, overwrite=True)
    assert (out / "study.toml").is_file()


def test_load_truth_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"truth\.tif"):
        load_truth(tmp_path)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"height": 5}, "height"),
        ({"n_layers": 3}, "n_layers"),
        ({"crs": "EPSG:4326"}, "crs"),
        ({"crs": "not a crs"}, "crs"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_spec_is_a_one_line_input_error(raw: dict[str, object], key: str) -> None:
    with pytest.raises(InputError, match=key) as info:
        spec_from_dict(raw)
    assert "\n" not in str(info.value)


def test_small_custom_spec() -> None:
    spec = spec_from_dict({"height": 40, "width": 48, "n_deposits": 3, "n_faults": 2, "seed": 5})
    d = make_district(spec)
    assert d.values.shape == (12, 40, 48)
    assert len(d.deposit_ids) == 3
    assert np.all(d.truth[d.deposit_rows, d.deposit_cols] == 1)


# --------------------------------------------------------------------------------------------
# systems mode: a district where a held-out comparison has something to say

SYSTEMS = SyntheticSpec(n_deposits=60, seed=0)


@pytest.fixture(scope="module")
def systems_district() -> District:
    return make_district(SYSTEMS)


def _auc_against_background(score: np.ndarray, d: District) -> float:
    """Share of valid non-deposit cells ranked below each deposit (ties half), averaged."""
    valid = d.truth != 255
    deposit = np.zeros(valid.shape, dtype=bool)
    deposit[d.deposit_rows, d.deposit_cols] = True
    background = np.sort(score[valid & ~deposit])
    at = score[deposit]
    below = np.searchsorted(background, at, "left")
    ties = np.searchsorted(background, at, "right") - below
    return float(np.mean((below + 0.5 * ties) / len(background)))


def test_small_default_district_keeps_the_scattered_layout(district: Path) -> None:
    assert (SPEC.systems, SPEC.barren_anomalies, SPEC.undiscovered_share) == (0, 3, 0.0)
    assert not np.any(load_truth(district) == 3)
    bodies = pd.read_csv(district / "bodies.csv")
    assert list(bodies.columns) == ["body_id", "kind", "system", "deposits", "x", "y"]
    assert set(bodies["kind"]) == {"mineralised", "barren (black shale)", "barren (mafic)"}
    assert bodies["deposits"].sum() == SPEC.n_deposits
    assert bodies["system"].isna().all()
    assert "scattered along the faults" in (district / "README.md").read_text()


def test_sixty_deposits_spread_over_several_fault_controlled_systems(
    systems_district: District,
) -> None:
    d = systems_district
    assert SYSTEMS.systems == 6 and SYSTEMS.barren_anomalies == 12
    assert len(d.deposit_ids) == 60
    assert np.all(d.truth[d.deposit_rows, d.deposit_cols] == 1)
    assert np.all(d.fault_distance[d.deposit_rows, d.deposit_cols] <= 7.5 * SYSTEMS.cell_size)
    known = d.bodies[d.bodies["kind"].str.startswith("mineralised")]
    assert known["deposits"].sum() == 60
    per_system = known.groupby("system")["deposits"].sum()
    assert len(per_system) == 6 and per_system.max() <= 30  # no single system holds most
    gap = np.maximum(
        np.abs(d.deposit_rows[:, None] - d.deposit_rows[None, :]),
        np.abs(d.deposit_cols[:, None] - d.deposit_cols[None, :]),
    ) + 99 * np.eye(60, dtype=int)
    assert gap.min() >= 2


def test_some_mineralised_bodies_have_no_known_deposit(systems_district: District) -> None:
    d = systems_district
    undiscovered = d.bodies[d.bodies["kind"] == "undiscovered"]
    mineralised = d.bodies[d.bodies["kind"].str.match("mineralised|undiscovered")]
    assert 0.2 <= len(undiscovered) / len(mineralised) <= 0.4
    assert (undiscovered["deposits"] == 0).all()
    assert (d.truth == 3).sum() > 50
    barren = d.bodies[d.bodies["kind"].str.startswith("barren")]
    assert len(barren) == 12 and (barren["deposits"] == 0).all()
    # Undiscovered bodies carry the ore signature, as strongly as the known ones on average.
    pf = [i for i, e in enumerate(SYSTEMS.elements) if e.name in PATHFINDERS]
    score = pathfinder_score(d.values[pf])
    assert np.nanmean(score[d.truth == 3]) > np.nanmean(score[d.truth == 0]) + 0.5


def test_neither_fault_proximity_nor_geochemistry_alone_finds_every_deposit(
    systems_district: District,
) -> None:
    # Both carry information (well above 0.5), neither is a perfect map, and the two together
    # beat either alone: room for a model that reads geochemistry and geology together.
    d = systems_district
    pf = [i for i, e in enumerate(SYSTEMS.elements) if e.name in PATHFINDERS]
    score = np.nan_to_num(pathfinder_score(d.values[pf]), nan=-99.0)
    fault = _auc_against_background(-d.fault_distance, d)
    geochemistry = _auc_against_background(score, d)
    both = _auc_against_background(score - 0.3 * d.fault_distance / SYSTEMS.cell_size, d)
    for auc in (fault, geochemistry):
        assert 0.75 < auc < 0.93
    assert both > max(fault, geochemistry) + 0.02


def test_covered_bodies_hold_deposits_the_geochemistry_misses(systems_district: District) -> None:
    d = systems_district
    covered = d.bodies[d.bodies["kind"] == "mineralised (covered)"]
    assert len(covered) >= 2 and covered["deposits"].sum() >= 3
    pf = [i for i, e in enumerate(SYSTEMS.elements) if e.name in PATHFINDERS]
    score = pathfinder_score(d.values[pf])
    at = score[d.deposit_rows, d.deposit_cols]
    # Some deposits sit at cells no more anomalous than the median of the district.
    assert np.sum(at <= np.nanmedian(score)) >= 1


def test_larger_grid_and_explicit_systems() -> None:
    spec = spec_from_dict(
        {"height": 160, "width": 224, "n_deposits": 60, "n_systems": 4, "undiscovered": 0.5}
    )
    d = make_district(spec)
    assert d.values.shape == (12, 160, 224) and len(d.deposit_ids) == 60
    kinds = d.bodies["kind"].value_counts()
    assert kinds["undiscovered"] == kinds["mineralised"] + kinds["mineralised (covered)"]
    assert d.bodies.loc[d.bodies["kind"].str.startswith("mineralised"), "system"].nunique() <= 4


def test_synth_command_makes_a_systems_district(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gkdcn.cli import app

    runner = CliRunner()
    out = tmp_path / "big"
    result = runner.invoke(app, ["synth", str(out), "--deposits", "60", "--layers", "6"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "deposits.csv")) == 60
    assert (load_truth(out) == 3).any()
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--undiscovered", "1.5"])
    assert bad.exit_code == 2 and "undiscovered" in bad.output
    assert not (tmp_path / "bad").exists()


def test_signature_spread_changes_only_the_other_elements_contrast() -> None:
    from gkdcn.data.synthetic import make_district

    base = SyntheticSpec(height=64, width=64, n_layers=6, n_deposits=24, seed=3)
    plain = make_district(base)
    spread = make_district(base.model_copy(update={"signature_spread": 0.6}))
    au = plain.names.index("Au")
    np.testing.assert_array_equal(plain.values[au], spread.values[au])
    np.testing.assert_array_equal(plain.truth, spread.truth)
    others = [i for i in range(len(plain.names)) if i != au]
    assert any(not np.array_equal(plain.values[i], spread.values[i]) for i in others)


def test_a_survey_like_district_is_studied_through_its_gridded_samples(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gkdcn.cli import app
    from gkdcn.config import load_config
    from gkdcn.data.study import load_study

    out = tmp_path / "sv"
    args = ["synth", str(out), "--height", "48", "--width", "48", "--cell-size", "250",
            "--layers", "5", "--deposits", "6", "--samples", "600", "--survey-cell", "500"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    survey = load_study(load_config(out / "survey.toml"))
    true = load_study(load_config(out / "study.toml"))
    assert survey.grid.cell_size == (500.0, 500.0) and true.grid.cell_size == (250.0, 250.0)
    assert sorted(survey.names) == sorted(true.names)
    assert sorted(survey.sites.ids[survey.sites.labels == 1]) == sorted(
        true.sites.ids[true.sites.labels == 1]
    )
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--survey-cell", "500"])
    assert result.exit_code == 2 and "--samples" in result.output
