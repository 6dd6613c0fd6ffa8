"""Statistics over seeds: means with t-intervals, and paired differences between models.

With one seed a t-interval over seeds is a point ("+0.012 [+0.012, +0.012]"); held-out tables
then get a percentile bootstrap over the held-out deposits instead
(:func:`deposit_bootstrap_intervals`), and their ``interval`` column says which it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    for name, members in comparison_pairs():
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


def comparison_pairs() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every paired comparison: its name and the (first, second) model pairs it averages."""
    pairs = [(name, [(a, b)]) for name, a, b in PAIRS]
    pairs.append(("GK - no GK", [("gk-cnn", "cnn"), ("gk-dcn", "dcn")]))
    pairs += [
        (pair_name(net, base), [(net, base)])
        for net in registry.names("network")
        for base in registry.names("baseline")
    ]
    return pairs


#: The ``interval`` column's words for the two kinds of interval.
SEED_INTERVAL = "t-interval over seeds"
DEPOSIT_INTERVAL = "bootstrap over held-out deposits"


def deposit_bootstrap_intervals(
    summary: pd.DataFrame,
    paired: pd.DataFrame,
    shares: Mapping[str, Mapping[str, float]],
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One seed's held-out ``summary`` and ``paired`` tables with percentile bootstrap
    intervals over the held-out deposits in place of the (point) t-intervals over seeds.

    ``shares[model][site_id]`` is each held-out deposit's area share (its rank among background
    cells); ``statistic(shares)`` gives the held-out metrics of an array of shares
    (:func:`gkdcn.compare.heldout.heldout_metrics`). Each of ``n_boot`` draws resamples the
    deposits with replacement (seeded by ``seed``), the same draws for every model, so a paired
    difference is resampled by deposit: the AUC difference of two models is the mean of their
    paired share differences. Metrics ``statistic`` does not give keep their intervals. Both
    tables gain an ``interval`` column saying which interval each row has.
    """
    summary, paired = summary.copy(), paired.copy()
    summary["interval"] = SEED_INTERVAL
    if len(paired):
        paired["interval"] = SEED_INTERVAL
    models = [m for m in summary["model"] if m in shares and len(shares[m])]
    if n_boot < 1 or not models:
        return summary, paired
    sites = sorted(set.intersection(*(set(shares[m]) for m in models)))
    if not sites:
        return summary, paired
    values = {m: np.array([shares[m][s] for s in sites], dtype=float) for m in models}
    draws = np.random.default_rng([seed, 43]).integers(0, len(sites), size=(n_boot, len(sites)))
    tail = 100 * (1 - level) / 2
    for m in models:
        boot = [statistic(values[m][d]) for d in draws]
        i = summary.index[summary["model"] == m][0]
        for metric in boot[0]:
            if f"{metric}_lo" not in summary:
                continue
            lo, hi = np.percentile([b[metric] for b in boot], [tail, 100 - tail])
            summary.loc[i, [f"{metric}_lo", f"{metric}_hi"]] = [float(lo), float(hi)]
        summary.loc[i, "interval"] = f"{DEPOSIT_INTERVAL} ({len(sites)}, {n_boot} draws)"
    members_of = dict(comparison_pairs())
    for i, row in paired.iterrows():
        members = members_of.get(str(row["comparison"]), [])
        if row["metric"] != "auc" or not all(a in values and b in values for a, b in members):
            continue
        # AUC = 1 - mean share: first - second = mean(second's share - first's share).
        diff = np.mean([values[b] - values[a] for a, b in members], axis=0)
        boot = diff[draws].mean(axis=1)
        lo, hi = np.percentile(boot, [tail, 100 - tail])
        paired.loc[i, ["ci_lo", "ci_hi"]] = [float(lo), float(hi)]
        paired.loc[i, "interval"] = f"{DEPOSIT_INTERVAL} ({len(sites)}, {n_boot} draws)"
    return summary, paired


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
