"""The bad-input catalogue: every case runs the real CLI and must end with exit status 2, exactly
one ``error:`` line naming the file at fault, no traceback, and no new or changed file anywhere
under the input and output folders (names, sizes, modification times and modes compared).

The cases are those a new user's catalogue found (issue 12) plus ones that already held, so they
keep holding. One synthetic district, a crafted model file and a probability map are made once
per session; each case works on its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gkdcn.cli import app
from gkdcn.data.study import load_study
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.data.transforms import ChannelTransform
from gkdcn.io.rasters import write_geotiff
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.nets import ModelSpec, build_network

# Every test here belongs to the catalogue: ``pytest -m bad_input`` runs it all.
pytestmark = pytest.mark.bad_input

SPEC = SyntheticSpec(height=32, width=32, n_layers=5, n_deposits=4, n_faults=1, seed=5)
SPEC_CRS = "EPSG:32645"  # the synthetic district's
runner = CliRunner()


@dataclass(frozen=True)
class Base:
    """The session's shared, never modified inputs."""

    root: Path  # holds district/, model.pt, map.tif


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("bad_inputs")
    config = generate_district(root / "d", SPEC)
    study = load_study(load_config_for(config))
    values = study.raw.reshape(len(study.names), -1).T
    transform = ChannelTransform.fit(values, "clr", "standard")
    spec = ModelSpec(kind="cnn", in_channels=len(study.names), window=9, width=4)
    net = build_network(spec)
    bundle = ModelBundle(spec, net.state_dict(), list(study.names), transform)
    bundle.save(root / "model.pt")
    rng = np.random.default_rng(0)
    prob = rng.random(study.grid.shape).astype(np.float32)
    prob[~study.valid] = -9999.0
    write_geotiff(root / "map.tif", prob[np.newaxis], study.grid, nodata=-9999.0)
    return Base(root)


def load_config_for(path: Path):  # type: ignore[no-untyped-def]
    from gkdcn.config import load_config

    return load_config(path)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its size, modification time and mode."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            size = 0 if path.is_dir() else st.st_size
            out[str(path.relative_to(root))] = (size, st.st_mtime_ns, st.st_mode)
    return out


def _edit_toml(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def _save_model(bundle: ModelBundle, path: Path, **meta_changes: object) -> None:
    """Save ``bundle`` with some metadata replaced (what a hand-edited file would hold)."""
    meta = {**bundle.metadata(), **meta_changes}
    torch.save({"meta": json.dumps(meta), "state": bundle.state}, path)


# Each case: (id, setup(work) -> (argv, file named in the error, words of the error)).
# ``work`` holds d/ (the district), model.pt and map.tif, copies of the session's.
Setup = Callable[[Path], tuple[list[str], str, str]]
CASES: list[tuple[str, Setup]] = []


def case(name: str) -> Callable[[Setup], Setup]:
    def register(func: Setup) -> Setup:
        CASES.append((name, func))
        return func

    return register


# ---- item 1: --overwrite never replaces an input or a folder of the user's files


@case("prepare-out-is-the-input-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    return ["prepare", f"{w}/d/study.toml", "--out", f"{w}/d", "--overwrite"], f"{w}/d", "holds"


@case("explain-out-is-the-input-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["explain", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/d", "--overwrite"]
    return argv, f"{w}/d", "holds"


@case("predict-out-is-an-input-layer")
def _(w: Path) -> tuple[list[str], str, str]:
    out = f"{w}/d/elements/Au.tif"
    return (
        ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", out, "--overwrite"],
        out,
        "input",
    )


@case("predict-out-inside-the-element-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    out = f"{w}/d/elements/map.tif"
    return ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", out], out, "lies inside"


@case("predict-out-is-the-model")
def _(w: Path) -> tuple[list[str], str, str]:
    out = f"{w}/model.pt"
    return ["predict", out, f"{w}/d/study.toml", "--out", out, "--overwrite"], out, "input"


@case("evaluate-out-is-the-element-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/study.toml", "--out", f"{w}/d/elements"]
    return [*argv, "--overwrite"], f"{w}/d/elements", "lies inside"


@case("train-out-is-the-element-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["train", f"{w}/d/study.toml", "-m", "cnn", "--out", f"{w}/d/elements", "--overwrite"]
    return argv, f"{w}/d/elements", "lies inside"


@case("prepare-overwrite-a-folder-of-user-files")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("keep me")
    argv = ["prepare", f"{w}/d/study.toml", "--out", f"{w}/mine", "--overwrite"]
    return argv, f"{w}/mine", "did not write"


@case("synth-overwrite-a-folder-of-user-files")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("keep me")
    return ["synth", f"{w}/mine", "--overwrite"], f"{w}/mine", "did not write"


@case("synth-without-overwrite")
def _(w: Path) -> tuple[list[str], str, str]:
    return ["synth", f"{w}/d"], f"{w}/d", "already exists"


@case("prepare-out-dot-overwrite")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "here").mkdir()
    (w / "here" / "x.txt").write_text("x")
    os.chdir(w / "here")  # restored by the test
    return ["prepare", f"{w}/d/study.toml", "--out", ".", "--overwrite"], ".", "current folder"


@case("predict-out-is-a-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "maps.tif").mkdir()
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/maps.tif"]
    return [*argv, "--overwrite"], f"{w}/maps.tif", "is a folder"


@case("predict-csv-is-a-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "ch").mkdir()  # once reported as ".ch.y2n41vmq.tmp: Is a directory", after the map
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return [*argv, "--csv", f"{w}/ch", "--overwrite"], f"{w}/ch", "is a folder"


@case("evaluate-out-is-a-file")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "e").write_text("a file")
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/study.toml", "--out", f"{w}/e"]
    return argv, f"{w}/e", "is a file"


@case("explain-overwrite-a-folder-of-user-files")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("keep me")
    argv = ["explain", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/mine"]
    return [*argv, "--overwrite"], f"{w}/mine", "did not write"


# ---- item 2: a model meets a grid with other layers


@case("predict-missing-layer")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "d" / "elements" / "Sb.tif").unlink()
    return ["predict", f"{w}/model.pt", f"{w}/d/elements", "--out", f"{w}/m.tif"], "", "Sb"


# ---- item 5: tracebacks that became one-line errors


@case("evaluate-empty-deposits-csv")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "empty.csv").write_bytes(b"")
    argv = ["evaluate", f"{w}/map.tif", f"{w}/empty.csv", "--out", f"{w}/e"]
    return argv, f"{w}/empty.csv", "empty"


@case("evaluate-deposits-dbf-without-geometry")
def _(w: Path) -> tuple[list[str], str, str]:
    import geopandas as gpd

    frame = gpd.read_file(w / "d" / "faults.gpkg").drop(columns="geometry")
    gpd.GeoDataFrame(frame, geometry=[None] * len(frame), crs=SPEC_CRS).to_file(w / "s.shp")
    for suffix in (".shp", ".shx", ".prj", ".cpg"):
        (w / "s").with_suffix(suffix).unlink(missing_ok=True)
    argv = ["evaluate", f"{w}/map.tif", f"{w}/s.dbf", "--out", f"{w}/e"]
    return argv, f"{w}/s.dbf", "without geometry"


@case("prepare-faults-given-as-csv")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "d" / "faults.csv").write_text("id,name\n1,main fault\n")
    _edit_toml(w / "d" / "study.toml", 'faults = "faults.gpkg"', 'faults = "faults.csv"')
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/faults.csv", "without geometry"


for _option, _value in (
    ("height", "0"),
    ("layers", "1"),
    ("deposits", "0"),
    ("seed", "-1"),
):

    @case(f"synth-{_option}-{_value}")
    def _(w: Path, option: str = _option, value: str = _value) -> tuple[list[str], str, str]:
        return ["synth", f"{w}/new", f"--{option}", value], "", option


for _key, _line in (
    ("lr", "lr = 0.001"),
    ("weight_decay", None),
    ("gk_lambda", None),
):

    @case(f"train-{_key}-inf")
    def _(w: Path, key: str = _key, line: str | None = _line) -> tuple[list[str], str, str]:
        toml = w / "d" / "study.toml"
        if line:
            _edit_toml(toml, line, f"{key} = inf")
        else:
            _edit_toml(toml, "[train]\n", f"[train]\n{key} = inf\n")
        argv = ["train", str(toml), "-m", "gk-cnn", "--out", f"{w}/t"]
        return argv, str(toml), key


@case("evaluate-bootstrap-negative")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/study.toml", "--out", f"{w}/e"]
    return [*argv, "--bootstrap", "-1"], "", "--bootstrap"


@case("train-window-99999")
def _(w: Path) -> tuple[list[str], str, str]:
    toml = w / "d" / "study.toml"
    _edit_toml(toml, "window = 9", "window = 99999")
    return ["train", str(toml), "-m", "cnn", "--out", f"{w}/t"], str(toml), "samples.window"


@case("train-seeds-0")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["train", f"{w}/d/study.toml", "-m", "cnn", "--out", f"{w}/t", "--seeds", "0"]
    return argv, "--seeds", "at least 1"


@case("train-precision-in-config")
def _(w: Path) -> tuple[list[str], str, str]:
    toml = w / "d" / "study.toml"
    _edit_toml(toml, "[train]\n", '[train]\nprecision = "half"\n')
    return ["train", str(toml), "-m", "cnn", "--out", f"{w}/t"], str(toml), "train.precision"


@case("compare-precision-flag")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/r", "--precision", "fp8"]
    return argv, "key 'precision'", "'auto', 'float32' or 'bfloat16'"


@case("ablation-unknown-variant")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["ablation", f"{w}/d/study.toml", "--out", f"{w}/a", "--variants", "no such lever"]
    return argv, "no such lever", "unknown variant"


@case("train-window-larger-than-grid")
def _(w: Path) -> tuple[list[str], str, str]:
    toml = w / "d" / "study.toml"
    _edit_toml(toml, "window = 9", "window = 33")
    return ["train", str(toml), "-m", "cnn", "--out", f"{w}/t"], str(toml), "larger than"


@case("train-edited-prepared-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    result = runner.invoke(app, ["prepare", f"{w}/d/study.toml", "--out", f"{w}/p"])
    assert result.exit_code == 0, result.output
    meta_path = w / "p" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["names"] = meta["names"][:-1]
    meta_path.write_text(json.dumps(meta))
    return ["train", f"{w}/p", "-m", "cnn", "--out", f"{w}/t"], f"{w}/p", "inconsistent"


@case("predict-format-version-string")
def _(w: Path) -> tuple[list[str], str, str]:
    _save_model(ModelBundle.load(w / "model.pt"), w / "v.pt", format_version="1")
    argv = ["predict", f"{w}/v.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/v.pt", "format_version"


@case("predict-mc-dropout-100000")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return [*argv, "--mc-dropout", "100000"], "", "--mc-dropout"


# ---- item 6: silent nonsense that is now refused


@case("predict-nan-weights")
def _(w: Path) -> tuple[list[str], str, str]:
    bundle = ModelBundle.load(w / "model.pt")
    first = next(k for k, v in bundle.state.items() if v.is_floating_point())
    bundle.state[first] = torch.full_like(bundle.state[first], float("nan"))
    _save_model(bundle, w / "nan.pt")
    argv = ["predict", f"{w}/nan.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/nan.pt", "NaN"


@case("evaluate-most-sites-of-another-district")
def _(w: Path) -> tuple[list[str], str, str]:
    lines = (w / "d" / "deposits.csv").read_text().splitlines()
    moved = [lines[0]]
    for i, line in enumerate(lines[1:]):
        sid, x, y = line.split(",")
        moved.append(f"{sid},{float(x) + (1e6 if i < 3 else 0)},{y}")
    (w / "other.csv").write_text("\n".join(moved) + "\n")
    argv = ["evaluate", f"{w}/map.tif", f"{w}/other.csv", "--out", f"{w}/e"]
    return argv, f"{w}/other.csv", "3 of 4 deposits lie outside"


# ---- item 7: misleading messages


@case("prepare-deposits-crs-mixup")
def _(w: Path) -> tuple[list[str], str, str]:
    toml = w / "d" / "study.toml"
    _edit_toml(toml, 'crs = "EPSG:32645"', 'crs = "EPSG:32646"')
    return ["prepare", str(toml)], f"{w}/d/deposits.csv", "read as EPSG:32646"


@case("prepare-resample-label-cells-all-off-the-grid")
def _(w: Path) -> tuple[list[str], str, str]:
    import rasterio
    from affine import Affine

    with rasterio.open(w / "d" / "elements" / "Au.tif") as ds:
        t, h, wd, crs = ds.transform, ds.height, ds.width, ds.crs
    fine = np.zeros((2 * h, 2 * wd), np.uint8)  # a label raster at half the cell size,
    fine[[10, 20, 40], [10, 40, 16]] = 1  # shifted wholly off the element grid
    profile = {"driver": "GTiff", "height": 2 * h, "width": 2 * wd, "count": 1, "crs": crs}
    transform = Affine(t.a / 2, 0, t.c + 10 * wd * t.a, 0, t.e / 2, t.f)
    with rasterio.open(w / "fine.tif", "w", dtype="uint8", transform=transform, **profile) as dst:
        dst.write(fine, 1)
    toml = w / "d" / "study.toml"
    text = toml.read_text().replace('align = "strict"', 'align = "resample"')
    start = text.index("[sites.deposits]")
    end = text.index("[", start + 1)
    toml.write_text(
        f'{text[:start]}[sites.deposits]\nraster = "{w}/fine.tif"\nvalue = 1\n\n{text[end:]}'
    )
    return ["prepare", str(toml)], f"{w}/fine.tif", "none of the 3 cells equal to 1 lies on"


# ---- cases that already held (kept so they keep holding)


@case("prepare-missing-config")
def _(w: Path) -> tuple[list[str], str, str]:
    return ["prepare", f"{w}/none.toml"], f"{w}/none.toml", "not found"


@case("prepare-bad-toml")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "d" / "study.toml").write_text("name = \n")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "TOML"


@case("prepare-unknown-key")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "[train]\n", "[train]\nlearning_rate = 1\n")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "unknown key"


@case("prepare-missing-elements")
def _(w: Path) -> tuple[list[str], str, str]:
    shutil.rmtree(w / "d" / "elements")
    return ["prepare", f"{w}/d/study.toml"], "elements", "not found"


@case("prepare-deposits-missing-id-column")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", 'id = "site_id"', 'id = "name"')
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/deposits.csv", "'name' not found"


@case("prepare-corrupt-layer")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "d" / "elements" / "Au.tif").write_bytes(b"not a tiff")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/elements/Au.tif", "cannot read"


@case("predict-missing-model")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["predict", f"{w}/none.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/none.pt", "not found"


@case("predict-truncated-model")
def _(w: Path) -> tuple[list[str], str, str]:
    (w / "cut.pt").write_bytes((w / "model.pt").read_bytes()[:3000])
    argv = ["predict", f"{w}/cut.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/cut.pt", "not a readable"


@case("predict-existing-output")
def _(w: Path) -> tuple[list[str], str, str]:
    return (
        ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/map.tif"],
        "map.tif",
        "exists",
    )


@case("evaluate-not-a-probability-map")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/d/elements/Au.tif", f"{w}/d/study.toml", "--out", f"{w}/e"]
    return argv, f"{w}/d/elements/Au.tif", "probability"


# ---- round two (issue 30): nonsense that exited 0, tracebacks, unbounded work, misleading words


def _blank_rows(layer: Path, keep: str) -> None:
    """Make a layer nodata outside its top or bottom half (``keep``)."""
    import rasterio

    with rasterio.open(layer, "r+") as ds:
        data = ds.read(1)
        half = data.shape[0] // 2
        data[half:] = ds.nodata if keep == "top" else data[half:]
        data[:half] = ds.nodata if keep == "bottom" else data[:half]
        ds.write(data, 1)


def _disjoint_layers(w: Path) -> None:
    _blank_rows(w / "d" / "elements" / "Au.tif", "top")
    _blank_rows(w / "d" / "elements" / "Cu.tif", "bottom")


@case("predict-layers-without-a-common-valid-cell")
def _(w: Path) -> tuple[list[str], str, str]:
    _disjoint_layers(w)
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/d/elements", "do not overlap"


@case("prepare-layers-without-a-common-valid-cell")
def _(w: Path) -> tuple[list[str], str, str]:
    _disjoint_layers(w)
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/elements", "do not overlap"


def _one_deposit(w: Path) -> None:
    lines = (w / "d" / "deposits.csv").read_text().splitlines()
    (w / "d" / "deposits.csv").write_text("\n".join(lines[:2]) + "\n")


@case("train-lodo-with-one-deposit")
def _(w: Path) -> tuple[list[str], str, str]:
    _one_deposit(w)
    argv = ["train", f"{w}/d/study.toml", "-m", "cnn", "--out", f"{w}/t", "--split", "lodo"]
    return argv, f"{w}/d/study.toml", "no deposit window to train on"


@case("train-site-split-with-one-deposit")
def _(w: Path) -> tuple[list[str], str, str]:
    _one_deposit(w)
    argv = ["train", f"{w}/d/study.toml", "-m", "cnn", "--out", f"{w}/t"]
    return argv, f"{w}/d/study.toml", "cannot split a single deposit site"


@case("compare-lodo-with-one-deposit")
def _(w: Path) -> tuple[list[str], str, str]:
    _one_deposit(w)
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/r", "--models", "cnn"]
    return [*argv, "--protocols", "lodo"], f"{w}/d/study.toml", "no deposit window to train on"


@case("compare-shift-makes-a-cell-both-labels")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "shift = 3", "shift = 9")
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/r", "--models", "cnn"]
    return argv, f"{w}/d/study.toml", "a deposit and of a non-deposit"


@case("prepare-shift-makes-a-cell-both-labels")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "shift = 3", "shift = 9")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "a deposit and of a non-deposit"


@case("prepare-shift-more-windows-than-cells")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "shift = 3", "shift = 13")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "more than the grid's 1024 cells"


@case("prepare-shift-401")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "shift = 3", "shift = 401")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "samples.shift"


def _recorded_grid(w: Path, cell: float, georeferenced: bool = True) -> Path:
    """The session's model, as if trained on a grid of ``cell`` map units."""
    bundle = ModelBundle.load(w / "model.pt")
    info = {**bundle.info, "cell_size": [cell, cell], "georeferenced": georeferenced}
    _save_model(bundle, w / "g.pt", info=info)
    return w / "g.pt"


@case("predict-grid-of-another-cell-size")
def _(w: Path) -> tuple[list[str], str, str]:
    model = _recorded_grid(w, 2000.0)
    argv = ["predict", str(model), f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/d/elements", "trained on cells of 2000 x 2000"


def _ungeoreferenced_copy(folder: Path, to: Path) -> None:
    """The layers of ``folder`` as plain TIFFs: no CRS, no geotransform."""
    import warnings

    import rasterio

    to.mkdir()
    for layer in sorted(folder.glob("*.tif")):
        with rasterio.open(layer) as ds:
            data, nodata = ds.read(1), ds.nodata
        profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(
                to / layer.name, "w", count=1, dtype=data.dtype, nodata=nodata, **profile
            ) as dst:
                dst.write(data, 1)


@case("predict-ungeoreferenced-layers")
def _(w: Path) -> tuple[list[str], str, str]:
    _ungeoreferenced_copy(w / "d" / "elements", w / "plain")
    model = _recorded_grid(w, 1000.0)
    argv = ["predict", str(model), f"{w}/plain", "--out", f"{w}/m.tif"]
    return argv, f"{w}/plain", "no georeferencing"


@case("explain-grid-of-another-cell-size")
def _(w: Path) -> tuple[list[str], str, str]:
    model = _recorded_grid(w, 500.0)
    argv = ["explain", str(model), f"{w}/d/study.toml", "--out", f"{w}/x"]
    return argv, f"{w}/d/study.toml", "trained on cells of 500 x 500"


@case("predict-out-is-a-style-file")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/m.qml"]
    return argv, f"{w}/m.qml", "cannot be a .qml file"


@case("predict-csv-is-the-style-file")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["predict", f"{w}/model.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return [*argv, "--csv", f"{w}/m.qml"], f"{w}/m.qml", "QGIS style"


def _edited_spec(w: Path, **changes: object) -> Path:
    bundle = ModelBundle.load(w / "model.pt")
    _save_model(bundle, w / "s.pt", spec={**bundle.spec.to_dict(), **changes})
    return w / "s.pt"


@case("predict-spec-in-channels-disagrees")
def _(w: Path) -> tuple[list[str], str, str]:
    model = _edited_spec(w, in_channels=4)
    argv = ["predict", str(model), f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, str(model), "spec.in_channels is 4 but the file lists 5 channels"


@case("predict-spec-width-6000")
def _(w: Path) -> tuple[list[str], str, str]:
    model = _edited_spec(w, width=6000)
    argv = ["predict", str(model), f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, str(model), "width 6000"


@case("predict-spec-width-disagrees-with-the-weights")
def _(w: Path) -> tuple[list[str], str, str]:
    model = _edited_spec(w, width=8)
    argv = ["predict", str(model), f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, str(model), "weight conv1.weight has shape (4, 5, 3, 3)"


@case("predict-weights-of-another-shape")
def _(w: Path) -> tuple[list[str], str, str]:
    bundle = ModelBundle.load(w / "model.pt")
    bundle.state["conv1.weight"] = torch.zeros(4, 6, 3, 3)  # once a truncated state_dict reason
    _save_model(bundle, w / "s.pt")
    argv = ["predict", f"{w}/s.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/s.pt", "needs (4, 5, 3, 3)"


@case("predict-model-lists-a-channel-twice")
def _(w: Path) -> tuple[list[str], str, str]:
    bundle = ModelBundle.load(w / "model.pt")
    _save_model(bundle, w / "s.pt", channels=[*bundle.channels[:-1], bundle.channels[0]])
    argv = ["predict", f"{w}/s.pt", f"{w}/d/study.toml", "--out", f"{w}/m.tif"]
    return argv, f"{w}/s.pt", "listed twice"


@case("predict-knowledge-channel-model-on-an-element-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    bundle = ModelBundle.load(w / "model.pt")
    channels = [*bundle.channels[:-1], "fault_proximity"]
    _save_model(bundle, w / "k.pt", channels=channels)
    argv = ["predict", f"{w}/k.pt", f"{w}/d/elements", "--out", f"{w}/m.tif"]
    return argv, f"{w}/d/elements", "predict from the study config"


for _key, _edit in (
    ("train.background_ratio", ("[train]\n", "[train]\nbackground_ratio = 1000000.0\n")),
    ("train.epochs", ("epochs = 40", "epochs = 100000000")),
    ("train.batch_size", ("batch_size = 32", "batch_size = 10000000")),
    ("train.width", ("[train]\n", "[train]\nwidth = 6000\n")),
    ("train.seed", ("patience = 10\nseed = 5", "patience = 10\nseed = -1")),
    ("sites.negatives.count", ("count = 4", "count = 100000000")),
    ("split.folds", ("[split]\n", "[split]\nfolds = 100000\n")),
    ("compare.bootstrap", ("[train]\n", "[compare]\nbootstrap = 100000000\n\n[train]\n")),
    ("predict.batch_size", ("[train]\n", "[predict]\nbatch_size = 100000000\n\n[train]\n")),
):

    @case(f"prepare-{_key}-beyond-its-bound")
    def _(w: Path, key: str = _key, edit: tuple[str, str] = _edit) -> tuple[list[str], str, str]:
        toml = w / "d" / "study.toml"
        _edit_toml(toml, *edit)
        return ["prepare", str(toml)], str(toml), key


@case("prepare-negatives-more-than-the-valid-cells")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", "count = 4", "count = 5000")
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml: key 'sites.negatives'", "only"


@case("evaluate-bootstrap-100000000")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/study.toml", "--out", f"{w}/e"]
    return [*argv, "--bootstrap", "100000000"], "--bootstrap", "100000"


@case("prepare-one-layer-for-a-log-ratio")
def _(w: Path) -> tuple[list[str], str, str]:
    _edit_toml(w / "d" / "study.toml", 'path = "elements"', 'path = "elements"\nlayers = ["Au"]')
    return ["prepare", f"{w}/d/study.toml"], f"{w}/d/study.toml", "key 'elements.layers'"


@case("evaluate-raster-without-the-marker-value")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/truth.tif", "--out", f"{w}/e", "--value", "7"]
    return argv, f"{w}/d/truth.tif", "no cell equals 7, the value that marks a deposit (--value)"


@case("evaluate-raster-of-another-grid")
def _(w: Path) -> tuple[list[str], str, str]:
    import rasterio
    from affine import Affine

    with rasterio.open(w / "d" / "truth.tif", "r+") as ds:
        t = ds.transform
        ds.transform = Affine(t.a, 0, t.c + 5 * t.a, 0, t.e, t.f)
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/truth.tif", "--out", f"{w}/e"]
    return argv, f"{w}/d/truth.tif", "give the deposits as points, or a study config"


@case("evaluate-config-with-value")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/study.toml", "--out", f"{w}/e", "--value", "0"]
    return argv, f"{w}/d/study.toml", "--value does not apply to a study config"


@case("evaluate-points-with-value")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["evaluate", f"{w}/map.tif", f"{w}/d/deposits.csv", "--out", f"{w}/e", "--value", "0"]
    return argv, f"{w}/d/deposits.csv", "--value does not apply to deposit points"


@case("compare-models-empty")
def _(w: Path) -> tuple[list[str], str, str]:
    return (
        ["compare", f"{w}/d/study.toml", "--out", f"{w}/r", "--models", ""],
        "--models",
        "nothing",
    )


@case("compare-protocols-comma")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/r", "--protocols", ","]
    return argv, "--protocols", "names nothing"


@case("ablation-variants-comma")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["ablation", f"{w}/d/study.toml", "--out", f"{w}/a", "--variants", ","]
    return argv, "--variants", "names nothing"


# Every option's bad value is one error: line naming the option (Typer's usage errors included).
for _argv, _option in (
    (["--threads", "0", "prepare", "{w}/d/study.toml"], "--threads"),
    (["train", "{w}/d/study.toml", "-m", "cnn", "--out", "{w}/t", "--epochs", "abc"], "--epochs"),
    (["train", "{w}/d/study.toml", "-m", "cnn", "--out", "{w}/t", "--seed", "-1"], "--seed"),
    (["train", "{w}/d/study.toml", "-m", "cnn", "--out", "{w}/t", "--seeds", "1000"], "--seeds"),
    (
        ["train", "{w}/d/study.toml", "-m", "cnn", "--out", "{w}/t", "--epochs", "10000000"],
        "epochs",
    ),
    (["train", "{w}/d/study.toml", "--out", "{w}/t"], "--model"),
    (
        ["predict", "{w}/model.pt", "{w}/d/study.toml", "--out", "{w}/m.tif", "--batch-size", "0"],
        "--batch-size",
    ),
    (
        ["predict", "{w}/model.pt", "{w}/d/study.toml", "--out", "{w}/m.tif", "--block-rows", "x"],
        "--block-rows",
    ),
    (
        ["predict", "{w}/model.pt", "{w}/d/study.toml", "--out", "{w}/m.tif", "--no-such"],
        "--no-such",
    ),
    (["compare", "{w}/d/study.toml", "--out", "{w}/r", "--jobs", "0"], "--jobs"),
    (["compare", "{w}/d/study.toml", "--out", "{w}/r", "--seeds", "100000"], "--seeds"),
    (
        ["ablation", "{w}/d/study.toml", "--out", "{w}/a", "--background", "100000000"],
        "--background",
    ),
    (
        ["explain", "{w}/model.pt", "{w}/d/study.toml", "--out", "{w}/x", "--map-ig-steps", "0"],
        "--map-ig-steps",
    ),
    (["synth", "{w}/new", "--samples", "1000000000"], "--samples"),
    (["demo", "--out", "{w}/demo", "--seed", "-5"], "--seed"),
):

    @case(f"option-{_argv[0]}-{_option.strip('-')}-{_argv[-1]}")
    def _(w: Path, argv: list[str] = _argv, option: str = _option) -> tuple[list[str], str, str]:
        return [a.format(w=w) for a in argv], option, ""


@pytest.mark.parametrize(("name", "setup"), CASES, ids=[name for name, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    name: str, setup: Setup, base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    shutil.copytree(base.root, work)
    monkeypatch.chdir(tmp_path)
    _check_refused(tmp_path, *setup(work))


def _check_refused(root: Path, argv: list[str], named: str, words: str) -> None:
    """Run the CLI; exit 2, one ``error:`` line naming ``named`` and saying ``words``, no
    traceback, and nothing under ``root`` new or changed."""
    before = _snapshot(root)
    result = runner.invoke(app, ["--threads", "1", *argv])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1, output
    assert named in errors[0], output
    assert words.lower() in errors[0].lower(), output
    assert _snapshot(root) == before


# ---- cases on a comparison run (one quick run per session, copied per case)

COMPARE = ["--quick", "--seeds", "1", "--models", "cnn", "--protocols", "authors"]
COMPARE += ["--epochs", "1", "--jobs", "1"]


@pytest.fixture(scope="session")
def run_base(base: Base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_runs")
    shutil.copytree(base.root / "d", root / "d")
    argv = ["--threads", "1", "compare", f"{root}/d/study.toml", "--out", f"{root}/run"]
    result = runner.invoke(app, [*argv, *COMPARE])
    assert result.exit_code == 0, result.output
    return root


RUN_CASES: list[tuple[str, Setup]] = []


def run_case(name: str) -> Callable[[Setup], Setup]:
    def register(func: Setup) -> Setup:
        RUN_CASES.append((name, func))
        return func

    return register


@run_case("report-out-is-the-runs-summary")
def _(w: Path) -> tuple[list[str], str, str]:
    out = f"{w}/run/summary.json"
    return ["report", f"{w}/run", "--out", out, "--overwrite"], out, "input"


@run_case("report-out-is-a-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    return ["report", f"{w}/run", "--out", f"{w}/run/maps", "--overwrite"], "maps", "holds"


@run_case("compare-after-the-data-changed")
def _(w: Path) -> tuple[list[str], str, str]:
    import rasterio

    layer = w / "d" / "elements" / "Au.tif"
    with rasterio.open(layer, "r+") as ds:
        data = ds.read(1)
        ds.write(np.where(data == ds.nodata, data, data * 1.5), 1)
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/run", *COMPARE]
    return argv, f"{w}/run", "Au.tif"


@run_case("compare-out-dot-overwrite")
def _(w: Path) -> tuple[list[str], str, str]:
    os.chdir(w / "run")  # restored by the test
    return ["compare", f"{w}/d/study.toml", "--out", ".", "--overwrite", *COMPARE], ".", "current"


@run_case("compare-out-is-the-district")
def _(w: Path) -> tuple[list[str], str, str]:
    argv = ["compare", f"{w}/d/study.toml", "--out", f"{w}/d", "--overwrite", *COMPARE]
    return argv, f"{w}/d", "holds"


@pytest.mark.parametrize(("name", "setup"), RUN_CASES, ids=[name for name, _ in RUN_CASES])
def test_bad_input_on_a_run_is_one_line_and_changes_nothing(
    name: str, setup: Setup, run_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    shutil.copytree(run_base, work)
    monkeypatch.chdir(tmp_path)
    _check_refused(tmp_path, *setup(work))


def test_an_empty_result_is_not_a_finished_job(run_base: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(run_base, work)
    result_path = work / "run" / "authors" / "cnn" / "seed0" / "result.json"
    result_path.write_text("")  # a crash between creating and filling it (older versions)
    out = _ok("compare", f"{work}/d/study.toml", "--out", f"{work}/run", *COMPARE)
    assert "finished in" in out
    assert json.loads(result_path.read_text())["model"] == "cnn"


def test_gdal_prints_nothing_before_the_one_line_error(base: Base, tmp_path: Path) -> None:
    """In a real process GDAL's own ``ERROR n:`` lines would reach stderr unless silenced."""
    work = tmp_path / "w"
    shutil.copytree(base.root, work)
    (work / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing else
    before = _snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    argv = [sys.executable, "-m", "gkdcn.cli", "evaluate", str(work / "bad.tif")]
    argv += [str(work / "d" / "study.toml"), "--out", str(work / "e")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert str(work / "bad.tif") in lines[0]
    assert _snapshot(tmp_path) == before


# ---- what must keep working (exit 0), next to the refusals above


def _ok(*argv: str) -> str:
    result = runner.invoke(app, ["--threads", "1", *argv])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_permissions_open_would_give(
    umask: int, base: Base, tmp_path: Path
) -> None:
    old = os.umask(umask)
    try:
        (tmp_path / "m.tif").write_bytes(b"")
        os.chmod(tmp_path / "m.tif", 0o600)  # --overwrite does not keep a private mode either
        _ok("predict", f"{base.root}/model.pt", f"{base.root}/d/study.toml", "--out",
            f"{tmp_path}/m.tif", "--overwrite")  # fmt: skip
        _ok("prepare", f"{base.root}/d/study.toml", "--out", f"{tmp_path}/p")
    finally:
        os.umask(old)
    assert (tmp_path / "m.tif").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "p" / "stack.tif").stat().st_mode & 0o777 == 0o666 & ~umask


def test_overwrite_replaces_what_gkdcn_wrote(base: Base, tmp_path: Path) -> None:
    _ok("prepare", f"{base.root}/d/study.toml", "--out", f"{tmp_path}/p")
    assert (tmp_path / "p" / ".gkdcn-output").read_text().startswith("written by gkdcn prepare")
    _ok("prepare", f"{base.root}/d/study.toml", "--out", f"{tmp_path}/p", "--overwrite")
    (tmp_path / "empty").mkdir()
    _ok("prepare", f"{base.root}/d/study.toml", "--out", f"{tmp_path}/empty", "--overwrite")
    assert (tmp_path / "empty" / "stack.tif").is_file()


def test_a_model_picks_its_layers_from_a_larger_grid_with_a_note(
    base: Base, tmp_path: Path
) -> None:
    bundle = ModelBundle.load(base.root / "model.pt")
    keep = bundle.channels[:-1]
    spec = ModelSpec(kind="cnn", in_channels=len(keep), window=9, width=4)
    values = np.random.default_rng(1).lognormal(size=(500, len(keep)))
    small = ModelBundle(
        spec,
        build_network(spec).state_dict(),
        keep,
        ChannelTransform.fit(values, "log", "standard"),
    )
    small.save(tmp_path / "small.pt")
    out = _ok("predict", f"{tmp_path}/small.pt", f"{base.root}/d/study.toml", "--out",
              f"{tmp_path}/m.tif")  # fmt: skip
    assert f"note: {base.root}/d/elements: the model uses {len(keep)} of the layers" in out
    assert f"1 unused: {bundle.channels[-1]}" in out


def test_explain_follows_the_same_channel_rule(base: Base, tmp_path: Path) -> None:
    bundle = ModelBundle.load(base.root / "model.pt")
    keep = bundle.channels[1:]
    spec = ModelSpec(kind="cnn", in_channels=len(keep), window=9, width=4)
    values = np.random.default_rng(2).lognormal(size=(500, len(keep)))
    small = ModelBundle(
        spec,
        build_network(spec).state_dict(),
        keep,
        ChannelTransform.fit(values, "log", "standard"),
    )
    small.save(tmp_path / "small.pt")
    out = _ok("explain", f"{tmp_path}/small.pt", f"{base.root}/d/study.toml", "--out",
              f"{tmp_path}/x", "--no-maps", "--top-k", "1")  # fmt: skip
    assert f"1 unused: {bundle.channels[0]}" in out


def test_train_says_it_fits_one_fold_of_lodo(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gkdcn.training.study

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the note is what matters, not the training

    monkeypatch.setattr(gkdcn.training.study, "train_study", stop)
    argv = ["train", f"{base.root}/d/study.toml", "-m", "cnn", "--out", f"{tmp_path}/t"]
    result = runner.invoke(app, [*argv, "--split", "lodo"])
    assert result.exit_code == 130
    text = " ".join(result.output.split())
    assert f"note: the lodo split has {SPEC.n_deposits} folds; train fits the first" in text
    assert not (tmp_path / "t").exists()


def test_values_far_outside_the_training_range_warn_by_layer(base: Base, tmp_path: Path) -> None:
    import rasterio

    shutil.copytree(base.root / "d", tmp_path / "d")
    layer = tmp_path / "d" / "elements" / "Au.tif"
    with rasterio.open(layer, "r+") as ds:
        data = ds.read(1)
        ds.write(np.where(data == ds.nodata, data, data * 1e30), 1)
    out = _ok("predict", f"{base.root}/model.pt", f"{tmp_path}/d/study.toml", "--out",
              f"{tmp_path}/m.tif")  # fmt: skip
    assert "warning: layer 'Au': values reach" in out
    assert "layer 'Cu'" not in out


def test_bootstrap_zero_and_a_single_deposit_give_no_interval(base: Base, tmp_path: Path) -> None:
    out = _ok("evaluate", f"{base.root}/map.tif", f"{base.root}/d/study.toml", "--out",
              f"{tmp_path}/e0", "--bootstrap", "0")  # fmt: skip
    assert "(no CI)" in out
    lines = (base.root / "d" / "deposits.csv").read_text().splitlines()
    (tmp_path / "one.csv").write_text("\n".join(lines[:2]) + "\n")
    out = _ok("evaluate", f"{base.root}/map.tif", f"{tmp_path}/one.csv", "--out", f"{tmp_path}/e1")
    assert "only one deposit: no bootstrap confidence interval" in out and "(no CI)" in out
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["auc_ci"] == [None, None]


def test_a_csv_with_a_byte_order_mark_is_read(base: Base, tmp_path: Path) -> None:
    shutil.copytree(base.root / "d", tmp_path / "d")
    csv_path = tmp_path / "d" / "deposits.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # Excel's "CSV UTF-8"
    out = _ok("prepare", f"{tmp_path}/d/study.toml")
    assert f"{SPEC.n_deposits} deposits" in out


def test_interrupt_message_belongs_to_the_command(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gkdcn.predict

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gkdcn.predict, "predict_to_file", interrupted)
    argv = ["predict", f"{base.root}/model.pt", f"{base.root}/d/study.toml", "--out", "m.tif"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 130
    assert "interrupted" in result.output and "comparison" not in result.output
    assert "no partial output was kept" in result.output


def test_a_failed_model_write_names_the_file_and_leaves_no_folder(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gkdcn.errors import InputError

    def disk_full(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed")

    bundle = ModelBundle.load(base.root / "model.pt")
    monkeypatch.setattr(torch, "save", disk_full)
    target = tmp_path / "new" / "deeper" / "model.pt"
    with pytest.raises(InputError, match="cannot write the model file") as info:
        bundle.save(target)
    assert str(info.value).startswith(str(target))
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor the new folders


# ---- the rules behind the round-two cases, checked on every field and option


def _int_fields(model: type, prefix: str = "") -> list[tuple[str, object]]:
    """``(key, FieldInfo)`` of every integer field of a config section, nested sections too."""
    import typing

    from pydantic import BaseModel

    found: list[tuple[str, object]] = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        args = typing.get_args(info.annotation) or (info.annotation,)
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += _int_fields(arg, f"{prefix}{name}.")
        if int in args and bool not in args:
            found.append((f"{prefix}{name}", info))
    return found


def test_every_integer_the_config_sets_has_an_upper_bound() -> None:
    import annotated_types

    from gkdcn.config import StudyConfig

    fields = _int_fields(StudyConfig)
    assert "train.epochs" in dict(fields) and "samples.shift" in dict(fields)
    unbounded = [
        key
        for key, info in fields
        if not any(
            isinstance(m, annotated_types.Le | annotated_types.Lt)
            for m in info.metadata  # type: ignore[attr-defined]
        )
    ]
    assert unbounded == []


# Integer options whose value is checked by the config schema or the synthetic spec instead.
_SCHEMA_CHECKED = {
    ("synth", "height"), ("synth", "width"), ("synth", "layers"), ("synth", "deposits"),
    ("synth", "systems"), ("train", "epochs"), ("compare", "epochs"), ("ablation", "epochs"),
    ("ablation", "width"), ("ablation", "background"), ("predict", "mc_dropout"),
    ("evaluate", "bootstrap"),
}  # fmt: skip


def test_every_integer_option_has_an_upper_bound() -> None:
    import typing

    import typer.main

    group = typer.main.get_command(app)
    commands = {"": group, **group.commands}  # type: ignore[attr-defined]
    unbounded = []
    for name, command in commands.items():
        for param in command.params:
            annotation = param.type_descriptor.annotation
            if int not in (annotation, *typing.get_args(annotation)):
                continue
            if (name, param.name) not in _SCHEMA_CHECKED and param.max is None:
                unbounded.append(f"{name} --{param.name}")
    assert ("train", "seeds") not in _SCHEMA_CHECKED and unbounded == []


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_synth_and_prepare_vector_outputs_follow_the_umask(
    umask: int, base: Base, tmp_path: Path
) -> None:
    old = os.umask(umask)
    try:
        _ok("synth", f"{tmp_path}/s", "--height", "32", "--width", "32", "--deposits", "2")
        _ok("prepare", f"{base.root}/d/study.toml", "--out", f"{tmp_path}/p")
    finally:
        os.umask(old)
    for path in (tmp_path / "s" / "faults.gpkg", tmp_path / "p" / "faults.gpkg"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_trained_model_records_its_grid_and_old_files_still_map(
    base: Base, tmp_path: Path
) -> None:
    _ok("train", f"{base.root}/d/study.toml", "-m", "cnn", "--epochs", "1", "--out",
        f"{tmp_path}/t")  # fmt: skip
    bundle = ModelBundle.load(tmp_path / "t" / "model.pt")
    assert bundle.cell_size == (1000.0, 1000.0) and bundle.georeferenced is True
    _ok("predict", f"{tmp_path}/t/model.pt", f"{base.root}/d/study.toml", "--out",
        f"{tmp_path}/new.tif")  # fmt: skip
    old = ModelBundle.load(base.root / "model.pt")  # written without the record
    assert old.cell_size is None and old.georeferenced is None
    _ok("predict", f"{base.root}/model.pt", f"{base.root}/d/study.toml", "--out",
        f"{tmp_path}/old.tif")  # fmt: skip


def test_an_old_model_file_on_ungeoreferenced_layers_maps_with_a_warning(
    base: Base, tmp_path: Path
) -> None:
    _ungeoreferenced_copy(base.root / "d" / "elements", tmp_path / "plain")
    out = _ok("predict", f"{base.root}/model.pt", f"{tmp_path}/plain", "--out", f"{tmp_path}/m.tif")
    assert f"warning: {tmp_path}/plain: the layers have no georeferencing" in out
    assert (tmp_path / "m.tif").is_file()


def test_no_raster_of_nodata_only_is_written(base: Base, tmp_path: Path) -> None:
    from gkdcn.errors import InputError
    from gkdcn.io.grid import Grid
    from gkdcn.io.rasters import grid_of, write_probability_map

    grid: Grid = grid_of(base.root / "map.tif")
    empty = np.full(grid.shape, np.nan, np.float32)
    with pytest.raises(InputError, match="no valid cell") as info:
        write_probability_map(tmp_path / "m.tif", empty, grid)
    assert str(info.value).startswith(str(tmp_path / "m.tif"))
    assert list(tmp_path.iterdir()) == []
    empty[3, 4] = 0.5  # one cell is a map
    write_probability_map(tmp_path / "m.tif", empty, grid)


def test_usage_help_still_shows() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "error:" not in result.output
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--epochs" in result.output


# ==== gkdcn grid on point samples (data.gridding): grids with no valid cell, sentinels, censoring
# (kept in one block: other cases are added above it)


# The catalogue's test is parametrized where it is defined, so these cases have their own list
# and test (the same check).
GRID_CASES: list[tuple[str, Setup]] = []


def grid_case(name: str) -> Callable[[Setup], Setup]:
    def register(func: Setup) -> Setup:
        GRID_CASES.append((name, func))
        return func

    return register


def _grid_samples_csv(work: Path, values: list[object] | None = None) -> Path:
    """A small survey CSV over the district, in its CRS; ``values`` for an ``Au`` column."""
    from gkdcn.io.rasters import grid_of

    left, bottom, right, top = grid_of(work / "d" / "elements" / "Au.tif").bounds
    rng = np.random.default_rng(11)
    n = 60 if values is None else len(values)
    lines = ["x,y,Au,Cu"]
    for i in range(n):
        x, y = rng.uniform(left, right), rng.uniform(bottom, top)
        au = values[i] if values is not None else f"{rng.lognormal(0, 1):.4g}"
        lines.append(f"{x:.1f},{y:.1f},{au},{rng.lognormal(3, 0.3):.4g}")
    path = work / "samples.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@grid_case("grid-max-distance-below-the-cell")
def _(w: Path) -> tuple[list[str], str, str]:
    path = _grid_samples_csv(w)
    argv = ["grid", str(path), "--out", f"{w}/el", "--crs", SPEC_CRS, "--max-distance", "1"]
    return argv, str(path), "--max-distance 1 is less than half the cell size"


@grid_case("grid-cell-too-small-for-the-extent")
def _(w: Path) -> tuple[list[str], str, str]:
    path = _grid_samples_csv(w)
    argv = ["grid", str(path), "--out", f"{w}/el", "--crs", SPEC_CRS, "--cell", "1"]
    return argv, str(path), "too large; give a larger --cell"


@grid_case("grid-like-a-raster-far-from-the-samples")
def _(w: Path) -> tuple[list[str], str, str]:
    from affine import Affine

    path = _grid_samples_csv(w)
    far = w / "far.tif"
    transform = Affine(1000.0, 0.0, -8_000_000.0, 0.0, -1000.0, 6_000_000.0)
    with rasterio_open_for_write(far, transform) as ds:
        ds.write(np.zeros((1, 16, 16), np.float32))
    argv = ["grid", str(path), "--out", f"{w}/el", "--crs", SPEC_CRS, "--like", str(far)]
    return argv, str(far), "no cell of its grid lies within"


@grid_case("grid-like-raster-inside-the-out-folder")
def _(w: Path) -> tuple[list[str], str, str]:
    path = _grid_samples_csv(w)
    out = f"{w}/d/elements"
    argv = ["grid", str(path), "--out", out, "--like", f"{out}/Au.tif", "--overwrite"]
    return [*argv, "--crs", SPEC_CRS], out, "input"


@grid_case("grid-only-column-all-below-detection")
def _(w: Path) -> tuple[list[str], str, str]:
    path = _grid_samples_csv(w, ["<0.5"] * 30)
    argv = ["grid", str(path), "--out", f"{w}/el", "--crs", SPEC_CRS, "--columns", "Au"]
    return argv, str(path), "no column has detected values to grid"


@pytest.mark.parametrize(("name", "setup"), GRID_CASES, ids=[name for name, _ in GRID_CASES])
def test_grid_bad_input_is_one_line_and_changes_nothing(
    name: str, setup: Setup, base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    shutil.copytree(base.root, work)
    monkeypatch.chdir(tmp_path)
    _check_refused(tmp_path, *setup(work))


def rasterio_open_for_write(path: Path, transform: object):  # type: ignore[no-untyped-def]
    """A 16 x 16 float32 GeoTIFF in Web Mercator (a CRS and place far from the district)."""
    import rasterio

    return rasterio.open(
        path, "w", driver="GTiff", height=16, width=16, count=1, dtype="float32",
        crs="EPSG:3857", transform=transform,
    )  # fmt: skip


def test_grid_reads_a_repeated_large_negative_as_no_value_with_a_warning(
    base: Base, tmp_path: Path
) -> None:
    import rasterio

    shutil.copytree(base.root / "d", tmp_path / "d")
    rng = np.random.default_rng(12)
    values: list[object] = [f"{v:.4g}" for v in rng.lognormal(0, 0.5, 80)]
    values[::8] = ["-9999"] * len(values[::8])
    path = _grid_samples_csv(tmp_path, values)
    result = runner.invoke(
        app, ["grid", str(path), "--out", f"{tmp_path}/el", "--crs", SPEC_CRS]
    )  # no --nodata
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning:" in text and "Au 10 (-9999)" in text
    with rasterio.open(tmp_path / "el" / "Au.tif") as ds:
        au = ds.read(1, masked=True)
    assert au.max() < 100  # not 4999.5 "below detection limit 9999"


def test_grid_notes_an_all_censored_column_beside_others(base: Base, tmp_path: Path) -> None:
    shutil.copytree(base.root / "d", tmp_path / "d")
    path = _grid_samples_csv(tmp_path, ["<0.5"] * 40)
    result = runner.invoke(app, ["grid", str(path), "--out", f"{tmp_path}/el", "--crs", SPEC_CRS])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning:" in text and "every value below detection, not gridded" in text
    assert sorted(p.name for p in (tmp_path / "el").glob("*.tif")) == ["Cu.tif"]
