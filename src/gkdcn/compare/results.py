"""Reading the finished jobs of a run back into per-protocol tables (:class:`Comparison`)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gkdcn.compare.heldout import (
    CALIBRATION_METRICS,
    HELDOUT_METRICS,
    ensemble_shares,
    heldout_calibration,
    heldout_metrics,
    heldout_shares,
    reliability_table,
)
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.plan import Plan
from gkdcn.compare.protocols import is_heldout
from gkdcn.compare.stats import (
    TIE,
    deposit_bootstrap_intervals,
    mean_ci,
    paired_differences,
    summarize_over_seeds,
)
from gkdcn.models import registry

AUTHORS_METRICS = ("accuracy", "auc", "kappa", "mcc", "precision", "recall", "f1")


@dataclass
class Comparison:
    """Everything a finished run produced, as tables (also written to disk)."""

    out_dir: Path
    plan: Plan
    runs: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # protocol -> one row per model x seed
    summary: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # protocol -> mean and CI per model
    paired: dict[str, pd.DataFrame] = field(default_factory=dict)  # protocol -> paired differences
    # held-out protocol -> reliability per model and probability bin, with the share of area
    # above p = 0.5 and 0.9 (empty for models whose folds recorded no calibration)
    calibration: dict[str, pd.DataFrame] = field(default_factory=dict)
    # held-out protocol -> one row per model: its seed ensemble against its single seeds
    # (:func:`ensemble_table`; empty with one seed)
    ensemble: dict[str, pd.DataFrame] = field(default_factory=dict)
    # held-out protocol -> per model and seed, the epochs chosen inside the folds
    # (:func:`selection_table`; empty unless [train] select_epochs is on)
    selection: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Per protocol, the layer each one-layer baseline chose: model -> layer -> jobs that chose it
    chosen_layers: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def layout(self) -> RunLayout:
        """The run folder's paths."""
        return RunLayout(self.out_dir)


def collect(layout: RunLayout | Path, plan: Plan) -> Comparison:
    """Read every finished job of the plan back into tables."""
    layout = layout if isinstance(layout, RunLayout) else RunLayout(Path(layout))
    comparison = Comparison(out_dir=layout.root, plan=plan)
    for protocol in plan.protocols:
        rows = []
        for model in plan.models:
            for seed in plan.seeds:
                if not is_heldout(protocol):
                    res = json.loads(layout.result(protocol, model, seed).read_text())
                    metrics = res["metrics"]
                    rows.append(
                        {"model": model, "seed": seed}
                        | {m: metrics[m] for m in AUTHORS_METRICS}
                        | {
                            "auc_ci_lo": metrics["auc_ci"][0],
                            "auc_ci_hi": metrics["auc_ci"][1],
                            "success_auc": metrics["success_auc"],
                            "threshold": metrics["threshold"],
                        }
                    )
                else:
                    shares = heldout_shares(layout, protocol, model, [seed])
                    row = {"model": model, "seed": seed} | heldout_metrics(shares)
                    folds = heldout_calibration(layout, protocol, model, [seed])
                    if folds:
                        row |= {
                            m: float(np.mean([f[m] for f in folds])) for m in CALIBRATION_METRICS
                        }
                    rows.append(row)
        runs = pd.DataFrame(rows)
        held = is_heldout(protocol)
        metric_names = HELDOUT_METRICS if held else (*AUTHORS_METRICS, "success_auc")
        if held:
            metric_names = (*metric_names, *(m for m in CALIBRATION_METRICS if m in runs))
        comparison.runs[protocol] = runs
        comparison.summary[protocol] = summarize_over_seeds(runs, list(metric_names))
        paired_metrics = ["auc"] if held else ["auc", "success_auc"]
        comparison.paired[protocol] = paired_differences(runs, paired_metrics)
        if held and len(plan.seeds) == 1:
            # One seed: no spread over seeds to show; resample the held-out deposits instead.
            seed = plan.seeds[0]
            comparison.summary[protocol], comparison.paired[protocol] = deposit_bootstrap_intervals(
                comparison.summary[protocol],
                comparison.paired[protocol],
                {m: site_shares(layout, protocol, m, seed) for m in plan.models},
                heldout_metrics,
                n_boot=plan.bootstrap,
                seed=seed,
            )
        if held:
            comparison.calibration[protocol] = calibration_table(layout, protocol, plan)
            comparison.ensemble[protocol] = ensemble_table(layout, protocol, plan)
            comparison.selection[protocol] = selection_table(layout, protocol, plan)
        comparison.chosen_layers[protocol] = chosen_layers(layout, protocol, plan)
    return comparison


def chosen_layers(layout: RunLayout, protocol: str, plan: Plan) -> dict[str, dict[str, int]]:
    """Per baseline that picks one layer: how many of its jobs (folds x seeds) chose each.

    A baseline picks one layer when its ``result.json`` records a ``layer`` (as the ``element``
    baseline's does); the layers most often chosen come first, other baselines are left out.
    """
    out: dict[str, dict[str, int]] = {}
    for model in plan.models:
        if not registry.is_baseline(model):
            continue
        counts: dict[str, int] = {}
        for seed in plan.seeds:
            paths = layout.fold_results(protocol, model, seed) or [
                layout.result(protocol, model, seed)
            ]
            for path in paths:
                with contextlib.suppress(OSError, ValueError):
                    layer = json.loads(path.read_text()).get("layer")
                    if layer:
                        counts[str(layer)] = counts.get(str(layer), 0) + 1
        if counts:
            out[model] = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return out


def selection_table(layout: RunLayout, protocol: str, plan: Plan) -> pd.DataFrame:
    """Per model and seed, the epochs its folds chose inside the fold.

    From ``result.json``'s ``selection``: folds, mean, least and most chosen epochs, and the
    pooled inner AUC at the chosen epoch averaged over folds. Empty when no fold selected its
    epochs.
    """
    rows = []
    for model in plan.models:
        for seed in plan.seeds:
            chosen, inner = [], []
            for fold_result in layout.fold_results(protocol, model, seed):
                selection = json.loads(fold_result.read_text()).get("selection")
                if not selection or "chosen_epoch" not in selection:
                    continue
                chosen.append(int(selection["chosen_epoch"]))
                at = selection["epochs"].index(selection["chosen_epoch"])
                inner.append(float(selection["inner_auc"][at]))
            if chosen:
                rows.append(
                    {
                        "model": model,
                        "seed": seed,
                        "method": plan.train.select_epochs,
                        "folds": len(chosen),
                        "epochs_mean": float(np.mean(chosen)),
                        "epochs_min": min(chosen),
                        "epochs_max": max(chosen),
                        "epochs_configured": plan.train.epochs,
                        "inner_auc": float(np.mean(inner)),
                    }
                )
    return pd.DataFrame(rows)


def site_shares(layout: RunLayout, protocol: str, model: str, seed: int) -> dict[str, float]:
    """Each held-out deposit's area share for ``model`` and ``seed``, by site id."""
    out: dict[str, float] = {}
    for fold_result in layout.fold_results(protocol, model, seed):
        for h in json.loads(fold_result.read_text())["heldout"]:
            out[str(h["site_id"])] = float(h["area_share"])
    return out


def ensemble_table(layout: RunLayout, protocol: str, plan: Plan) -> pd.DataFrame:
    """Each model's seed ensemble against its single seeds.

    The ensemble is the mean of the seeds' probabilities per cell, ranked like a single model
    (:func:`~gkdcn.compare.heldout.ensemble_shares`).

    ``auc`` / ``capture_top15`` are the ensemble's, ``single_*`` the mean over seeds;
    ``auc_difference`` = ensemble - single-seed mean, paired by held-out deposit, with a
    t-interval over deposits (``ci_lo``, ``ci_hi``) and the deposits each side ranks higher.
    Empty with fewer than two seeds; a model whose folds stored no background scores is left
    out.
    """
    if len(plan.seeds) < 2:
        return pd.DataFrame()
    rows = []
    for model in plan.models:
        shares = ensemble_shares(layout, protocol, model, plan.seeds)
        if shares is None:
            continue
        ensemble, single = shares
        diffs = single - ensemble  # a smaller share is a higher rank: > 0, the ensemble is better
        mean, lo, hi = mean_ci(diffs, bounds=(-1.0, 1.0))
        ens = heldout_metrics(ensemble)
        per_seed = [
            heldout_metrics(heldout_shares(layout, protocol, model, [s])) for s in plan.seeds
        ]
        rows.append(
            {
                "model": model,
                "kind": "baseline" if registry.is_baseline(model) else "network",
                "seeds": len(plan.seeds),
                "deposits": len(ensemble),
                "auc": ens["auc"],
                "capture_top15": ens["capture_top15"],
                "single_auc": float(np.mean([m["auc"] for m in per_seed])),
                "single_capture_top15": float(np.mean([m["capture_top15"] for m in per_seed])),
                "auc_difference": mean,
                "ci_lo": lo,
                "ci_hi": hi,
                "deposits_ensemble_better": int(np.sum(diffs > TIE)),
                "deposits_single_better": int(np.sum(diffs < -TIE)),
            }
        )
    return pd.DataFrame(rows)


def calibration_table(layout: RunLayout, protocol: str, plan: Plan) -> pd.DataFrame:
    """Held-out reliability of every model, and its map's area above p = 0.5 and p = 0.9.

    All seeds and folds are pooled; the shares are the mean share of valid area each fold's map puts
    above p = 0.5 and p = 0.9.
    """
    frames = []
    for model in plan.models:
        folds = heldout_calibration(layout, protocol, model, plan.seeds)
        if not folds:
            continue
        table = reliability_table(folds)
        table.insert(0, "model", model)
        table["area_above_0.5"] = float(np.mean([f["area_above_0.5"] for f in folds]))
        table["area_above_0.9"] = float(np.mean([f["area_above_0.9"] for f in folds]))
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
