"""The report says what the data are, which layer a one-layer baseline chose, and how the maps
open in QGIS (the area classes' thresholds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gkdcn.compare import make_plan, run_comparison
from gkdcn.config import load_config
from gkdcn.data.study import load_study
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.report import build_report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("words")
    config = load_config(
        generate_district(root / "d", SyntheticSpec(height=40, width=40, n_layers=5, seed=2))
    )
    plan = make_plan(
        config, seeds=1, models=["element", "knowledge"], protocols=["authors", "lodo"]
    )
    run_comparison(load_study(config), root / "run", plan)
    return root / "run"


def test_the_layers_a_one_layer_baseline_chose_are_counted(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    chosen = summary["protocols"]["lodo"]["chosen_layers"]
    assert list(chosen) == ["element"]  # the knowledge baseline has no layer to choose
    folds = len(list((run / "lodo" / "element" / "seed0").glob("*/result.json")))
    assert sum(chosen["element"].values()) == folds
    recorded = {
        json.loads(p.read_text())["layer"]
        for p in (run / "lodo" / "element" / "seed0").glob("*/result.json")
    }
    assert set(chosen["element"]) == recorded


def test_the_report_names_the_layers_the_chosen_layer_and_the_area_classes(run: Path) -> None:
    html = build_report(run).read_text()
    assert "stream-sediment or" not in html
    assert "5 layers: " in html
    assert "Layers chosen on each fold&#39;s training deposits" in html or (
        "Layers chosen on each fold's training deposits" in html
    )
    assert "opens in QGIS in area classes (top 1 % &gt;= " in html or (
        "opens in QGIS in area classes (top 1 % >= " in html
    )
