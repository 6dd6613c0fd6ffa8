"""``gkdcn init``: a study guessed from a folder, and the path from point samples to ``compare``."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gkdcn.config import load_config
from gkdcn.data.discover import discover, render_toml, write_study
from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL
from gkdcn.data.study import build_samples, load_study
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.errors import InputError, OutputExistsError
from helpers import run_cli


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init") / "district"
    generate_district(root, SyntheticSpec(height=32, width=40, n_layers=6, n_deposits=5, seed=1))
    return root


def _inputs(path: Path) -> dict[str, object]:
    cfg = load_config(path)
    return {
        "elements": (
            cfg.resolve(cfg.elements.path).resolve(),
            cfg.elements.layers,
            cfg.elements.exclude,
        ),
        "deposits": cfg.sites.deposits.model_dump()
        | {"points": cfg.resolve(cfg.sites.deposits.points).resolve()},  # type: ignore[union-attr]
        "non_deposits": cfg.sites.non_deposits,
        "faults": cfg.resolve(cfg.knowledge.faults).resolve() if cfg.knowledge.faults else None,
        "weights": cfg.knowledge.weights,
        "transform": cfg.transform,
        "align": cfg.align,
    }


def test_init_on_a_synth_folder_equals_its_own_study(district: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(district, folder)
    (folder / "study.toml").rename(folder / "original.toml")
    code, out = run_cli("init", str(folder))
    assert code == 0, out
    for said in ("elements/", "deposits.csv", "faults.gpkg", "EPSG:32645"):
        assert said in out
    text = (folder / "study.toml").read_text()
    assert "# guessed: deposits.csv" in text and "# guessed: faults.gpkg" in text
    assert _inputs(folder / "study.toml") == _inputs(folder / "original.toml")
    # prepare accepts it: the same sites and layers as the synth's own config.
    ours = load_study(load_config(folder / "study.toml"))
    theirs = load_study(load_config(folder / "original.toml"))
    # The same layers, plus the knowledge channel init recommends (as_channel = true).
    assert ours.names == [*theirs.names, KNOWLEDGE_CHANNEL]
    np.testing.assert_array_equal(ours.raw[: len(theirs.names)], theirs.raw)
    assert list(ours.sites.ids) == list(theirs.sites.ids)
    # The weight comes from the same faults; its decay is derived (tested below).
    assert ours.knowledge.shape == theirs.knowledge.shape
    fault_cells = ours.knowledge == 1
    assert fault_cells.any() and np.all(theirs.knowledge[fault_cells] == 1)
    samples, _ = build_samples(ours)
    assert len(samples) > 0
    # Nothing is overwritten without --overwrite.
    before = (folder / "study.toml").read_text()
    code, out = run_cli("init", str(folder))
    assert code == 2 and "--overwrite" in out
    assert (folder / "study.toml").read_text() == before
    code, out = run_cli("init", str(folder), "--overwrite")
    assert code == 0, out


def test_written_toml_round_trips(district: Path, tmp_path: Path) -> None:
    found = discover(district)
    text = render_toml(found)
    assert tomllib.loads(text)["elements"] == {"path": "elements"}
    with pytest.raises(OutputExistsError):
        write_study(found)  # the synth's own study.toml is there
    target = write_study(found, district / "guessed.toml")
    assert load_config(target).sites.deposits.points == Path("deposits.csv")  # type: ignore[union-attr]


def test_init_guesses_rasters_labels_and_other_grids(tmp_path: Path) -> None:
    from affine import Affine

    from helpers import write_raster

    folder = tmp_path / "survey"
    for name in ("Cu", "Au", "Zn"):
        write_raster(folder / "geochem" / f"{name}.tif", np.ones((10, 12), np.float32))
    # On another grid: excluded by name, and said so.
    write_raster(
        folder / "geochem" / "Ni.tif", np.ones((10, 12), np.float32),
        transform=Affine(500.0, 0, 0, 0, -500.0, 0),
    )  # fmt: skip
    labels = np.zeros((10, 12), np.uint8)
    labels[3, 4] = 1
    write_raster(folder / "label" / "Au_deposits.tif", labels)
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    found = discover(folder)
    assert found.config["elements"] == {"path": "geochem", "exclude": ["Ni"]}
    assert found.config["sites"]["deposits"] == {"raster": "label/Au_deposits.tif", "value": 1}
    assert "knowledge" not in found.config
    assert any("no fault file" in line for line in found.comments["knowledge"])
    path = write_study(found)
    assert load_config(path).elements.exclude == ["Ni"]


def test_init_errors(tmp_path: Path) -> None:
    (tmp_path / "samples.csv").write_text("x,y,Au,As,Cu,Zn\n0,0,1,2,3,4\n1,1,1,2,3,4\n")
    with pytest.raises(InputError, match=r"gkdcn grid samples\.csv"):
        discover(tmp_path)
    code, out = run_cli("init", str(tmp_path / "missing"))
    assert code == 2 and "not a folder" in out


@pytest.mark.slow
def test_from_point_samples_to_compare(tmp_path: Path) -> None:
    """A user with only samples, deposits and faults reaches `compare` with no hand-written config."""
    code, out = run_cli(
        "synth", str(tmp_path / "district"), "--height", "32", "--width", "40", "--layers", "5",
        "--deposits", "5", "--samples", "1200",
    )  # fmt: skip
    assert code == 0, out
    user = tmp_path / "survey"
    user.mkdir()
    for name in ("samples.csv", "deposits.csv", "faults.gpkg"):
        shutil.copy(tmp_path / "district" / name, user / name)
    code, out = run_cli(
        "grid", str(user / "samples.csv"), "--out", str(user / "elements"), "--crs", "EPSG:32645",
        "--cell", "1000", "--nodata", "-9999",
    )  # fmt: skip
    assert code == 0, out
    assert "below detection" in out and "exact duplicate" in out
    code, out = run_cli("init", str(user))
    assert code == 0, out
    assert "gridded from point samples" in (user / "study.toml").read_text()
    code, out = run_cli("prepare", str(user / "study.toml"))
    assert code == 0, out
    assert "5 deposits" in out
    code, out = run_cli(
        "compare", str(user / "study.toml"), "--out", str(tmp_path / "run"), "--quick",
        "--seeds", "1", "--models", "cnn,gk-cnn", "--protocols", "authors", "--jobs", "1",
    )  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "run" / "summary.json").exists()


TIANSHAN = Path(__file__).parents[3] / "shared/data/tianshan"


@pytest.mark.skipif(not TIANSHAN.exists(), reason="Tianshan release not next to the repository")
def test_init_guesses_the_tianshan_release_like_the_example_config() -> None:
    found = discover(TIANSHAN)
    example = tomllib.loads((Path(__file__).parents[2] / "examples/tianshan.toml").read_text())
    for key in ("elements",):
        assert found.config[key] == example[key]
    assert found.config["sites"]["deposits"] == example["sites"]["deposits"]
    assert found.config["sites"]["non_deposits"] == example["sites"]["non_deposits"]
    assert found.config["knowledge"]["weights"] == example["knowledge"]["weights"]
    # The release's label rasters sit on other grids: the file says so and how to proceed.
    assert any('align = "resample"' in line for line in found.comments["sites.deposits"])


def test_init_names_poorly_gridded_elements(district: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(district, folder)
    (folder / "study.toml").unlink()
    (folder / "elements" / "cross_validation.csv").write_text(
        "element,samples,space,cv_rmse,cv_mae,cv_r,cv_r2\nAu,90,log10,0.4,0.3,0.4,0.16\n"
        "Cu,90,log10,0.1,0.1,0.9,0.81\n"
    )
    found = discover(folder)
    assert any("mapped poorly (R² < 0.5): Au 0.16" in c for c in found.comments["elements"])
    assert load_config(write_study(found)).elements.path == Path("elements")


def test_init_derives_decay_split_and_channel_from_the_data(tmp_path: Path) -> None:
    from gkdcn.data.knowledge import distance_to_lines
    from gkdcn.io.vectors import read_lines

    folder = tmp_path / "derived"
    spec = SyntheticSpec(height=60, width=60, n_layers=5, n_deposits=12, seed=2)
    generate_district(folder, spec)
    (folder / "study.toml").unlink()
    code, out = run_cli("init", str(folder))
    assert code == 0, out
    cfg = load_config(folder / "study.toml")
    study = load_study(cfg)
    cell = min(study.grid.cell_size)
    distance = distance_to_lines(read_lines(folder / "faults.gpkg", study.grid.crs), study.grid)
    assert cfg.knowledge.decay.kind == "exponential"
    assert cfg.knowledge.decay.scale == pytest.approx(float(np.median(distance)), rel=1e-3)
    assert cfg.knowledge.as_channel
    assert cfg.split.exclusion_radius == 4 * cell  # half the 9-cell window footprint
    size = cfg.split.block_size
    blocks = {
        (int(r * cell // size), int(c * cell // size))
        for r, c in zip(study.sites.rows[study.sites.labels == 1],
                        study.sites.cols[study.sites.labels == 1], strict=True)
    }  # fmt: skip
    assert len(blocks) >= 5
    text = (folder / "study.toml").read_text()
    assert "median distance of a cell to the nearest fault" in text
    assert "half the 9-cell window footprint" in text


def test_init_reads_degree_coordinates_as_lon_lat(district: Path, tmp_path: Path) -> None:
    from rasterio.warp import transform

    folder = tmp_path / "degrees"
    shutil.copytree(district, folder)
    (folder / "study.toml").unlink()
    table = pd.read_csv(folder / "deposits.csv")
    lon, lat = transform("EPSG:32645", "EPSG:4326", table["x"], table["y"])
    table["x"], table["y"] = lon, lat  # degrees under column names that do not say so
    table.to_csv(folder / "deposits.csv", index=False)
    code, out = run_cli("init", str(folder))
    assert code == 0, out
    cfg = load_config(folder / "study.toml")
    assert cfg.sites.deposits.crs == "EPSG:4326"
    assert "hold degrees" in (folder / "study.toml").read_text()
    original = load_study(load_config(district / "study.toml"))
    assert list(load_study(cfg).sites.ids) == list(original.sites.ids)


def test_init_on_a_flat_folder_of_grids_on_two_grids(tmp_path: Path) -> None:
    """Element grids, coordinate grids, a finer deposit raster and a fault raster in one folder
    (as some published data sets come): only the element layers are layers, and align is set so
    no deposit is lost."""
    import rasterio
    from affine import Affine

    folder = tmp_path / "flat"
    folder.mkdir()
    coarse = Affine(4000, 0, 0, 0, -4000, 0)
    fine = Affine(1000, 0, 0, 0, -1000, 0)
    rng = np.random.default_rng(0)

    def write(name: str, data: np.ndarray, transform: Affine) -> None:
        profile = {
            "driver": "GTiff",
            "height": data.shape[0],
            "width": data.shape[1],
            "count": 1,
            "crs": "EPSG:32650",
            "transform": transform,
            "dtype": data.dtype,
        }
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as dst:
            dst.write(data, 1)  # fmt: skip

    for name in ("Idw_Cu", "Idw_Li", "Idw_Y", "Idw_Sn", "Idw_xx", "Idw_yy"):
        write(name, rng.lognormal(size=(30, 30)).astype(np.float32), coarse)
    deposits = np.zeros((120, 120), np.uint8)
    deposits[[10, 11, 50, 90, 100, 30], [10, 11, 70, 20, 100, 110]] = 1
    write("Li_deposits0", deposits, fine)
    write("Faults", (rng.random((120, 120)) > 0.99).astype(np.uint8), fine)
    code, out = run_cli("init", str(folder))
    assert code == 0, out
    cfg = load_config(folder / "study.toml")
    assert cfg.align == "resample"
    study = load_study(cfg)
    assert study.names == ["Idw_Cu", "Idw_Li", "Idw_Sn", "Idw_Y"]  # Y is yttrium: kept
    assert int((study.sites.labels == 1).sum()) == 5  # two fine cells share one coarse cell
