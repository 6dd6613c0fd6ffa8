"""Baselines as models of ``gkdcn compare``: same folds, same tables, paired with every network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gkdcn.cli import app
from gkdcn.compare import make_jobs, make_plan, run_comparison
from gkdcn.compare.fitting import FittedBaseline, fit_model
from gkdcn.compare.stats import best_network_against_best_baseline, paired_differences
from gkdcn.config import config_from_dict
from gkdcn.data.study import build_samples, load_study
from gkdcn.errors import GkdcnError
from gkdcn.models import registry
from gkdcn.report import build_report
from helpers import tiny_comparison_config, write_tiny_study

BASELINE_KINDS = registry.names("baseline")
NETWORK_KINDS = registry.names("network")
MODEL_KINDS = registry.names()

MODELS = ["cnn", *BASELINE_KINDS]


def _study(tmp_path: Path, **compare):
    return load_study(tiny_comparison_config(tmp_path / "study", **({"models": MODELS} | compare)))


def test_model_kinds_keep_networks_and_baselines_apart(tmp_path: Path) -> None:
    assert (*NETWORK_KINDS, *BASELINE_KINDS) == MODEL_KINDS
    assert BASELINE_KINDS == ("knowledge", "element", "logistic", "random-forest")
    root = tmp_path / "study"
    config = config_from_dict(write_tiny_study(root), base_dir=root)
    assert make_plan(config).models == MODEL_KINDS  # default: four networks, four baselines
    plan = make_plan(config, models=["random-forest", "gk-dcn"])
    assert plan.models == ("random-forest", "gk-dcn")
    with pytest.raises(GkdcnError, match="unknown model 'svm'"):
        make_plan(config, models=["svm"])


def test_baselines_fit_only_on_each_folds_training_windows(tmp_path: Path) -> None:
    study = _study(tmp_path)
    samples, _ = build_samples(study)
    plan = make_plan(study.config)
    jobs = [j for j in make_jobs(study, samples, plan) if j.model in BASELINE_KINDS]
    assert {j.protocol for j in jobs} == {"authors", "lodo"}
    for job in jobs[:12]:
        fitted = fit_model(job.model, study, samples, job.split, plan.train, job.seed)
        assert isinstance(fitted, FittedBaseline)
        used = fitted.model.trained_on
        if job.model == "knowledge":
            assert len(used) == 0
            continue
        np.testing.assert_array_equal(used, job.split.train)
        assert not np.isin(used, job.split.val).any()
        for held in job.split.held_out:
            assert not np.any(samples.site[used] == held)


def test_comparison_tables_hold_baselines_and_pair_them_with_every_network(
    tmp_path: Path,
) -> None:
    study = _study(tmp_path, models=["cnn", "gk-cnn", *BASELINE_KINDS], seeds=2)
    out = tmp_path / "run"
    comparison = run_comparison(study, out, make_plan(study.config))
    for protocol in ("authors", "lodo"):
        table = pd.read_csv(out / "tables" / f"{protocol}_summary.csv")
        assert list(table["model"]) == ["cnn", "gk-cnn", *BASELINE_KINDS]
        assert list(table["kind"]) == ["network"] * 2 + ["baseline"] * 4
        paired = pd.read_csv(out / "tables" / f"{protocol}_paired.csv")
        for network in ("CNN", "GK-CNN"):
            for base in BASELINE_KINDS:
                assert f"{network} - {base}" in set(paired["comparison"])
    # Held out: every baseline ranks every deposit in every fold against the same background.
    n_deposits = int((study.sites.labels == 1).sum())
    for model in BASELINE_KINDS:
        folds = sorted((out / "lodo" / model / "seed0").glob("*/result.json"))
        assert len(folds) == n_deposits
        cnn = json.loads(Path(str(folds[0]).replace(f"/{model}/", "/cnn/")).read_text())
        mine = json.loads(folds[0].read_text())
        assert mine["heldout"][0]["n_background"] == cnn["heldout"][0]["n_background"]
    # The knowledge baseline's map is the weight itself.
    authors = out / "authors" / "knowledge" / "seed0"
    assert json.loads((authors / "baseline.json").read_text())["kind"] == "knowledge"
    import rasterio

    with rasterio.open(authors / "probability.tif") as src:
        prob = src.read(1, masked=True)
    valid = study.valid
    np.testing.assert_allclose(prob.filled(np.nan)[valid], study.knowledge[valid], rtol=1e-6)
    logistic = json.loads((out / "authors" / "logistic" / "seed0" / "baseline.json").read_text())
    assert "knowledge" in logistic["standardised_coefficients"]

    summary = json.loads((out / "summary.json").read_text())
    check = summary["protocols"]["lodo"]["baseline_check"]
    assert check["network"] in ("cnn", "gk-cnn") and check["baseline"] in BASELINE_KINDS
    lodo = comparison.summary["lodo"].set_index("model")["auc_mean"]
    assert check["baseline_mean"] == pytest.approx(lodo[list(BASELINE_KINDS)].max())

    html = build_report(out).read_text(encoding="utf-8")
    assert "Against the baselines." in html and 'class="badge baseline"' in html
    assert "best baseline" in html
    for base in BASELINE_KINDS:
        assert f"<b>{base}</b>" in html


def test_best_network_against_best_baseline_reads_the_paired_difference() -> None:
    runs = pd.DataFrame(
        {
            "model": ["cnn"] * 3 + ["gk-dcn"] * 3 + ["knowledge"] * 3 + ["logistic"] * 3,
            "seed": [0, 1, 2] * 4,
            "auc": [0.70, 0.72, 0.71, 0.81, 0.82, 0.83, 0.78, 0.78, 0.78, 0.60, 0.61, 0.62],
        }
    )
    from gkdcn.compare.stats import summarize_over_seeds

    summary = summarize_over_seeds(runs, ["auc"])
    paired = paired_differences(runs, ["auc"])
    check = best_network_against_best_baseline(summary, paired)
    assert check is not None
    assert (check["network"], check["baseline"]) == ("gk-dcn", "knowledge")
    assert check["mean_difference"] == pytest.approx(0.04)
    assert check["beats"] and check["clear"]
    assert (check["seeds_first_better"], check["seeds_second_better"]) == (3, 0)
    networks_only = runs[runs["model"].isin(["cnn", "gk-dcn"])]
    assert (
        best_network_against_best_baseline(
            summarize_over_seeds(networks_only, ["auc"]), paired_differences(networks_only, ["auc"])
        )
        is None
    )


def test_baseline_sentence_says_when_no_network_beats_the_best_baseline() -> None:
    from gkdcn.report.texts import baseline_sentence

    check = {
        "metric": "auc",
        "network": "gk-dcn",
        "baseline": "random-forest",
        "network_mean": 0.70,
        "baseline_mean": 0.76,
        "mean_difference": -0.06,
        "ci_lo": -0.09,
        "ci_hi": -0.03,
        "seeds_first_better": 0,
        "seeds_second_better": 5,
        "beats": False,
        "clear": True,
    }
    text = baseline_sentence(check)
    assert text.startswith("No network beat the best baseline")
    assert "GK-DCN" in text and "random-forest" in text and "-0.060 [-0.090, -0.030]" in text
    ahead = check | {"mean_difference": 0.01, "ci_lo": -0.02, "ci_hi": 0.04, "beats": True}
    assert "shown to beat" in baseline_sentence(ahead | {"clear": False})
    assert baseline_sentence(None) == ""


def test_train_refuses_a_baseline_with_a_clear_message(tmp_path: Path) -> None:
    root = tmp_path / "study"
    raw = write_tiny_study(root)
    import tomli_w

    (root / "study.toml").write_text(tomli_w.dumps(raw), encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["train", str(root / "study.toml"), "-m", "random-forest", "--out", str(tmp_path / "m")],
    )
    assert result.exit_code == 2
    assert "baseline, not a network" in result.output
    assert "gkdcn compare" in result.output
    assert not (tmp_path / "m").exists()


def test_knowledge_baseline_needs_knowledge(tmp_path: Path) -> None:
    root = tmp_path / "study"
    raw = write_tiny_study(root)
    raw.pop("knowledge")
    study = load_study(config_from_dict(raw, base_dir=root))
    plan = make_plan(study.config, models=["cnn", "knowledge"])
    with pytest.raises(GkdcnError, match="knowledge need geological knowledge"):
        run_comparison(study, tmp_path / "run", plan)
    assert not (tmp_path / "run").exists()


def test_baselines_fit_on_the_networks_background_away_from_held_out_and_ranked_cells(
    tmp_path: Path,
) -> None:
    from gkdcn.compare.heldout import background_cells
    from gkdcn.data.background import near_mask
    from gkdcn.training.study import study_background

    study = _study(tmp_path, heldout_background=40)
    samples, _ = build_samples(study)
    plan = make_plan(study.config, protocols=["lodo"])
    assert plan.train.background_ratio > 0  # the recipe's default: background on
    ranked = np.zeros(study.valid.shape, dtype=bool)
    ranked[background_cells(study, samples, plan.background_sample, plan.background_seed)] = True
    jobs = [j for j in make_jobs(study, samples, plan) if j.model == "logistic"]
    jobs += [j for j in make_jobs(study, samples, plan) if j.model == "random-forest"][:2]
    for job in jobs:
        fitted = fit_model(
            job.model, study, samples, job.split, plan.train, job.seed, exclude_background=ranked
        )
        assert isinstance(fitted, FittedBaseline)
        rows, cols = fitted.model.background_rows, fitted.model.background_cols
        expected = round(plan.train.background_ratio * len(job.split.train))
        assert len(rows) == expected and fitted.info["n_fit_background"] == expected
        np.testing.assert_array_equal(fitted.model.trained_on, job.split.train)
        # Only the pool the fold's networks draw from: valid, no ranked cell, no window centre,
        # never within the exclusion radius of a held-out deposit.
        pool = study_background(study, samples, job.split, plan.train, exclude=ranked)
        in_pool = set(zip(pool.rows.tolist(), pool.cols.tolist(), strict=True))
        assert set(zip(rows.tolist(), cols.tolist(), strict=True)) <= in_pool
        assert study.valid[rows, cols].all() and not ranked[rows, cols].any()
        centre = np.zeros(study.valid.shape, dtype=bool)
        centre[samples.rows, samples.cols] = True
        assert not centre[rows, cols].any()
        held = [s for s in job.split.held_out if study.sites.labels[s] == 1]
        near_held = near_mask(
            study.grid,
            study.sites.rows[held],
            study.sites.cols[held],
            study.config.split.exclusion_radius,
        )
        assert held and not near_held[rows, cols].any()
    # Same seed, same draw and same scores; another seed, another draw.
    job = next(j for j in make_jobs(study, samples, plan) if j.model == "logistic")
    fits = [
        fit_model("logistic", study, samples, job.split, plan.train, s, exclude_background=ranked)
        for s in (5, 5, 6)
    ]
    cells = np.nonzero(study.valid)
    np.testing.assert_array_equal(fits[0].model.background_rows, fits[1].model.background_rows)
    np.testing.assert_array_equal(fits[0].score_cells(*cells), fits[1].score_cells(*cells))
    assert not np.array_equal(fits[0].model.background_rows, fits[2].model.background_rows)
    # element (chosen on the labelled windows) and the authors' preset (no background) use
    # the labelled windows only, as before.
    element = fit_model(
        "element", study, samples, job.split, plan.train, 5, exclude_background=ranked
    )
    assert len(element.model.background_rows) == 0  # type: ignore[attr-defined]
    authors = plan.train.model_copy(update={"background_ratio": 0.0})
    plain = fit_model("logistic", study, samples, job.split, authors, 5)
    assert len(plain.model.background_rows) == 0  # type: ignore[attr-defined]
