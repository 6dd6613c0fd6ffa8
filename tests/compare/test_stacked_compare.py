"""A comparison whose seeds train stacked: the same job folders and results (to rounding) as
one by one, grouping independent of --jobs, and resuming a partly finished group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gkdcn.compare import make_plan, run_comparison
from gkdcn.compare.jobs import Job, JobGroup, group_jobs, make_jobs
from gkdcn.compare.run import study_samples
from gkdcn.data.study import load_study
from helpers import tiny_comparison_config


def _results(run: Path) -> dict[str, dict[str, Any]]:
    return {
        p.relative_to(run).as_posix(): json.loads(p.read_text())
        for p in sorted(run.rglob("result.json"))
    }


def _scores(result: dict[str, Any]) -> list[float]:
    """The continuous outputs of a job: calibration offset, held-out deposit probabilities and
    the background's probability sums (rank metrics are left out: on this tiny, barely
    trained map the scores are near-ties that any rounding difference can reorder)."""
    out = [float(result.get("calibration", {}).get("logit_offset", 0.0))]
    out += [float(h["probability"]) for h in result.get("heldout", [])]
    out += [float(v) for v in result.get("heldout_calibration", {}).get("background_sums", [])]
    return out


def test_group_jobs_stacks_seeds_of_one_network_and_fold(tmp_path: Path) -> None:
    study = load_study(tiny_comparison_config(tmp_path / "study", seeds=3))
    samples = study_samples(study)
    plan = make_plan(study.config)
    jobs = list(make_jobs(study, samples, plan))
    tasks = group_jobs(jobs)
    groups = [t for t in tasks if isinstance(t, JobGroup)]
    assert groups and all(len(g.members) == 3 for g in groups)
    for group in groups:
        first = group.members[0]
        assert {(j.protocol, j.model, j.fold) for j in group.members} == {
            (first.protocol, first.model, first.fold)
        }
        assert [j.seed for j in group.members] == [0, 1, 2]
    flat = [j for t in tasks for j in (t.members if isinstance(t, JobGroup) else (t,))]
    assert sorted(j.folder for j in flat) == sorted(j.folder for j in jobs)  # each job once
    assert group_jobs(jobs, stack=False) == jobs
    assert all(len(t.members) <= 2 for t in group_jobs(jobs, most=2) if isinstance(t, JobGroup))
    single = [t for t in tasks if isinstance(t, Job)]
    assert all(j.model not in ("cnn", "gk-dcn") for j in single)  # only baselines alone


def test_stacked_comparison_matches_one_by_one_and_resumes(tmp_path: Path) -> None:
    study = load_study(tiny_comparison_config(tmp_path / "study", seeds=2))
    plan = make_plan(study.config)
    run_comparison(study, tmp_path / "solo", plan, workers=1)
    stacked = run_comparison(study, tmp_path / "stacked", plan, workers=2, stack_seeds=True)
    solo_results, stacked_results = _results(tmp_path / "solo"), _results(tmp_path / "stacked")
    assert solo_results.keys() == stacked_results.keys()
    assert any(r.get("trained_stacked_with") == 2 for r in stacked_results.values())
    for key, solo in solo_results.items():
        ours = stacked_results[key]
        assert {k for k in ours if k != "trained_stacked_with"} == set(solo), key
        for field in ("best_epoch", "background_per_epoch", "n_train", "n_val", "fold"):
            assert ours.get(field) == solo.get(field), (key, field)
        # to rounding: a stack sums in another order (2 epochs keep the DCN's drift small)
        np.testing.assert_allclose(_scores(ours), _scores(solo), rtol=1e-3, atol=1e-3)
    assert not stacked.summary["lodo"].empty
    # resume: one seed's result lost, the rest kept; the run trains that job alone again
    lost = next(k for k, r in stacked_results.items() if r.get("trained_stacked_with"))
    (tmp_path / "stacked" / lost).unlink()
    kept = {k: (tmp_path / "stacked" / k).stat().st_mtime_ns for k in stacked_results if k != lost}
    run_comparison(study, tmp_path / "stacked", plan, workers=1, stack_seeds=True)
    again = _results(tmp_path / "stacked")
    assert again.keys() == stacked_results.keys()
    assert "trained_stacked_with" not in again[lost]  # trained alone this time
    assert all((tmp_path / "stacked" / k).stat().st_mtime_ns == t for k, t in kept.items())
