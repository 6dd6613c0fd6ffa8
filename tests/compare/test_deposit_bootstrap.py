"""One seed: held-out intervals are a bootstrap over the held-out deposits, and say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gkdcn.compare.heldout import heldout_metrics
from gkdcn.compare.stats import (
    DEPOSIT_INTERVAL,
    SEED_INTERVAL,
    deposit_bootstrap_intervals,
    paired_differences,
    summarize_over_seeds,
)

METRICS = ["auc", "capture_top15"]


def _tables(shares: dict[str, dict[str, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame(
        [
            {"model": m, "seed": 0} | heldout_metrics(np.array(list(s.values())))
            for m, s in shares.items()
        ]
    )
    return summarize_over_seeds(runs, METRICS), paired_differences(runs, ["auc"])


def _shares(seed: int, n: int = 30, shift: float = 0.0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"d{i}": float(np.clip(v, 0, 1)) for i, v in enumerate(rng.beta(1, 6, n) + shift)}


def test_one_seed_gets_a_bootstrap_over_deposits_not_a_point() -> None:
    shares = {"cnn": _shares(1), "gk-cnn": _shares(2), "random-forest": _shares(1, shift=0.05)}
    summary, paired = _tables(shares)
    assert (summary.auc_lo == summary.auc_hi).all()  # a t-interval over one seed: a point
    boot_summary, boot_paired = deposit_bootstrap_intervals(
        summary, paired, shares, heldout_metrics, n_boot=500, seed=3
    )
    assert boot_summary["interval"].str.startswith(DEPOSIT_INTERVAL).all()
    assert (boot_summary.auc_lo < boot_summary.auc_mean).all()
    assert (boot_summary.auc_mean < boot_summary.auc_hi).all()
    pd.testing.assert_series_equal(boot_summary.auc_mean, summary.auc_mean)  # means unchanged
    # cnn ranks every deposit 0.05 higher than random-forest (a smaller share): the paired
    # difference is +0.05 in every draw, though each model's own interval is wide.
    row = boot_paired[boot_paired.comparison == "CNN - random-forest"].iloc[0]
    assert row.ci_lo > 0.0 and row.ci_hi < 0.06
    assert row.mean_difference == pytest.approx(0.05, abs=0.01)
    assert row.interval.startswith(DEPOSIT_INTERVAL)
    other = boot_paired[boot_paired.comparison == "GK-CNN - CNN"].iloc[0]
    assert other.ci_lo < other.mean_difference < other.ci_hi


def test_the_bootstrap_is_seeded_and_resamples_the_deposits() -> None:
    shares = {"cnn": _shares(1), "knowledge": _shares(4)}
    summary, paired = _tables(shares)
    first = deposit_bootstrap_intervals(summary, paired, shares, heldout_metrics, 300, seed=5)
    again = deposit_bootstrap_intervals(summary, paired, shares, heldout_metrics, 300, seed=5)
    other = deposit_bootstrap_intervals(summary, paired, shares, heldout_metrics, 300, seed=6)
    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
    assert not first[0].auc_lo.equals(other[0].auc_lo)
    # the percentile interval of the resampled mean share, by hand
    values = np.array([shares["cnn"][k] for k in sorted(shares["cnn"])])
    draws = np.random.default_rng([5, 43]).integers(0, len(values), size=(300, len(values)))
    lo, hi = np.percentile(1 - values[draws].mean(axis=1), [2.5, 97.5])
    row = first[0][first[0].model == "cnn"].iloc[0]
    assert (row.auc_lo, row.auc_hi) == pytest.approx((lo, hi))


def test_deposits_all_ranked_alike_give_a_point_and_no_draws_keep_the_t_interval() -> None:
    same = {f"d{i}": 0.1 for i in range(8)}
    shares = {"cnn": same, "dcn": dict(same)}
    summary, paired = _tables(shares)
    boot, boot_paired = deposit_bootstrap_intervals(
        summary, paired, shares, heldout_metrics, 100, 0
    )
    assert (boot.auc_lo == boot.auc_hi).all() and np.allclose(boot.auc_lo, 0.9)
    row = boot_paired[boot_paired.comparison == "DCN - CNN"].iloc[0]
    assert row.ci_lo == row.ci_hi == 0.0 and row.interval.startswith(DEPOSIT_INTERVAL)
    none, _ = deposit_bootstrap_intervals(summary, paired, shares, heldout_metrics, 0, 0)
    assert (none["interval"] == SEED_INTERVAL).all()
    assert none.auc_lo.equals(summary.auc_lo)


def test_the_report_shows_the_one_seed_bootstrap_and_names_it() -> None:
    from gkdcn.report.tables import protocol_sections

    shares = {"cnn": _shares(1), "random-forest": _shares(1, shift=0.05)}
    summary, paired = _tables(shares)
    plain = {"summary": summary.to_dict("records"), "paired": paired.to_dict("records")}
    boot, boot_paired = deposit_bootstrap_intervals(
        summary, paired, shares, heldout_metrics, 200, 0
    )
    block = {"summary": boot.to_dict("records"), "paired": boot_paired.to_dict("records")}
    [before] = protocol_sections({"lodo": plain}, ["cnn", "random-forest"], 1)
    [after] = protocol_sections({"lodo": block}, ["cnn", "random-forest"], 1)
    assert all(cell["ci"] == "" for row in before["rows"] for cell in row["cells"])
    assert all(cell["ci"] for row in after["rows"] for cell in row["cells"])
    assert "bootstrap over held-out deposits" in after["text"]
    assert "bootstrap" not in before["text"]
    assert before["paired"][0]["verdict"] == "1 seed: no interval"
    assert after["paired"][0]["ci"] and after["paired"][0]["verdict"] == "CNN better"
