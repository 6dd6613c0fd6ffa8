"""Seed ensembles in a comparison: one held-out background for every seed, the seeds' stored
scores averaged per cell and ranked like one model, and a resume fingerprint that keeps runs
from before apart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gkdcn.compare import make_plan, run_comparison
from gkdcn.compare.heldout import ensemble_shares
from gkdcn.compare.jobs import claim_run_dir, fingerprint
from gkdcn.compare.layout import RunLayout
from gkdcn.data.study import load_study
from gkdcn.errors import GkdcnError
from gkdcn.report import build_report
from helpers import tiny_comparison_config


def _fold(layout: RunLayout, model: str, seed: int, fold: str, deposits, background) -> None:
    path = layout.result("lodo", model, seed, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    bg = np.asarray(background, dtype=float)
    record = {
        "heldout": [
            {
                "site_id": site,
                "probability": p,
                "area_share": float((np.sum(bg > p) + 0.5 * np.sum(bg == p)) / len(bg)),
            }
            for site, p in deposits
        ],
        "heldout_background": {"cells": "same", "probability": bg.tolist()},
    }
    path.write_text(json.dumps(record))


def test_ensemble_ranks_the_mean_of_the_seeds_probabilities(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    # Seed 0 ranks D1 below every background cell, seed 1 above all but one: averaged, the
    # deposit's 0.5 beats cells whose mean is 0.4 and loses to those whose mean is 0.55.
    _fold(layout, "cnn", 0, "D1", [("D1", 0.2)], [0.3, 0.5, 0.6, 0.9])
    _fold(layout, "cnn", 1, "D1", [("D1", 0.8)], [0.5, 0.3, 0.5, 0.9])
    _fold(layout, "cnn", 0, "D2", [("D2", 0.7)], [0.1, 0.2, 0.8, 0.6])
    _fold(layout, "cnn", 1, "D2", [("D2", 0.7)], [0.1, 0.2, 0.8, 0.6])
    shares = ensemble_shares(layout, "lodo", "cnn", [0, 1])
    assert shares is not None
    ensemble, single = shares
    # D1: means of the background 0.4, 0.4, 0.55, 0.9 against 0.5 -> 2 of 4 above.
    np.testing.assert_allclose(ensemble, [0.5, 0.25])
    np.testing.assert_allclose(single, [(1.0 + 0.25) / 2, 0.25])
    # Folds from before the scores were stored, or ranked against other cells: no ensemble.
    record = json.loads(layout.result("lodo", "cnn", 1, "D2").read_text())
    record["heldout_background"]["cells"] = "other"
    layout.result("lodo", "cnn", 1, "D2").write_text(json.dumps(record))
    assert ensemble_shares(layout, "lodo", "cnn", [0, 1]) is None
    del record["heldout_background"]
    layout.result("lodo", "cnn", 1, "D2").write_text(json.dumps(record))
    assert ensemble_shares(layout, "lodo", "cnn", [0, 1]) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("ensemble")
    config = tiny_comparison_config(
        root / "study",
        models=["cnn", "logistic", "knowledge"],
        protocols=["lodo"],
        seeds=2,
        heldout_background=40,
    )
    study = load_study(config)
    out = root / "run"
    comparison = run_comparison(study, out, make_plan(study.config))
    return out, comparison


def test_every_seed_ranks_against_the_same_background_and_stores_its_scores(run) -> None:
    out, _ = run
    layout = RunLayout(out)
    for model in ("cnn", "logistic", "knowledge"):
        first, second = (layout.fold_results("lodo", model, s) for s in (0, 1))
        assert len(first) == len(second) > 0
        for a, b in zip(first, second, strict=True):
            ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
            assert ra["heldout_background"]["cells"] == rb["heldout_background"]["cells"]
            assert len(ra["heldout_background"]["probability"]) == 40
            assert ra["heldout"][0]["n_background"] == 40


def test_ensemble_table_is_computed_from_the_stored_scores(run) -> None:
    out, comparison = run
    table = pd.read_csv(out / "tables" / "lodo_ensemble.csv").set_index("model")
    assert list(table.index) == ["cnn", "logistic", "knowledge"]
    assert (table["seeds"] == 2).all()
    layout = RunLayout(out)
    for model in table.index:
        # By hand: per fold, the two seeds' probabilities averaged, each deposit ranked.
        shares = []
        for a, b in zip(*(layout.fold_results("lodo", model, s) for s in (0, 1)), strict=True):
            ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
            bg = (
                np.array(ra["heldout_background"]["probability"])
                + np.array(rb["heldout_background"]["probability"])
            ) / 2
            for ha, hb in zip(ra["heldout"], rb["heldout"], strict=True):
                p = (float(f"{ha['probability']:.7g}") + float(f"{hb['probability']:.7g}")) / 2
                shares.append((np.sum(bg > p) + 0.5 * np.sum(bg == p)) / len(bg))
        assert table.loc[model, "auc"] == pytest.approx(1 - np.mean(sorted(shares)), abs=1e-9)
        single = comparison.summary["lodo"].set_index("model").loc[model, "auc_mean"]
        assert table.loc[model, "single_auc"] == pytest.approx(single)
        assert table.loc[model, "auc_difference"] == pytest.approx(
            table.loc[model, "auc"] - single, abs=1e-9
        )
    # The knowledge weight does not depend on the seed: its ensemble is its single map.
    assert table.loc["knowledge", "auc_difference"] == pytest.approx(0.0, abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in summary["protocols"]["lodo"]["ensemble"]] == list(table.index)
    html = build_report(out).read_text(encoding="utf-8")
    assert "Seed ensembles." in html and "lodo_ensemble.csv" in html
    assert "one draw (seed 0) for every seed" in html


def test_runs_that_drew_the_background_per_seed_are_not_resumed(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study", seeds=2, heldout_background=40)
    study = load_study(config)
    plan = make_plan(study.config)
    assert plan.background_seed == plan.seeds[0] == 0
    old_plan = {k: v for k, v in plan.to_dict().items() if k != "heldout_background_seed"}
    blob = json.dumps(
        {"config": study.config.to_toml_dict(), "plan": old_plan}, sort_keys=True, default=str
    )
    old = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert old != fingerprint(study, plan)
    out = tmp_path / "run"
    claim_run_dir(RunLayout(out), study, plan, overwrite=False)
    meta = json.loads((out / "run.json").read_text())
    meta["fingerprint"], meta["plan"] = old, old_plan
    (out / "run.json").write_text(json.dumps(meta))
    finished = out / "lodo" / "cnn" / "seed0" / "D1" / "result.json"  # a job the old run finished
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    with pytest.raises(GkdcnError, match="other settings"):
        claim_run_dir(RunLayout(out), study, plan, overwrite=False)


def test_the_console_prints_the_ensemble_table(run) -> None:
    out, comparison = run
    from gkdcn.console import format_tables

    text = format_tables(comparison, width=240)
    assert "seed ensembles" in text
    table = pd.read_csv(out / "tables" / "lodo_ensemble.csv").set_index("model")
    lines = [line for line in text.splitlines() if line.startswith("│ CNN ")]
    row = lines[-1]  # the ensemble table is the protocol's last
    assert f"{table.loc['cnn', 'auc']:.3f}" in row
    assert f"{table.loc['cnn', 'auc_difference']:+.3f}" in row
