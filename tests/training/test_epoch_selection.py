"""Selection inside the fold: inner folds, the epoch rule, restoring the chosen epoch, records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import gkdcn.compare.selection as selection
from gkdcn.compare import make_plan, run_comparison
from gkdcn.compare.heldout import area_share
from gkdcn.compare.jobs import fingerprint
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.protocols import protocol_folds
from gkdcn.compare.selection import (
    SELECTION_BACKGROUND,
    inner_folds,
    ranking_auc,
    selection_background,
)
from gkdcn.config import config_from_dict
from gkdcn.console import format_tables
from gkdcn.data.samples import Split
from gkdcn.data.study import build_samples, load_study
from gkdcn.report.tables import protocol_sections
from gkdcn.training.loop import SELECTION_SCORE, EpochMonitor, choose_epoch
from gkdcn.training.study import train_study
from helpers import tiny_comparison_config, write_tiny_study

RADIUS = 3000.0  # three cells of the tiny study


def _study(tmp_path: Path, **train: object):
    raw = write_tiny_study(
        tmp_path / "study",
        train={"epochs": 4, "width": 8, "batch_size": 16, "patience": None} | train,
        split={
            "method": "site",
            "validation_fraction": 0.25,
            "seed": 0,
            "exclusion_radius": RADIUS,
            "block_size": 6000.0,
            "folds": 2,
        },
        compare={"seeds": 1, "models": ["cnn"], "protocols": ["lodo"], "heldout_background": 0},
    )
    return load_study(config_from_dict(raw, base_dir=tmp_path / "study"))


def _distance(study, rows, cols, sites) -> np.ndarray:
    """(cells, sites) distances in map units."""
    x, y = study.grid.xy(np.asarray(rows), np.asarray(cols))
    sx, sy = study.grid.xy(study.sites.rows[sites], study.sites.cols[sites])
    return np.hypot(np.subtract.outer(x, sx), np.subtract.outer(y, sy))


@pytest.mark.parametrize("protocol", ["lodo", "blocks"])
def test_inner_folds_never_hold_the_held_out_deposits_or_cells_near_them(
    tmp_path: Path, protocol: str
) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    cfg = study.config.train
    folds = protocol_folds(protocol, study, samples, seed=0)
    assert folds
    for _, outer in folds:
        held = outer.held_out[study.sites.labels[outer.held_out] == 1]
        assert held.size
        inner = inner_folds(study, samples, outer, folds=2, seed=0)
        assert len(inner) == 2
        seen_deposits: list[int] = []
        for fold in inner:
            used = np.concatenate([fold.train, fold.val])
            assert np.isin(used, outer.train).all()  # only the outer fold's training windows
            assert not np.isin(samples.site[used], outer.held_out).any()
            near = _distance(study, samples.rows[used], samples.cols[used], held) <= RADIUS
            assert not near.any()
            assert not np.intersect1d(fold.train, fold.val).size
            assert (study.sites.labels[fold.held_out] == 1).all()
            assert not np.isin(fold.held_out, outer.held_out).any()
            seen_deposits += fold.held_out.tolist()
        assert len(seen_deposits) == len(set(seen_deposits))  # each inner deposit held out once
        rows, cols = selection_background(study, samples, outer, cfg, seed=0)
        assert 0 < len(rows) <= SELECTION_BACKGROUND
        assert study.valid[rows, cols].all()
        assert (_distance(study, rows, cols, held) > RADIUS).all()
        centres = set(zip(samples.rows.tolist(), samples.cols.tolist(), strict=True))
        assert not centres & set(zip(rows.tolist(), cols.tolist(), strict=True))


def test_selection_background_avoids_the_cells_the_comparison_ranks_against(
    tmp_path: Path,
) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    _, outer = protocol_folds("lodo", study, samples, seed=0)[0]
    exclude = np.zeros(study.valid.shape, dtype=bool)
    exclude[:, ::2] = True
    rows, cols = selection_background(study, samples, outer, study.config.train, 0, exclude)
    assert len(rows) and not exclude[rows, cols].any()
    again = selection_background(study, samples, outer, study.config.train, 0, exclude)
    assert np.array_equal(rows, again[0]) and np.array_equal(cols, again[1])


def test_choose_epoch_prefers_the_earliest_within_the_tolerance() -> None:
    assert choose_epoch([1, 2, 3, 4], [0.5, 0.9, 0.6, 0.91], 0.0) == 4
    assert choose_epoch([1, 2, 3, 4], [0.5, 0.9, 0.6, 0.91], 0.02) == 2
    assert choose_epoch([2, 4, 6], [np.nan, 0.7, 0.7], 0.0) == 4  # ties: the earliest
    assert choose_epoch([2, 4, 6], [np.nan, np.nan, np.nan], 0.0) == 6


def test_ranking_auc_is_the_held_out_auc() -> None:
    rng = np.random.default_rng(3)
    background = np.round(rng.random(200), 2)  # ties on purpose
    deposits = np.round(rng.random(7), 2)
    expected = 1 - np.mean([area_share(p, background) for p in deposits])
    assert ranking_auc(deposits, background) == pytest.approx(expected, abs=1e-12)
    assert ranking_auc(np.array([2.0]), background) == 1.0


def _scripted(scores: list[float]):
    """A metric that ignores the logits and returns ``scores`` in turn (one per evaluation)."""
    calls = iter(scores)
    return lambda logits: next(calls)


def _all_train(samples) -> Split:
    return Split("all", np.arange(len(samples)), np.zeros(0, np.int64), "every window")


def test_early_stopping_restores_the_chosen_epoch(tmp_path: Path) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    split = _all_train(samples)
    cfg = study.config.train.model_copy(update={"epochs": 5})
    cells = (study.sites.rows[:3], study.sites.cols[:3])
    monitor = EpochMonitor(*cells, metric=_scripted([0.5, 0.895, 0.9, 0.7, 0.4]), tolerance=0.01)
    selected = train_study(study, "cnn", samples=samples, split=split, cfg=cfg, seed=4,
                           monitor=monitor)  # fmt: skip
    assert selected.best_epoch == 2  # 0.895 is within 0.01 of the best, 0.9 at epoch 3
    assert len(selected.history) == 5
    assert selected.history[SELECTION_SCORE].tolist() == [0.5, 0.895, 0.9, 0.7, 0.4]
    # The restored weights are the training's own at epoch 2: those of a training that stops
    # there (monitoring draws from no random stream).
    stopped = train_study(study, "cnn", samples=samples, split=split,
                          cfg=cfg.model_copy(update={"epochs": 2}), seed=4)  # fmt: skip
    full = train_study(study, "cnn", samples=samples, split=split, cfg=cfg, seed=4)
    assert stopped.best_epoch == 2 and full.best_epoch == 5
    for name, value in selected.bundle.state.items():
        assert torch.equal(value, stopped.bundle.state[name]), name
    assert any(
        not torch.equal(value, full.bundle.state[name])
        for name, value in selected.bundle.state.items()
    )


def test_monitor_patience_and_period(tmp_path: Path) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    cfg = study.config.train.model_copy(update={"epochs": 9})
    cells = (study.sites.rows[:3], study.sites.cols[:3])
    every_two = EpochMonitor(*cells, metric=_scripted([0.6, 0.8, 0.7, 0.7, 0.7]), period=2)
    result = train_study(study, "cnn", samples=samples, split=_all_train(samples), cfg=cfg,
                         seed=1, monitor=every_two)  # fmt: skip
    scored = result.history.dropna(subset=[SELECTION_SCORE])
    assert scored["epoch"].tolist() == [2, 4, 6, 8, 9]  # every 2nd epoch and the last
    assert result.best_epoch == 4
    patient = EpochMonitor(*cells, metric=_scripted([0.6, 0.8, 0.7, 0.7, 0.7, 0.7]), patience=3)
    result = train_study(study, "cnn", samples=samples, split=_all_train(samples), cfg=cfg,
                         seed=1, monitor=patient)  # fmt: skip
    assert result.best_epoch == 2 and len(result.history) == 5  # stopped 3 epochs after it


def _results(root: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(root)): json.loads(p.read_text())
        for p in sorted(root.rglob("result.json"))
    }


@pytest.mark.parametrize("method", ["inner", "inner-restore"])
def test_compare_records_the_epochs_chosen_inside_the_fold(tmp_path: Path, method: str) -> None:
    study = _study(tmp_path, select_epochs=method, epochs=3, patience=2)
    plan = make_plan(study.config)
    comparison = run_comparison(study, tmp_path / "one", plan)
    results = _results(tmp_path / "one")
    table = comparison.selection["lodo"]
    assert list(table.model) == ["cnn"] and table.folds[0] == len(results)
    chosen = [r["selection"]["chosen_epoch"] for r in results.values()]
    assert table.epochs_mean[0] == pytest.approx(np.mean(chosen))
    assert (table.epochs_min[0], table.epochs_max[0]) == (min(chosen), max(chosen))
    text = format_tables(comparison)
    assert "epochs chosen inside the fold" in text
    # one seed: the held-out intervals are a bootstrap over the deposits, and say so
    summary = comparison.summary["lodo"]
    assert summary["interval"].str.startswith("bootstrap over held-out deposits").all()
    assert (summary.auc_lo <= summary.auc_mean).all() and (summary.auc_mean <= summary.auc_hi).all()
    assert "95% CI: bootstrap over held-out deposits" in text.replace("\n", " ")
    layout = RunLayout(tmp_path / "one")
    assert pd.read_csv(layout.table("lodo", "selection")).folds[0] == len(results)
    block = json.loads(layout.summary_json.read_text())["protocols"]["lodo"]
    [section] = protocol_sections({"lodo": block}, ["cnn"], 1)
    assert f"Epochs chosen inside each fold ({method}" in section["text"]
    assert f"CNN {np.mean(chosen):.1f} on average ({min(chosen)}-{max(chosen)})" in section["text"]
    assert len(results) == int((study.sites.labels == 1).sum())
    for result in results.values():
        selection = result["selection"]
        assert selection["method"] == method
        assert result["best_epoch"] == selection["chosen_epoch"]
        assert selection["chosen_epoch"] in selection["epochs"]
        assert len(selection["inner_auc"]) == len(selection["epochs"])
        assert all(0 <= v <= 1 for v in selection["inner_auc"])
        assert result["n_val"] > 0
        assert selection["extra_trainings"] == (2 if method == "inner" else 0)
        assert selection["inner_folds"] == (2 if method == "inner" else 1)
    run_comparison(study, tmp_path / "two", plan)
    again = _results(tmp_path / "two")
    strip = ("seconds",)
    for key, result in results.items():
        assert {k: v for k, v in result.items() if k not in strip} == {
            k: v for k, v in again[key].items() if k not in strip
        }  # same seed, same result


def test_unused_selection_settings_leave_the_fingerprint_alone(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study")
    study = load_study(config)
    base = fingerprint(study, make_plan(config))
    unused = config.model_copy(
        update={"train": config.train.model_copy(update={"select_folds": 3})}
    )
    assert fingerprint(study, make_plan(unused)) == base
    used = config.model_copy(
        update={"train": config.train.model_copy(update={"select_epochs": "inner"})}
    )
    assert fingerprint(study, make_plan(used)) != base


def test_inner_networks_never_train_on_the_cells_they_are_ranked_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(tmp_path, select_epochs="inner", epochs=2)
    samples, _ = build_samples(study)
    _, outer = protocol_folds("lodo", study, samples, seed=0)[0]
    cfg = study.config.train
    rows, cols = selection_background(study, samples, outer, cfg, seed=5)
    outer_exclude = np.zeros(study.valid.shape, dtype=bool)
    outer_exclude[0, :] = True
    calls: list[dict] = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return train_study(*args, **kwargs)

    monkeypatch.setattr(selection, "train_study", recording)
    selected = selection.fit_selected_network(
        "cnn", study, samples, outer, cfg, 5, exclude_background=outer_exclude
    )
    inner, final = calls[:-1], calls[-1]
    assert len(inner) == 2 == selected.record["extra_trainings"]
    for kwargs in inner:
        assert kwargs["monitor"] is not None
        assert kwargs["exclude_background"][rows, cols].all()
        assert kwargs["exclude_background"][0, :].all()
        assert np.isin(kwargs["split"].train, outer.train).all()
    assert final["split"] is outer and final.get("monitor") is None
    assert np.array_equal(final["exclude_background"], outer_exclude)
    assert final["cfg"].epochs == selected.record["chosen_epoch"] == selected.trained.best_epoch


def test_stacked_seeds_with_selection_train_each_seed_alone(tmp_path: Path) -> None:
    study = _study(tmp_path, select_epochs="inner-restore", epochs=2)
    plan = make_plan(study.config, seeds=2)
    run_comparison(study, tmp_path / "alone", plan)
    run_comparison(study, tmp_path / "stacked", plan, stack_seeds=True)
    alone, stacked = _results(tmp_path / "alone"), _results(tmp_path / "stacked")
    assert alone.keys() == stacked.keys() and len(alone) == 2 * 4
    for key, result in alone.items():
        assert "trained_stacked_with" not in stacked[key]
        assert result["selection"] == stacked[key]["selection"]
        assert result["heldout"] == stacked[key]["heldout"]
