"""Statistics over seeds: means with t-intervals, and paired differences between models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gkdcn.models import registry

# Natural range of each metric; intervals over few seeds are clipped to it.
METRIC_RANGE = {"kappa": (-1.0, 1.0), "mcc": (-1.0, 1.0)}
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("GK-DCN - CNN", "gk-dcn", "cnn"),
    ("DCN - CNN", "dcn", "cnn"),
    ("GK-DCN - DCN", "gk-dcn", "dcn"),
    ("GK-CNN - CNN", "gk-cnn", "cnn"),
)
TIE = 1e-12


def pair_name(first: str, second: str) -> str:
    """The comparison's name in the paired table, e.g. ``GK-DCN - knowledge``."""
    return f"{registry.label(first)} - {registry.label(second)}"


def mean_ci(
    values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and a t-interval over seeds (a point when there is one value or no spread).

    ``bounds`` clips the interval to the metric's natural range: with two or three seeds a
    t-interval is wide enough to leave it.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.allclose(values, values[0]):
        return mean, mean, mean
    lo, hi = stats.t.interval(
        level, len(values) - 1, loc=mean, scale=values.std(ddof=1) / np.sqrt(len(values))
    )
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, float(lo), float(hi)


def summarize_over_seeds(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, SD and 95 % CI over seeds of each metric, one row per model.

    ``kind`` says whether the model is a ``network`` or a ``baseline``.
    """
    rows = []
    for model, group in runs.groupby("model", sort=False):
        kind = "baseline" if registry.is_baseline(str(model)) else "network"
        row: dict[str, Any] = {"model": model, "kind": kind, "seeds": len(group)}
        for m in metrics:
            mean, lo, hi = mean_ci(group[m].to_numpy(), bounds=METRIC_RANGE.get(m, (0.0, 1.0)))
            row[f"{m}_mean"] = mean
            row[f"{m}_sd"] = float(group[m].std(ddof=1)) if len(group) > 1 else 0.0
            row[f"{m}_lo"] = lo
            row[f"{m}_hi"] = hi
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per-seed differences between models trained on the same split and seed, with CIs.

    "GK - no GK" averages the two like-for-like knowledge effects (GK-CNN - CNN, GK-DCN - DCN).
    Every network present is also paired with every baseline present (``GK-DCN - knowledge``).
    """
    by_model = {m: g.set_index("seed").sort_index() for m, g in runs.groupby("model")}
    rows = []
    pairs = [(name, [(a, b)]) for name, a, b in PAIRS]
    pairs.append(("GK - no GK", [("gk-cnn", "cnn"), ("gk-dcn", "dcn")]))
    pairs += [
        (pair_name(net, base), [(net, base)])
        for net in registry.names("network")
        for base in registry.names("baseline")
    ]
    for name, members in pairs:
        if not all(a in by_model and b in by_model for a, b in members):
            continue
        for metric in metrics:
            diffs = np.mean(
                [
                    by_model[a][metric].to_numpy() - by_model[b][metric].to_numpy()
                    for a, b in members
                ],
                axis=0,
            )
            mean, lo, hi = mean_ci(diffs, bounds=(-1.0, 1.0))
            rows.append(
                {
                    "comparison": name,
                    "metric": metric,
                    "mean_difference": mean,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "seeds_first_better": int(np.sum(diffs > TIE)),
                    "seeds_second_better": int(np.sum(diffs < -TIE)),
                    "seeds_tied": int(np.sum(np.abs(diffs) <= TIE)),
                    "differences": " ".join(f"{d:+.3f}" for d in diffs),
                }
            )
    return pd.DataFrame(rows)


def best_network_against_best_baseline(
    summary: pd.DataFrame, paired: pd.DataFrame, metric: str = "auc"
) -> dict[str, Any] | None:
    """The best network (highest mean ``metric``) against the best baseline, with their paired
    difference over seeds; None unless both networks and baselines were compared.

    Returns ``network``, ``baseline``, their means, and the paired row's ``mean_difference``,
    ``ci_lo``, ``ci_hi``, ``seeds_first_better``, ``seeds_second_better``; ``beats`` says
    whether the network is ahead on average and ``clear`` whether the interval excludes 0.
    """
    col = f"{metric}_mean"
    if col not in summary or paired is None or not len(paired):
        return None
    means = summary.set_index("model")[col]
    networks = [m for m in means.index if registry.is_network(m)]
    bases = [m for m in means.index if registry.is_baseline(m)]
    if not networks or not bases:
        return None
    net = max(networks, key=lambda m: float(means[m]))
    base = max(bases, key=lambda m: float(means[m]))
    row = paired[(paired["comparison"] == pair_name(net, base)) & (paired["metric"] == metric)]
    if not len(row):
        return None
    r = row.iloc[0]
    return {
        "metric": metric,
        "network": net,
        "baseline": base,
        "network_mean": float(means[net]),
        "baseline_mean": float(means[base]),
        "mean_difference": float(r["mean_difference"]),
        "ci_lo": float(r["ci_lo"]),
        "ci_hi": float(r["ci_hi"]),
        "seeds_first_better": int(r["seeds_first_better"]),
        "seeds_second_better": int(r["seeds_second_better"]),
        "beats": float(r["mean_difference"]) > TIE,
        "clear": float(r["ci_lo"]) > 0 or float(r["ci_hi"]) < 0,
    }
