"""Per-layer nodata in the config and undeclared float sentinels in the element reader."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from gkdcn.config import config_from_dict
from gkdcn.errors import InputError
from gkdcn.io.rasters import NodataWarning, layer_nodata, open_elements
from helpers import write_raster

SENTINEL = np.float32(-3.4028235e38)


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    au = rng.uniform(1, 5, (10, 12)).astype(np.float32)
    au[:2] = -1  # the "no value" marker of a real till survey: 24 cells
    te = rng.uniform(0.1, 1, (10, 12)).astype(np.float32)
    te[5, :7] = SENTINEL  # an undeclared float sentinel: 7 cells
    cu = rng.uniform(10, 50, (10, 12)).astype(np.float32)
    for name, data in (("Au", au), ("Te", te), ("Cu", cu)):
        write_raster(tmp_path / "el" / f"{name}.tif", data)
    return tmp_path / "el"


def _read(folder: Path, nodata: object = None) -> tuple[dict[str, np.ndarray], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_elements(folder, nodata=nodata) as src:  # type: ignore[arg-type]
            data = dict(zip(src.names, src.read(), strict=True))
    return data, [str(w.message) for w in caught if issubclass(w.category, NodataWarning)]


def test_declared_codes_and_sentinels_become_nodata(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    plain, notes = _read(folder)
    assert (plain["Au"] == -1).sum() == 24  # undeclared -1 is data: it must be declared
    assert np.isnan(plain["Te"]).sum() == 7
    assert len(notes) == 2
    # The -1 stays data (nothing declares it) but the note says what to write.
    assert "layer 'Au': 24 cells hold -1" in notes[0] and "nodata = { Au = -1 }" in notes[0]
    assert "layer 'Te'" in notes[1] and "7 cells" in notes[1]
    declared, notes = _read(folder, {"Au": -1})
    assert np.isnan(declared["Au"]).sum() == 24 and np.isfinite(declared["Cu"]).all()
    assert len(notes) == 1 and "layer 'Te'" in notes[0]
    declared, _ = _read(folder, {"default": -1, "Cu": 0})
    assert np.isnan(declared["Au"]).sum() == 24
    declared, _ = _read(folder, -1.0)
    assert np.isnan(declared["Au"]).sum() == 24
    # A declared sentinel needs no note.
    _, notes = _read(folder, {"Te": float(SENTINEL), "Au": -1})
    assert notes == []


def test_unknown_layer_names_are_one_line_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with pytest.raises(InputError) as err:
        _read(folder, {"Au": -1, "Tee": -1})
    assert "unknown layers: Tee" in str(err.value) and "\n" not in str(err.value)
    assert layer_nodata(None, ["Au"], folder) == {}


def test_study_config_nodata_reaches_study_and_prediction(tmp_path: Path) -> None:
    from gkdcn.data.study import load_study
    from gkdcn.predict import open_prediction_source

    _folder(tmp_path)
    sites = np.zeros((10, 12), np.uint8)
    sites[7, 3] = 1
    write_raster(tmp_path / "deposits.tif", sites)
    raw = {
        "elements": {"path": "el", "nodata": {"Au": -1}},
        "sites": {"deposits": {"raster": "deposits.tif"}, "negatives": {"min_distance": 0}},
    }
    cfg = config_from_dict(raw, base_dir=tmp_path)
    study = load_study(cfg)
    assert not study.valid[:2].any() and not study.valid[5, :7].any()
    assert any("layer 'Te'" in note and "7 cells" in note for note in study.notes)
    (tmp_path / "study.toml").write_text(
        '[elements]\npath = "el"\nnodata = { Au = -1 }\n[sites.deposits]\nraster = "deposits.tif"\n'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataWarning)
        source, _ = open_prediction_source(tmp_path / "study.toml", ["Au", "Cu", "Te"])
    with source:
        assert np.isnan(source.read()[0, :2]).all()
    with pytest.raises(InputError, match=r"elements\.nodata"):
        load_study(
            config_from_dict({**raw, "elements": {"path": "el", "nodata": {"Ag": 0}}}, tmp_path)
        )


def test_multiband_file_codes(tmp_path: Path) -> None:
    data = np.ones((2, 6, 6), np.float32)
    data[1, 0, 0] = -1
    path = write_raster(tmp_path / "stack.tif", data, descriptions=None)
    import rasterio

    with rasterio.open(path, "r+") as ds:
        ds.set_band_description(1, "Cu")
        ds.set_band_description(2, "Au")
    with open_elements(path, nodata={"Au": -1}) as src:
        values = src.read()
    assert np.isnan(values[src.names.index("Au"), 0, 0])
    assert np.isfinite(values[src.names.index("Cu")]).all()


def test_valid_ranges_turn_values_outside_into_nodata(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_elements(folder, valid_range={"Cu": (20.0, 40.0)}) as src:
            cu = src.read()[src.names.index("Cu")]
    outside = [str(w.message) for w in caught if "valid range" in str(w.message)]
    assert len(outside) == 1 and "layer 'Cu'" in outside[0]
    assert np.isnan(cu).sum() == int(outside[0].split(": ")[2].split()[0])
    assert np.nanmin(cu) >= 20 and np.nanmax(cu) <= 40
    with pytest.raises(InputError, match="unknown layers: pH"):
        open_elements(folder, valid_range={"pH": (0.0, 14.0)})
    with pytest.raises(InputError, match="must be below high"):
        config_from_dict(
            {"elements": {"path": "el", "valid_range": {"Cu": [5, 1]}},
             "sites": {"deposits": {"raster": "d.tif"}}}, tmp_path,
        )  # fmt: skip
