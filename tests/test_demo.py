"""``gkdcn demo`` end to end on a small district: every stage runs, and what the report says is what
the stages computed (maps on the district's grid, evaluations that match their maps, the
comparison's numbers in the report, every figure a decodable embedded PNG)."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from gkdcn.data.synthetic import SyntheticSpec
from gkdcn.demo import run_demo
from gkdcn.errors import GkdcnError, OutputExistsError
from gkdcn.evaluate import evaluate_map
from gkdcn.io.rasters import read_probability_map
from gkdcn.models import registry
from gkdcn.report import fmt_number

NETWORK_KINDS = registry.names("network")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPEC = SyntheticSpec(height=40, width=48, n_layers=6, n_deposits=4, n_faults=2, seed=3)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    # two trainings at once: the demo also runs the worker-process path
    run_demo(out, spec=SPEC, seeds=2, epochs=1, map_ig_steps=1, workers=2, log=lambda _: None)
    return out


def test_demo_maps_are_on_the_district_grid(demo_dir: Path) -> None:
    element = next(iter(sorted((demo_dir / "district").rglob("*.tif"))))
    with rasterio.open(element) as src:
        shape, transform, crs = (src.height, src.width), src.transform, src.crs
    for model in NETWORK_KINDS:
        with rasterio.open(demo_dir / "maps" / f"{model}.tif") as src:
            assert (src.height, src.width) == shape == (SPEC.height, SPEC.width)
            assert src.transform == transform and src.crs == crs
        prob, valid, _ = read_probability_map(demo_dir / "maps" / f"{model}.tif")
        assert valid.any() and not valid.all()  # the district has nodata holes
        assert np.all((prob[valid] >= 0) & (prob[valid] <= 1))


def test_demo_evaluations_are_those_of_their_maps(demo_dir: Path) -> None:
    sites = pd.read_csv(demo_dir / "prepared" / "sites.csv")
    deposits = sites[sites.label == 1]
    assert len(deposits) == SPEC.n_deposits
    for model in NETWORK_KINDS:
        prob, valid, _ = read_probability_map(demo_dir / "maps" / f"{model}.tif")
        again = evaluate_map(
            prob, valid, deposits.row.to_numpy(), deposits.col.to_numpy(), n_boot=0
        )
        stored = json.loads((demo_dir / "evaluation" / model / "metrics.json").read_text())
        assert stored["auc"] == pytest.approx(again.to_dict()["auc"], abs=1e-12)


def test_demo_report_carries_the_comparison(demo_dir: Path) -> None:
    html = (demo_dir / "report.html").read_text()
    summary = json.loads((demo_dir / "comparison" / "summary.json").read_text())
    assert set(summary["protocols"]) == {"authors", "lodo"}
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    for protocol in summary["protocols"].values():
        assert protocol["title"] in text
        for row in protocol["summary"]:
            assert fmt_number(row["auc_mean"]) in text
    assert not re.search(r'(src|href)="(https?:)?//', html.replace('href="https://doi.org', ""))
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(images) >= 8
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def test_demo_explains_gk_dcn_at_every_deposit(demo_dir: Path) -> None:
    folder = demo_dir / "comparison" / "explain" / "gk-dcn"
    index = json.loads((folder / "index.json").read_text())
    assert index["model"]["kind"] == "gk-dcn" and index["element"] == "Au"
    deposits = [site for site in index["sites"] if site["label"] == "deposit"]
    assert len(deposits) == SPEC.n_deposits
    for site in deposits:
        assert any(f.startswith("gradcam/") for f in site["files"])
        assert any(f.startswith("sampling/") for f in site["files"])
    for entry in index["files"]:
        path = folder / entry["path"]
        assert path.stat().st_size > 0, entry
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path: Path, demo_dir: Path) -> None:
    with pytest.raises(OutputExistsError):
        run_demo(demo_dir, spec=SPEC, log=lambda _: None)
    foreign = tmp_path / "mine"
    (foreign / "keep.txt").parent.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(GkdcnError, match="did not write"):
        run_demo(foreign, overwrite=True, spec=SPEC, log=lambda _: None)
    assert (foreign / "keep.txt").read_text() == "user data"
