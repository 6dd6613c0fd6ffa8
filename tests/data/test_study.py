"""Tests for gkdcn.data.study: config -> Study, prepared folders, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString, Point

import gkdcn.data.study as study_module
from gkdcn.config import StudyConfig, config_from_dict
from gkdcn.console import format_summary
from gkdcn.data.study import (
    KNOWLEDGE_CHANNEL,
    build_samples,
    load_prepared,
    load_study,
    save_prepared,
    summarize,
)
from gkdcn.errors import GkdcnError, InputError, OutputExistsError
from helpers import (
    CELL,
    CRS,
    ORIGIN,
    TINY_DEPOSITS,
    TINY_NON_DEPOSITS,
    TINY_SHAPE,
    tiny_layers,
    write_raster,
    write_tiny_study,
)


def centre(row: int, col: int) -> tuple[float, float]:
    return ORIGIN[0] + (col + 0.5) * CELL, ORIGIN[1] - (row + 0.5) * CELL


def config(root: Path, **overrides: Any) -> StudyConfig:
    return config_from_dict(write_tiny_study(root, **overrides), base_dir=root)


def cells(rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def assert_one_line(exc: pytest.ExceptionInfo[GkdcnError], *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def test_load_tiny_study(tiny_study: StudyConfig) -> None:
    study = load_study(tiny_study)
    assert study.names == ["As", "Au", "Cu", "Zn"]
    assert study.raw.shape == (4, *TINY_SHAPE) and study.raw.dtype == np.float32
    layers = tiny_layers()
    for i, name in enumerate(study.names):
        np.testing.assert_array_equal(study.raw[i], layers[name])
    assert study.valid.all()
    deposits, negatives = study.sites.deposits(), study.sites.non_deposits()
    assert cells(deposits.rows, deposits.cols) == list(TINY_DEPOSITS)
    assert cells(negatives.rows, negatives.cols) == list(TINY_NON_DEPOSITS)
    assert deposits.ids.tolist() == ["D01", "D02", "D03", "D04"]
    assert negatives.ids[0] == "N01"
    assert study.knowledge is not None and study.knowledge.dtype == np.float32
    assert study.knowledge[0, 10] == 1.0 and study.knowledge[0, 0] == 0.0
    assert study.notes == [] and study.faults is None


def test_nan_cells_masked_and_sites_on_them_skipped(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    values = tiny_layers()["Au"]
    values[TINY_DEPOSITS[1]] = np.nan
    values[0, 1] = np.nan
    write_raster(tmp_path / "elements" / "Au.tif", values, nodata=-9999.0)
    study = load_study(cfg)
    assert not study.valid[TINY_DEPOSITS[1]] and not study.valid[0, 1]
    assert study.valid.sum() == study.valid.size - 2
    assert np.isnan(study.raw[:, 0, 1]).any()
    assert len(study.sites.deposits()) == 3
    assert study.skipped == 1
    assert any("D02" in n and "nodata" in n and "deposits.tif" in n for n in study.notes)


def test_empty_deposit_raster(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_raster(tmp_path / "deposits.tif", np.zeros(TINY_SHAPE, np.uint8), nodata=255)
    with pytest.raises(InputError) as exc:
        load_study(cfg)
    assert_one_line(exc, "deposits.tif", "no cell equal to 1")


def test_deposit_points_outside_map_skipped(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    x, y = centre(5, 6)
    pd.DataFrame(
        {"name": ["in", "far", "edge"], "E": [x, x + 1e6, ORIGIN[0] - 1.0], "N": [y, y, y]}
    ).to_csv(tmp_path / "deps.csv", index=False)
    raw = cfg.to_toml_dict()
    raw["sites"]["deposits"] = {"points": "deps.csv", "x": "E", "y": "N", "id": "name"}
    study = load_study(config_from_dict(raw, base_dir=tmp_path))
    deposits = study.sites.deposits()
    assert deposits.ids.tolist() == ["in"] and cells(deposits.rows, deposits.cols) == [(5, 6)]
    assert study.skipped == 2
    outside = [n for n in study.notes if "outside" in n]
    assert len(outside) == 2 and "far" in outside[0] and "deps.csv" in outside[0]


def test_all_deposit_points_outside_is_an_error(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}).to_csv(tmp_path / "deps.csv", index=False)
    raw = cfg.to_toml_dict()
    raw["sites"]["deposits"] = {"points": "deps.csv"}
    with pytest.raises(InputError) as exc:
        load_study(config_from_dict(raw, base_dir=tmp_path))
    assert_one_line(exc, "deps.csv", "no deposit left", "2 skipped")


def test_sampled_negatives(tmp_path: Path) -> None:
    raw = write_tiny_study(tmp_path)
    del raw["sites"]["non_deposits"]
    raw["sites"]["negatives"] = {"min_distance": 3000.0, "seed": 7}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    study = load_study(cfg)
    negatives = study.sites.non_deposits()
    assert len(negatives) == len(TINY_DEPOSITS)  # default count: as many as deposits
    d = np.array(TINY_DEPOSITS)
    dist = (
        np.hypot(negatives.rows[:, None] - d[None, :, 0], negatives.cols[:, None] - d[None, :, 1])
        * CELL
    )
    assert dist.min() >= 3000.0
    assert any("sampled 4 non-deposit" in n for n in study.notes)
    again = load_study(cfg).sites.non_deposits()
    np.testing.assert_array_equal(again.rows, negatives.rows)


def test_weights_out_of_range(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_raster(tmp_path / "weights.tif", np.full(TINY_SHAPE, 1.5, np.float32))
    with pytest.raises(InputError) as exc:
        load_study(cfg)
    assert_one_line(exc, "weights.tif", "[0, 1]", "1.5")


def test_weights_index_aligned_note(tmp_path: Path) -> None:
    cfg = config(tmp_path, align="index")
    weight = np.linspace(0, 1, 22 * 30, dtype=np.float32).reshape(22, 30)
    write_raster(tmp_path / "weights.tif", weight, transform=Affine(CELL, 0, 0, 0, -CELL, 0))
    study = load_study(cfg)
    assert study.knowledge is not None
    np.testing.assert_array_equal(study.knowledge, weight[: TINY_SHAPE[0], : TINY_SHAPE[1]])
    assert any("weights.tif" in n and "header ignored" in n for n in study.notes)
    cfg_strict = config_from_dict({**cfg.to_toml_dict(), "align": "strict"}, base_dir=tmp_path)
    with pytest.raises(InputError) as exc:
        load_study(cfg_strict)
    assert_one_line(exc, "weights.tif", "align")


def test_faults_to_knowledge_and_channel(tmp_path: Path) -> None:
    raw = write_tiny_study(tmp_path)
    x0, y0 = centre(0, 10)
    x1, y1 = centre(19, 10)
    gpd.GeoDataFrame(geometry=[LineString([(x0, y0), (x1, y1)])], crs=CRS).to_file(
        tmp_path / "faults.gpkg"
    )
    raw["knowledge"] = {
        "faults": "faults.gpkg",
        "as_channel": True,
        "decay": {"kind": "exponential", "scale": 2000.0},
    }
    study = load_study(config_from_dict(raw, base_dir=tmp_path))
    assert study.faults is not None and len(study.faults) == 1
    assert study.names[-1] == KNOWLEDGE_CHANNEL and study.raw.shape[0] == 5
    assert study.knowledge is not None
    np.testing.assert_allclose(study.knowledge[:, 10], 1.0)
    np.testing.assert_allclose(study.knowledge[5, 14], np.exp(-4000.0 / 2000.0), rtol=1e-6)
    np.testing.assert_array_equal(study.raw[-1], study.knowledge)


def test_fault_file_with_no_lines(tmp_path: Path) -> None:
    raw = write_tiny_study(tmp_path)
    gpd.GeoDataFrame(geometry=[Point(*centre(3, 3))], crs=CRS).to_file(tmp_path / "faults.gpkg")
    raw["knowledge"] = {"faults": "faults.gpkg"}
    with pytest.raises(InputError) as exc:
        load_study(config_from_dict(raw, base_dir=tmp_path))
    assert_one_line(exc, "faults.gpkg", "no lines")


def test_bad_element_layer_writes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_raster(tmp_path / "elements" / "Pb.tif", np.ones((5, 5), np.float32))
    out = tmp_path / "prepared"
    with pytest.raises(InputError) as exc:
        save_prepared(load_study(cfg), out)
    assert_one_line(exc, "Pb.tif", "shape 5 x 5")
    assert not out.exists()


def test_save_and_load_prepared(tiny_study: StudyConfig, tmp_path: Path) -> None:
    study = load_study(tiny_study)
    samples, splits = build_samples(study)
    assert len(samples) == 8 * 9  # 8 sites, 3 x 3 centres each, none off the grid
    out = save_prepared(study, tmp_path / "prepared", samples=samples, splits=splits)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".gkdcn-output",
        "knowledge.tif",
        "metadata.json",
        "samples.csv",
        "sites.csv",
        "stack.tif",
        "valid.tif",
    ]
    with rasterio.open(out / "stack.tif") as ds:
        assert list(ds.descriptions) == study.names and np.isnan(ds.nodata)
        assert ds.crs.to_epsg() == 32645 and ds.transform == study.grid.transform
    frame = pd.read_csv(out / "samples.csv")
    assert list(frame.columns[:5]) == ["row", "col", "label", "site_id", "aug"]
    split_column = frame[splits[0].name]
    assert set(split_column) == {"train", "val"}
    assert (split_column == "val").sum() == len(splits[0].val)
    # Site split: every window of a site on one side.
    assert frame.groupby("site_id")[splits[0].name].nunique().max() == 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["names"] == study.names and meta["summary"]["deposits"] == 4

    back = load_prepared(out)
    np.testing.assert_array_equal(back.raw, study.raw)
    np.testing.assert_array_equal(back.valid, study.valid)
    np.testing.assert_array_equal(back.knowledge, study.knowledge)
    assert back.names == study.names and back.grid == study.grid
    for name in ("ids", "labels", "rows", "cols"):
        np.testing.assert_array_equal(getattr(back.sites, name), getattr(study.sites, name))
    assert back.config == study.config

    with pytest.raises(OutputExistsError):
        save_prepared(study, out)
    save_prepared(study, out, overwrite=True)
    assert (out / "metadata.json").exists()


def test_save_prepared_failure_leaves_no_folder(
    tiny_study: StudyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_study(tiny_study)
    calls: list[Path] = []
    real = study_module.write_geotiff

    def failing(path: Path, *args: Any, **kwargs: Any) -> None:
        calls.append(Path(path))
        if len(calls) == 2:
            raise GkdcnError("disk full")
        real(path, *args, **kwargs)

    monkeypatch.setattr(study_module, "write_geotiff", failing)
    with pytest.raises(GkdcnError, match="disk full"):
        save_prepared(study, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no temporary folder left


def test_load_prepared_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        load_prepared(tmp_path / "absent")
    assert_one_line(exc, "absent", "not found")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError) as exc:
        load_prepared(tmp_path / "plain")
    assert_one_line(exc, "plain", "metadata.json")


def test_summary(tiny_study: StudyConfig) -> None:
    study = load_study(tiny_study)
    samples, splits = build_samples(study)
    summary = summarize(study, samples, splits)
    assert summary["crs"] == "EPSG:32645" and summary["shape"] == [20, 24]
    assert summary["valid_cells"] == 480 and summary["layers"] == ["As", "Au", "Cu", "Zn"]
    assert summary["deposits"] == 4 and summary["non_deposits"] == 4
    assert summary["samples"] == {"total": 72, "positive": 36, "negative": 36}
    s = summary["splits"][0]
    assert s["train"] + s["val"] == 72 and s["val_positive"] == 9  # 1 of 4 deposits, 9 windows
    json.dumps(summary)  # plain data
    text = format_summary(summary)
    assert "20 x 24 cells" in text and "4 deposits, 4 non-deposits" in text
    assert "72 windows" in text and "knowledge  from weights" in text


def test_point_ids_made_unique_and_clashing_cells_dropped(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    dep = [centre(*TINY_DEPOSITS[0]), centre(*TINY_DEPOSITS[1])]
    neg = [centre(*TINY_DEPOSITS[0]), centre(*TINY_NON_DEPOSITS[0])]  # first one on a deposit
    for name, coords in (("deps.csv", dep), ("negs.csv", neg)):
        pd.DataFrame(coords, columns=["x", "y"]).to_csv(tmp_path / name, index=False)
    raw = cfg.to_toml_dict()
    raw["sites"] = {"deposits": {"points": "deps.csv"}, "non_deposits": {"points": "negs.csv"}}
    study = load_study(config_from_dict(raw, base_dir=tmp_path))
    # Both files number their points 1, 2: the ids get a class prefix so sites stay distinct.
    assert study.sites.ids.tolist() == ["D:1", "D:2", "N:2"]
    assert cells(study.sites.rows, study.sites.cols) == [*TINY_DEPOSITS[:2], TINY_NON_DEPOSITS[0]]
    assert study.skipped == 1
    assert any("negs.csv" in n and "on deposit cell" in n for n in study.notes)


def _features(study: Any) -> tuple[np.ndarray, np.ndarray]:
    """The study's transformed map as training sees it (transform fitted on training windows)."""
    from gkdcn.training.windows import prepare_windows

    samples, splits = build_samples(study)
    data = prepare_windows(
        study.raw,
        study.names,
        study.knowledge,
        samples,
        splits[0],
        study.config.transform,
        study.config.samples.window,
        study.config.samples.padding,
        compositional=study.compositional,
    )
    from gkdcn.data.transforms import cells_in_windows

    train = np.asarray(splits[0].train)
    cells = cells_in_windows(
        study.grid.shape, samples.rows[train], samples.cols[train], study.config.samples.window
    )
    return data.transform.apply(study.raw), cells


@pytest.mark.parametrize("method", ["clr", "log"])
def test_knowledge_channel_leaves_element_channels_bit_identical(
    tmp_path: Path, method: str
) -> None:
    raw = write_tiny_study(tmp_path, transform={"method": method, "scaling": "standard"})
    without = load_study(config_from_dict(raw, base_dir=tmp_path))
    with_k = load_study(
        config_from_dict(
            {**raw, "knowledge": {"weights": "weights.tif", "as_channel": True}}, base_dir=tmp_path
        )
    )
    assert with_k.compositional == [True] * 4 + [False]
    f_without, _ = _features(without)
    f_with, cells = _features(with_k)
    np.testing.assert_array_equal(f_with[:4], f_without)
    # The knowledge channel is its raw value, standard-scaled on the training cells: no log-ratio.
    assert with_k.knowledge is not None
    k = with_k.knowledge.astype(np.float64)
    train_k = k.reshape(-1)[cells]
    expected = ((k - train_k.mean()) / train_k.std()).astype(np.float32)
    np.testing.assert_allclose(f_with[4], expected, rtol=1e-6, atol=1e-6)


def test_auxiliary_layer_is_left_out_of_the_clr(tmp_path: Path) -> None:
    raw = write_tiny_study(tmp_path)
    aux = load_study(
        config_from_dict({**raw, "elements": {"path": "elements", "auxiliary": ["Au"]}}, tmp_path)
    )
    dropped = load_study(
        config_from_dict({**raw, "elements": {"path": "elements", "exclude": ["Au"]}}, tmp_path)
    )
    assert aux.names == ["As", "Au", "Cu", "Zn"] and aux.compositional == [True, False, True, True]
    f_aux, cells = _features(aux)
    f_dropped, _ = _features(dropped)
    # The other layers' log-ratios are those of the composition without Au, bit for bit ...
    np.testing.assert_array_equal(f_aux[[0, 2, 3]], f_dropped)
    # ... and Au is only scaled (linear in its raw value: no log).
    au = aux.raw[1].astype(np.float64)
    train_au = au.reshape(-1)[cells]
    expected = (au - train_au.mean()) / train_au.std()
    np.testing.assert_allclose(f_aux[1], expected, rtol=1e-5, atol=1e-5)
    summary = summarize(aux)
    assert summary["transform"]["log_ratio"] == ["As", "Cu", "Zn"]
    assert summary["transform"]["scaled_only"] == ["Au"]
    text = format_summary(summary)
    assert "transform  clr on 3 layers (As, Cu, Zn); standard scaling only: Au" in text
    assert "transform  clr on all 3 layers, then standard scaling" in format_summary(
        summarize(dropped)
    )


def test_auxiliary_names_are_checked_against_the_layers(tmp_path: Path) -> None:
    raw = write_tiny_study(tmp_path)
    bad = {**raw, "elements": {"path": "elements", "auxiliary": ["Zn", "magnetic", "dist"]}}
    with pytest.raises(InputError) as exc:
        load_study(config_from_dict(bad, base_dir=tmp_path, source="study.toml"))
    assert_one_line(exc, "study.toml: key 'elements.auxiliary': unknown layers: magnetic, dist")
    assert "Zn," not in str(exc.value).split("unknown layers:")[1].split("(")[0]
    # A centred log-ratio needs two parts of the composition.
    three = {**raw, "elements": {"path": "elements", "auxiliary": ["As", "Au", "Cu"]}}
    with pytest.raises(InputError) as exc:
        load_study(config_from_dict(three, base_dir=tmp_path, source="study.toml"))
    assert_one_line(exc, "study.toml: key 'elements.auxiliary'", "at least 2 compositional")
    # With "log" one part is enough; with "none" the summary says nothing is logged.
    for method, line in (("log", "log on 1 layers (Zn)"), ("none", "none, standard scaling")):
        cfg = config_from_dict({**three, "transform": {"method": method}}, base_dir=tmp_path)
        assert line in format_summary(summarize(load_study(cfg)))


def test_trained_model_records_which_channels_are_log_ratios(tmp_path: Path) -> None:
    from gkdcn.config import TrainConfig
    from gkdcn.training.study import train_study

    raw = write_tiny_study(
        tmp_path,
        # Naming the knowledge channel too is allowed (it is never in the log-ratio anyway).
        elements={"path": "elements", "auxiliary": ["Zn", KNOWLEDGE_CHANNEL]},
        knowledge={"weights": "weights.tif", "as_channel": True},
    )
    study = load_study(config_from_dict(raw, base_dir=tmp_path))
    result = train_study(study, "cnn", cfg=TrainConfig(epochs=1, width=4, patience=None))
    assert result.bundle.channel_kinds == {
        "As": "log-ratio",
        "Au": "log-ratio",
        "Cu": "log-ratio",
        "Zn": "scaled",
        KNOWLEDGE_CHANNEL: "scaled",
    }
