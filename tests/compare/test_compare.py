"""The comparison experiment: protocols, paired statistics, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from gkdcn.compare import (
    background_cells,
    heldout_metrics,
    make_jobs,
    make_plan,
    mean_ci,
    paired_differences,
    run_comparison,
    summarize_over_seeds,
)
from gkdcn.data.study import build_samples, load_study
from gkdcn.errors import GkdcnError
from gkdcn.io.rasters import PROBABILITY_NODATA, read_probability_map
from helpers import tiny_comparison_config


def _study(tmp_path: Path, **compare):
    return load_study(tiny_comparison_config(tmp_path / "study", **compare))


def test_paired_comparison_of_a_model_with_itself_is_zero() -> None:
    runs = pd.DataFrame(
        {
            "model": ["cnn"] * 3 + ["gk-cnn"] * 3,
            "seed": [0, 1, 2] * 2,
            "auc": [0.7, 0.8, 0.75] * 2,
            "success_auc": [0.6, 0.7, 0.65] * 2,
        }
    )
    paired = paired_differences(runs, ["auc", "success_auc"])
    row = paired[(paired.comparison == "GK-CNN - CNN") & (paired.metric == "auc")].iloc[0]
    assert row.mean_difference == 0
    assert row.ci_lo == row.ci_hi == 0
    assert (row.seeds_first_better, row.seeds_second_better, row.seeds_tied) == (0, 0, 3)


def test_paired_differences_are_per_seed() -> None:
    runs = pd.DataFrame(
        {
            "model": ["cnn"] * 3 + ["gk-cnn"] * 3,
            "seed": [0, 1, 2, 2, 1, 0],  # order must not matter: pairing is by seed
            "auc": [0.70, 0.80, 0.60, 0.65, 0.85, 0.72],
        }
    )
    row = paired_differences(runs, ["auc"]).iloc[0]
    assert row.differences == "+0.020 +0.050 +0.050"
    assert row.mean_difference == pytest.approx(0.04)
    assert row.seeds_first_better == 3
    assert row.ci_lo < 0.04 < row.ci_hi


def test_mean_ci_collapses_without_spread() -> None:
    assert mean_ci(np.array([0.8])) == (0.8, 0.8, 0.8)
    assert mean_ci(np.array([0.5, 0.5, 0.5])) == (0.5, 0.5, 0.5)
    mean, lo, hi = mean_ci(np.array([0.6, 0.7, 0.8]))
    assert lo < mean < hi
    assert mean == pytest.approx(0.7)


def test_heldout_metrics_on_known_ranks() -> None:
    shares = np.array([0.0, 0.05, 0.1, 0.2, 0.5])
    m = heldout_metrics(shares)
    assert m["auc"] == pytest.approx(1 - shares.mean())
    assert m["area_50"] == 0.1  # 3 of 5 deposits captured within 10 % of the area
    assert m["area_80"] == 0.2
    assert m["area_100"] == 0.5
    assert m["capture_top10"] == pytest.approx(0.6)


def test_lodo_jobs_never_train_on_the_held_out_deposit(tmp_path: Path) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    plan = make_plan(study.config)
    lodo = [job for job in make_jobs(study, samples, plan) if job.protocol == "lodo"]
    deposits = np.flatnonzero(study.sites.labels == 1)
    assert {job.fold for job in lodo} == {f"lodo-{study.sites.ids[d]}" for d in deposits}
    cell = study.grid.cell_size[0]
    for job in lodo:
        (held,) = job.split.held_out
        used = np.concatenate([job.split.train, job.split.val])
        assert not np.any(samples.site[used] == held)
        dist = np.hypot(
            samples.rows[used] - study.sites.rows[held], samples.cols[used] - study.sites.cols[held]
        )
        assert np.all(dist * cell > study.config.split.exclusion_radius)
        assert len(job.split.val) == 0  # fixed epochs: nothing withheld from training
        others = np.flatnonzero(
            (samples.site != held)
            & (
                np.hypot(
                    samples.rows - study.sites.rows[held], samples.cols - study.sites.cols[held]
                )
                * cell
                > study.config.split.exclusion_radius
            )
        )
        assert np.array_equal(np.sort(job.split.train), others)


def test_background_is_valid_area_no_model_trained_on(tmp_path: Path) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    rows, cols = background_cells(study, samples, None, seed=0)
    assert np.all(study.valid[rows, cols])
    trained_on = set(zip(samples.rows.tolist(), samples.cols.tolist(), strict=True))
    assert trained_on.isdisjoint(zip(rows.tolist(), cols.tolist(), strict=True))
    # everything else valid is background: nothing dropped silently
    assert len(rows) == int(study.valid.sum()) - len(
        {(r, c) for r, c in trained_on if study.valid[r, c]}
    )
    # a seeded sample: a comparison draws it once (Plan.background_seed) for every seed and model
    a = background_cells(study, samples, 50, seed=3)
    b = background_cells(study, samples, 50, seed=3)
    assert len(a[0]) == 50 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], background_cells(study, samples, 50, seed=4)[0])


def _results(run: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(run.rglob("result.json")):
        result = json.loads(path.read_text())
        result.pop("seconds")
        out[path.relative_to(run).as_posix()] = result
    return out


def test_results_do_not_depend_on_how_many_trainings_run_at_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    plan = make_plan(study.config, seeds=1)
    one = run_comparison(study, tmp_path / "one", plan, workers=1)
    two = run_comparison(study, tmp_path / "two", plan, workers=2)
    first, second = _results(tmp_path / "one"), _results(tmp_path / "two")
    n_deposits = int((study.sites.labels == 1).sum())
    assert len(first) == 2 * (1 + n_deposits)  # 2 models x (authors + one fold per deposit)
    assert first == second  # exact: every training runs on one thread either way
    pd.testing.assert_frame_equal(one.summary["lodo"], two.summary["lodo"])


def test_a_failing_job_stops_the_run_with_its_error(tmp_path: Path) -> None:
    from gkdcn.runner import run_jobs

    with pytest.raises(GkdcnError, match="job 3 failed"):
        run_jobs(list(range(6)), _fail_on_three, None, workers=2)
    study = _study(tmp_path)
    with pytest.raises(GkdcnError, match="--jobs must be at least 1"):
        run_comparison(study, tmp_path / "x", make_plan(study.config), workers=0)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def _fail_on_three(job: int, context: None, progress: object) -> None:
    if job == 3:
        raise GkdcnError(f"job {job} failed")


def test_comparison_runs_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    study = _study(tmp_path)
    plan = make_plan(study.config)
    out = tmp_path / "run"
    comparison = run_comparison(study, out, plan)
    n_deposits = int((study.sites.labels == 1).sum())

    authors = comparison.summary["authors"]
    assert list(authors.model) == ["cnn", "gk-dcn"]
    assert set(comparison.runs["lodo"].seed) == {0, 1}
    first_fold = sorted((out / "lodo" / "gk-dcn" / "seed1").iterdir())[0]
    lodo_result = json.loads((first_fold / "result.json").read_text())
    assert len(lodo_result["heldout"]) == 1
    assert 0 <= lodo_result["heldout"][0]["area_share"] <= 1
    shares = [
        h["area_share"]
        for p in (out / "lodo" / "cnn" / "seed0").glob("*/result.json")
        for h in json.loads(p.read_text())["heldout"]
    ]
    assert len(shares) == n_deposits
    row = comparison.runs["lodo"].query("model == 'cnn' and seed == 0").iloc[0]
    assert row.auc == pytest.approx(1 - np.mean(shares))

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["protocols"]) == {"authors", "lodo"}
    for name in ("maps.png", "roc_authors.png", "success_rate_lodo.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    tables = pd.read_csv(out / "tables" / "lodo_summary.csv")
    assert np.allclose(tables.auc_mean, comparison.summary["lodo"].auc_mean)
    assert (out / "authors" / "gk-dcn" / "seed0" / "model.pt").exists()
    # One nodata convention for every probability map: -9999 on disk, NaN when read back.
    for tif in (
        out / "authors" / "cnn" / "seed0" / "probability.tif",
        out / "maps" / "cnn_mean_probability.tif",
    ):
        with rasterio.open(tif) as ds:
            assert ds.nodata == PROBABILITY_NODATA == -9999
        prob, valid, _ = read_probability_map(tif)
        assert np.array_equal(valid, study.valid) and np.isnan(prob[~valid]).all()

    # resuming: finished work is not redone
    marker = out / "authors" / "cnn" / "seed0" / "result.json"
    before = marker.stat().st_mtime_ns
    again = run_comparison(study, out, plan)
    assert marker.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again.summary["authors"], comparison.summary["authors"])

    # other settings into the same folder need --overwrite
    other = make_plan(study.config, epochs=3)
    with pytest.raises(GkdcnError, match="other settings"):
        run_comparison(study, out, other)


def test_summarize_over_seeds_reports_interval() -> None:
    runs = pd.DataFrame({"model": ["cnn"] * 3, "seed": [0, 1, 2], "auc": [0.6, 0.7, 0.8]})
    row = summarize_over_seeds(runs, ["auc"]).iloc[0]
    assert row.auc_mean == pytest.approx(0.7)
    assert row.auc_lo < 0.7 < row.auc_hi
    assert row.seeds == 3


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    study = _study(tmp_path)
    plan = make_plan(study.config)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(GkdcnError, match="not a gkdcn run"):
            run_comparison(study, precious, plan, overwrite=overwrite)
    assert (precious / "notes.txt").read_text() == "mine"


def test_plan_overrides_are_validated(tmp_path: Path) -> None:
    study = _study(tmp_path)
    with pytest.raises(GkdcnError, match="seeds"):
        make_plan(study.config, seeds=0)
    with pytest.raises(GkdcnError, match="training override"):
        make_plan(study.config, epochs=0)
    with pytest.raises(GkdcnError, match="unknown protocol"):
        make_plan(study.config, protocols=["lodo", "bogus"])
    assert make_plan(study.config, models=["cnn", " dcn", "cnn"]).models == ("cnn", "dcn")


def test_the_model_seam_refuses_an_unknown_kind(tmp_path: Path) -> None:
    """fit_model is the one dispatch on model kind; a kind without a rule is a programming
    error (plain ValueError), not a user's mistake."""
    from gkdcn.compare import fit_model

    study = _study(tmp_path)
    samples, splits = build_samples(study)
    with pytest.raises(ValueError, match="no fitting rule") as info:
        fit_model("no-such-model", study, samples, splits[0], study.config.train, 0)
    assert not isinstance(info.value, GkdcnError)


def test_run_layout_names_every_job_path(tmp_path: Path) -> None:
    from gkdcn.compare import RunLayout

    layout = RunLayout(tmp_path)
    assert layout.result("lodo", "cnn", 1, "D3") == tmp_path / "lodo/cnn/seed1/D3/result.json"
    assert layout.probability("gk-dcn", 0) == tmp_path / "authors/gk-dcn/seed0/probability.tif"
    assert RunLayout.mean_map_model(layout.mean_map("dcn")) == "dcn"
    assert RunLayout.mean_map_model(tmp_path / "maps" / "other.tif") is None
    assert layout.explain("gk-dcn").index == tmp_path / "explain/gk-dcn/index.json"
