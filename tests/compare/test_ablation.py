"""The ablation (``gkdcn ablation``): variants, the paired table, the run folder and the report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from gkdcn.cli import app
from gkdcn.compare.ablation import ablation_table, plan_ablation, run_ablation, variant_config
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.variants import CHANNEL_KEY, REFERENCE, VARIANTS
from gkdcn.data.study import load_study
from gkdcn.errors import GkdcnError, Note
from gkdcn.report import build_report
from gkdcn.report.ablation import clear_levers
from helpers import tiny_comparison_config, write_tiny_study

runner = CliRunner()


def _runs(model: str, aucs: list[float], seeds: list[int] | None = None) -> pd.DataFrame:
    seeds = seeds if seeds is not None else list(range(len(aucs)))
    return pd.DataFrame({"model": model, "seed": seeds, "auc": aucs})


def test_every_variant_changes_only_its_levers(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study")
    full = config.train.model_dump()
    for name, update in VARIANTS.items():
        cfg = variant_config(config, name)
        changed = {k for k, v in cfg.train.model_dump().items() if full[k] != v}
        train_keys = {k for k in update if k not in (CHANNEL_KEY, "preset")}
        if "preset" in update:  # the authors' preset: only what the preset sets, width kept
            assert cfg.train.width == config.train.width
            assert cfg.train.augment is False and cfg.train.background_ratio == 0
        else:
            assert changed == {k for k in train_keys if full[k] != update[k]}, name
        channel = update.get(CHANNEL_KEY, config.knowledge.as_channel)
        assert cfg.knowledge.as_channel is channel
        # the rest of the study is untouched
        assert cfg.samples == config.samples and cfg.split == config.split


def test_plan_checks_every_name_before_training(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study")
    out = tmp_path / "run"
    with pytest.raises(GkdcnError, match="unknown variant 'no such lever'"):
        plan_ablation(config, out, variants=["no value noise", "no such lever"])
    with pytest.raises(GkdcnError, match="baselines do not depend"):
        plan_ablation(config, out, models=["random-forest"])
    with pytest.raises(GkdcnError, match="held-out AUC"):
        plan_ablation(config, out, protocol="authors")
    assert not out.exists()

    runs = plan_ablation(
        config, out, variants=["no value noise", "no augmentation"], models=["gk-cnn"],
        reference_models=["cnn", "knowledge"], seeds=2, epochs=1,
    )  # fmt: skip
    assert [r.name for r in runs] == [REFERENCE, "no value noise", "no augmentation"]
    assert runs[0].folder == out and runs[0].plan.models == ("gk-cnn", "cnn", "knowledge")
    assert runs[1].folder == RunLayout(out).ablation_run("no-value-noise")
    assert runs[1].plan.models == ("gk-cnn",)
    assert all(r.plan.seeds == (0, 1) and r.plan.train.epochs == 1 for r in runs)
    assert runs[1].plan.train.noise == 0 and runs[0].plan.train.noise > 0


def test_a_variant_equal_to_the_full_recipe_is_left_out(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study")
    with_channel = config.model_copy(
        update={"knowledge": config.knowledge.model_copy(update={"as_channel": True})}
    )
    with pytest.warns(Note, match="same settings as 'full recipe'"):
        runs = plan_ablation(with_channel, tmp_path / "run", variants=["with knowledge channel"])
    assert [r.name for r in runs] == [REFERENCE]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = plan_ablation(config, tmp_path / "run", variants=["with knowledge channel"])
    assert [r.name for r in runs] == [REFERENCE, "with knowledge channel"]


def test_table_pairs_by_seed_against_the_same_model() -> None:
    runs = {
        REFERENCE: pd.concat(
            [_runs("gk-cnn", [0.80, 0.90, 0.85]), _runs("knowledge", [0.70, 0.70, 0.70])]
        ),
        # seeds in another order, and one seed fewer: pairing is by seed, on common seeds
        "no value noise": _runs("gk-cnn", [0.86, 0.70], seeds=[2, 0]),
        "no augmentation": _runs("gk-cnn", [0.81, 0.91, 0.86]),
    }
    table = ablation_table(runs).set_index(["variant", "model"])
    noise = table.loc[("no value noise", "gk-cnn")]
    assert noise.seeds == noise.paired_seeds == 2
    assert noise.diff_mean == pytest.approx(((0.70 - 0.80) + (0.86 - 0.85)) / 2)
    assert (noise.seeds_better, noise.seeds_worse) == (1, 1)
    assert not noise.clear
    augment = table.loc[("no augmentation", "gk-cnn")]
    assert augment.diff_mean == pytest.approx(0.01)
    assert (augment.seeds_better, augment.seeds_worse) == (3, 0)
    # identical per-seed differences: a zero-width interval away from 0 is clear
    assert augment.clear and augment.diff_lo == pytest.approx(0.01)
    ref = table.loc[(REFERENCE, "knowledge")]
    assert ref.kind == "baseline" and np.isnan(ref.diff_mean)
    sentence = clear_levers(ablation_table(runs).to_dict("records"))
    assert "no augmentation (GK-CNN +0.010" in sentence and "other 1 are within" in sentence


def test_clear_levers_says_when_nothing_is_clear() -> None:
    runs = {
        REFERENCE: _runs("gk-cnn", [0.80, 0.90]),
        "no value noise": _runs("gk-cnn", [0.85, 0.85]),
    }
    assert clear_levers(ablation_table(runs).to_dict("records")).startswith(
        "No variant is clear of seed noise over 2 seeds"
    )
    one_seed = {REFERENCE: _runs("gk-cnn", [0.8]), "no value noise": _runs("gk-cnn", [0.9])}
    assert "one seed" in clear_levers(ablation_table(one_seed).to_dict("records"))


def test_ablation_runs_resumes_and_shows_in_the_report(tmp_path: Path) -> None:
    config = tiny_comparison_config(tmp_path / "study", epochs=1)
    out = tmp_path / "run"
    runs = plan_ablation(
        config, out, variants=["no value noise", "no knowledge on background"],
        models=["gk-cnn"], reference_models=["cnn", "knowledge"], seeds=2, protocol="lodo",
    )  # fmt: skip
    study = load_study(config)
    table = run_ablation(study, out, runs)
    layout = RunLayout(out)
    assert layout.summary_json.is_file()  # the full recipe is the comparison in the run folder
    for slug in ("no-value-noise", "no-knowledge-on-background"):
        assert RunLayout(layout.ablation_run(slug)).summary_json.is_file()
    assert set(zip(table.variant, table.model, strict=True)) == {
        (REFERENCE, "gk-cnn"), (REFERENCE, "cnn"), (REFERENCE, "knowledge"),
        ("no value noise", "gk-cnn"), ("no knowledge on background", "gk-cnn"),
    }  # fmt: skip
    # the paired difference is what the two runs' own tables say, seed by seed
    ref_runs = pd.read_csv(layout.table("lodo", "runs")).query("model == 'gk-cnn'")
    var_runs = pd.read_csv(
        RunLayout(layout.ablation_run("no-value-noise")).table("lodo", "runs")
    ).query("model == 'gk-cnn'")
    row = table.query("variant == 'no value noise'").iloc[0]
    assert row.diff_mean == pytest.approx(np.mean(var_runs.auc.values - ref_runs.auc.values))
    saved = pd.read_csv(layout.ablation_table)
    assert np.allclose(saved.auc_mean, table.auc_mean)
    meta = json.loads(layout.ablation_json.read_text())
    assert meta["protocol"] == "lodo" and meta["seeds"] == 2 and len(meta["rows"]) == len(table)
    assert "| no value noise | GK-CNN | 2 |" in layout.ablation_markdown.read_text()

    # resuming retrains nothing and gives the same table
    result = next(layout.ablation_run("no-value-noise").rglob("result.json"))
    stamp = result.stat().st_mtime_ns
    again = run_ablation(study, out, runs)
    assert result.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again, table)

    report = build_report(out)
    html = report.read_text()
    assert 'id="ablation"' in html and "Which levers matter." in html
    assert "no knowledge on background" in html and "gk_background = false" in html
    assert clear_levers(meta["rows"]) in html
    assert (
        "gkdcn ablation study.toml --out RUN --protocol lodo --seeds 2 --epochs 1 --models gk-cnn "
        "--reference-models cnn,knowledge --variants &#34;no value noise,no knowledge on "
        "background&#34;"
    ) in html


def test_report_without_an_ablation_has_no_section(tmp_path: Path) -> None:
    from gkdcn.compare import make_plan, run_comparison

    config = tiny_comparison_config(tmp_path / "study", epochs=1, seeds=1)
    plan = make_plan(config, models=["knowledge"], protocols=["lodo"])
    run_comparison(load_study(config), tmp_path / "run", plan)
    assert 'id="ablation"' not in build_report(tmp_path / "run").read_text()
    # a damaged ablation table is left out with a line saying so; the report still builds
    layout = RunLayout(tmp_path / "run")
    layout.ablation_dir.mkdir()
    layout.ablation_json.write_text("{not json")
    html = build_report(tmp_path / "run", overwrite=True).read_text()
    assert 'id="ablation"' not in html and "cannot read the ablation table" in html


def _config_file(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    raw = write_tiny_study(
        root,
        train={"epochs": 1, "width": 8, "batch_size": 16},
        split={"method": "site", "validation_fraction": 0.25, "seed": 0, "exclusion_radius": 2.0},
        compare={"heldout_background": 0, "bootstrap": 20},
    )
    path = root / "study.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    return path


def test_cli_errors_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    out = tmp_path / "run"
    for args, message in [
        (["--variants", "no such lever"], "unknown variant 'no such lever'"),
        (["--models", "logistic"], "baselines do not depend"),
        (["--protocol", "authors"], "held-out AUC"),
        (["--background", "-1"], "--background must be 0"),
        (["--width", "2"], "invalid --width"),
    ]:
        result = runner.invoke(app, ["ablation", str(config), "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = runner.invoke(
        app,
        ["ablation", str(config), "--out", str(other), "--variants", "no value noise",
         "--models", "gk-cnn", "--reference-models", "knowledge", "--seeds", "1", "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 2 and "not a gkdcn run" in result.output
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_cli_runs_a_tiny_ablation(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    out = tmp_path / "run"
    args = ["ablation", str(config), "--out", str(out), "--variants", "no value noise",
            "--models", "gk-cnn", "--reference-models", "knowledge", "--seeds", "2",
            "--protocol", "lodo", "--jobs", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| no value noise | GK-CNN | 2 |" in result.output
    assert RunLayout(out).ablation_json.is_file()
    # other settings on the same folder: refused, unless --overwrite
    result = runner.invoke(app, [*args, "--epochs", "2"])
    assert result.exit_code == 2 and "error:" in result.output
    result = runner.invoke(app, [*args, "--epochs", "2", "--overwrite"])
    assert result.exit_code == 0, result.output
    meta = json.loads(RunLayout(out).ablation_json.read_text())
    assert meta["epochs"] == 2
