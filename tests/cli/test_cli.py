"""The command line end to end on a small synthetic district, and its one-line errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tomli_w
from typer.testing import CliRunner

import gkdcn.compare
from gkdcn.cli import app
from gkdcn.errors import Terminated
from helpers import write_tiny_study

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, ["--threads", "1", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "district"
    _run("synth", str(root), "--height", "40", "--width", "48", "--layers", "6", "--deposits", "5")
    return root


def test_synth_prepare_train_predict_evaluate_explain(district: Path, tmp_path: Path) -> None:
    config = district / "study.toml"
    summary = _run("prepare", str(config), "--out", str(tmp_path / "prepared"))
    assert "5 deposits" in summary
    assert json.loads((tmp_path / "prepared" / "metadata.json").read_text())["names"]

    out = _run(
        "train", str(tmp_path / "prepared"), "-m", "gk-dcn", "--out", str(tmp_path / "model"),
        "--epochs", "2",
    )  # fmt: skip
    assert "wrote model" in out
    model = tmp_path / "model" / "model.pt"

    _run("predict", str(model), str(config), "--out", str(tmp_path / "map.tif"), "--device", "cpu")
    with (
        rasterio.open(tmp_path / "map.tif") as src,
        rasterio.open(district / "elements" / "Au.tif") as ref,
    ):
        assert (src.width, src.height, src.transform, src.crs) == (
            ref.width, ref.height, ref.transform, ref.crs,
        )  # fmt: skip
        prob = src.read(1, masked=True)
        assert prob.min() >= 0 and prob.max() <= 1
        assert prob.count() == int((ref.read(1) != ref.nodata).sum())

    _run("evaluate", str(tmp_path / "map.tif"), str(config), "--out", str(tmp_path / "eval"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["auc"] <= 1

    _run(
        "explain", str(model), str(config), "--out", str(tmp_path / "explain"), "--no-maps",
        "--top-k", "1",
    )  # fmt: skip
    index = json.loads((tmp_path / "explain" / "index.json").read_text())
    assert any("sampling" in str(entry) for entry in json.dumps(index).split(","))
    # what the report needs to redo it, wherever the report is built from
    assert index["model_file"] == str(model.resolve())
    assert index["settings"]["top_k"] == 1 and index["settings"]["map_outputs"] is False


def test_train_seeds_writes_one_file_whose_members_are_the_single_seeds(
    district: Path, tmp_path: Path
) -> None:
    from gkdcn.models.bundle import ModelBundle

    config = str(district / "study.toml")
    common = ["-m", "cnn", "--epochs", "1"]
    out = _run("train", config, *common, "--seed", "3", "--seeds", "2", "--out", f"{tmp_path}/e")
    assert "2 members (seeds 3-4)" in out
    ensemble = ModelBundle.load(tmp_path / "e" / "model.pt")
    assert [m.train_config["seed"] for m in ensemble.members] == [3, 4]
    for member, seed in zip(ensemble.members, (3, 4), strict=True):
        _run("train", config, *common, "--seed", str(seed), "--out", f"{tmp_path}/s{seed}")
        single = ModelBundle.load(tmp_path / f"s{seed}" / "model.pt")
        for name, value in single.state.items():
            assert bool((member.state[name] == value).all()), name
    note = runner.invoke(
        app,
        ["explain", str(tmp_path / "e" / "model.pt"), config, "--out", f"{tmp_path}/x",
         "--no-maps", "--top-k", "1", "--sites", "deposits"],
    )  # fmt: skip
    assert note.exit_code == 0, note.output
    assert "explain shows the first" in note.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "missing.toml"], "missing.toml: config file not found"),
        (["train", "missing.toml", "-m", "resnet", "--out", "x"], "--model must be one of"),
        (["predict", "nope.pt", "missing.toml", "--out", "m.tif"], "nope.pt: model file not found"),
        (["report", "."], "run.json"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert message in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_never_replaced(district: Path, tmp_path: Path) -> None:
    target = tmp_path / "district"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["synth", str(target)])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert (target / "keep.txt").read_text() == "mine"


def test_a_bad_synth_option_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path / "d"), "--height", "0"])
    assert result.exit_code == 2
    assert "error:" in result.output and "'height'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_index_alignment_is_reported_as_a_warning(tmp_path: Path) -> None:
    from rasterio.transform import from_origin

    from helpers import write_raster, write_tiny_study

    root = tmp_path / "study"
    write_tiny_study(root)
    shifted = from_origin(400000.0, 5200000.0, 1000.0, 1000.0)
    labels = np.zeros((20, 24), dtype=np.uint8)
    labels[4, 5] = labels[6, 15] = 1
    write_raster(root / "shifted.tif", labels, transform=shifted, nodata=255)
    config = root / "study.toml"
    config.write_text(
        'align = "index"\n[elements]\npath = "elements"\n'
        '[sites.deposits]\nraster = "shifted.tif"\nvalue = 1\n'
    )
    result = runner.invoke(app, ["prepare", str(config)])
    assert result.exit_code == 0, result.output
    assert "header ignored" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("compare", 'pip install "gkdcn[cluster]"'),
        ("compare", "the config's [train] precision"),
        ("predict", "the config's [predict]"),
        ("ablation", "the config's [knowledge]"),
    ],
)
def test_help_shows_brackets_as_written(command: str, shown: str) -> None:
    # Rich takes "[train]" for a style tag and drops it unless the help text escapes it.
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())


def test_paths_with_brackets_are_printed_as_written(tmp_path: Path) -> None:
    root = tmp_path / "survey [2024]"
    out = _run(
        "synth", str(root), "--height", "32", "--width", "32", "--layers", "5", "--deposits", "3"
    )
    assert f"wrote synthetic district to {root}" in " ".join(out.split())
    missing = root / "[old] model.pt"
    result = runner.invoke(app, ["predict", str(missing), str(root / "study.toml"), "--out", "m"])
    assert result.exit_code == 2
    assert f"{missing}: model file not found" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        (Terminated(signal.SIGTERM), 128 + signal.SIGTERM, "terminated"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_a_stopped_comparison_says_what_was_kept(
    stop: BaseException, status: int, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM while the workers run (gkdcn.runner raises Terminated) says what Ctrl-C says, with
    # the shell's status for each; before, SIGTERM ended with 143 and said nothing.
    root = tmp_path / "study"
    config = root / "study.toml"
    config.write_text(tomli_w.dumps(write_tiny_study(root)))

    def stopped(*args: object, **kwargs: object) -> None:
        raise stop

    monkeypatch.setattr(gkdcn.compare, "run_comparison", stopped)
    result = runner.invoke(app, ["compare", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == status
    assert f"{line}; finished jobs are kept and the comparison resumes" in result.output
