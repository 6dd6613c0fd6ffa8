"""What a collected run writes: CSV tables, seed-mean maps, figures and ``summary.json``.

A new output of the comparison goes here (written from a :class:`Comparison`, its path named
in :class:`~gkdcn.compare.layout.RunLayout`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gkdcn.compare.heldout import heldout_shares
from gkdcn.compare.layout import MAPS_FIGURE, RunLayout, curve_figure_name
from gkdcn.compare.plan import Plan
from gkdcn.compare.protocols import PROTOCOL_TITLES, fold_scheme, is_heldout
from gkdcn.compare.results import Comparison
from gkdcn.compare.stats import best_network_against_best_baseline
from gkdcn.data.study import Study, build_samples, summarize
from gkdcn.evaluate import evaluate_map
from gkdcn.figures import (
    heldout_success_curves,
    map_panels,
    plot_prediction_area,
    plot_roc,
    plot_success_rate,
    save_figure,
)
from gkdcn.io.atomic import atomic_path, write_text
from gkdcn.io.jsonsafe import json_safe
from gkdcn.io.rasters import read_probability_map, write_probability_map
from gkdcn.models import registry
from gkdcn.models.bundle import now_iso


def mean_maps(layout: RunLayout, plan: Plan) -> dict[str, np.ndarray]:
    """Seed-mean probability map of each model under the authors' protocol (NaN: no data)."""
    maps: dict[str, np.ndarray] = {}
    if "authors" not in plan.protocols:
        return maps
    for model in plan.models:
        stack = [read_probability_map(layout.probability(model, seed))[0] for seed in plan.seeds]
        maps[model] = np.mean(stack, axis=0)
    return maps


def write_outputs(comparison: Comparison, study: Study) -> None:
    """Tables (CSV + JSON), seed-mean maps (GeoTIFF) and figures of a collected run."""
    layout = comparison.layout
    for protocol in comparison.plan.protocols:
        for name, frame in (
            ("runs", comparison.runs[protocol]),
            ("summary", comparison.summary[protocol]),
            ("paired", comparison.paired[protocol]),
        ):
            with atomic_path(layout.table(protocol, name), overwrite=True) as tmp:
                frame.to_csv(tmp, index=False)
        ensemble = comparison.ensemble.get(protocol)
        if ensemble is not None and len(ensemble):
            with atomic_path(layout.table(protocol, "ensemble"), overwrite=True) as tmp:
                ensemble.to_csv(tmp, index=False)
        calibration = comparison.calibration.get(protocol)
        if calibration is not None and len(calibration):
            with atomic_path(layout.table(protocol, "calibration"), overwrite=True) as tmp:
                calibration.to_csv(tmp, index=False)
        selection = comparison.selection.get(protocol)
        if selection is not None and len(selection):
            with atomic_path(layout.table(protocol, "selection"), overwrite=True) as tmp:
                selection.to_csv(tmp, index=False)
    maps = mean_maps(layout, comparison.plan)
    for model, prob in maps.items():
        write_probability_map(
            layout.mean_map(model),
            prob,
            study.grid,
            descriptions=[f"{model} probability (mean of {len(comparison.plan.seeds)} seeds)"],
            overwrite=True,
        )
    comparison_figures(comparison, study, maps)
    samples, splits = build_samples(study)
    summary = {
        "finished": now_iso(),
        "seconds": round(comparison.seconds, 1),
        "plan": comparison.plan.to_dict(),
        "data": summarize(study, samples, splits),
        "protocols": {
            p: {
                "title": PROTOCOL_TITLES[p],
                "folds": fold_scheme(p, study, samples),
                "summary": comparison.summary[p].to_dict(orient="records"),
                "paired": comparison.paired[p].to_dict(orient="records"),
                "baseline_check": best_network_against_best_baseline(
                    comparison.summary[p], comparison.paired[p]
                ),
                **(
                    {"calibration": comparison.calibration[p].to_dict(orient="records")}
                    if len(comparison.calibration.get(p, ()))
                    else {}
                ),
                **(
                    {"selection": comparison.selection[p].to_dict(orient="records")}
                    if len(comparison.selection.get(p, ()))
                    else {}
                ),
                **(
                    {"ensemble": comparison.ensemble[p].to_dict(orient="records")}
                    if len(comparison.ensemble.get(p, ()))
                    else {}
                ),
                **(
                    {"chosen_layers": comparison.chosen_layers[p]}
                    if comparison.chosen_layers.get(p)
                    else {}
                ),
            }
            for p in comparison.plan.protocols
        },
    }
    write_text(layout.summary_json, json.dumps(json_safe(summary), indent=2), overwrite=True)


def comparison_figures(
    comparison: Comparison, study: Study, maps: dict[str, np.ndarray]
) -> dict[str, Path]:
    """All figures of a comparison run into its figures folder; returns name -> path."""
    layout = comparison.layout
    written: dict[str, Path] = {}
    deposits = study.sites.deposits()
    dep_xy = study.grid.xy(deposits.rows, deposits.cols)
    if maps:
        fig = map_panels(
            maps,
            study.grid,
            deposits_xy=dep_xy,
            faults=study.faults,
            ncols=4 if len(maps) > 4 else None,  # networks on one row, baselines on the next
        )
        fig.suptitle("Mean probability over seeds (authors' protocol)")
        written["maps"] = save_figure(fig, layout.figure(MAPS_FIGURE))
        evaluations = {
            registry.label(m): evaluate_map(
                np.nan_to_num(p, nan=0.0), study.valid, deposits.rows, deposits.cols, n_boot=0
            )
            for m, p in maps.items()
        }
        written["roc"] = save_figure(
            plot_roc(evaluations), layout.figure(curve_figure_name("roc", "authors"))
        )
        written["success"] = save_figure(
            plot_success_rate(evaluations),
            layout.figure(curve_figure_name("success_rate", "authors")),
        )
        best = "GK-DCN" if "GK-DCN" in evaluations else next(iter(evaluations))
        written["pa"] = save_figure(
            plot_prediction_area(evaluations[best], title=f"{best}, authors' protocol"),
            layout.figure(curve_figure_name("prediction_area", "authors")),
        )
    for protocol in comparison.plan.protocols:
        if not is_heldout(protocol):
            continue
        shares = {
            model: heldout_shares(layout, protocol, model, comparison.plan.seeds)
            for model in comparison.plan.models
        }
        title = "Leave-one-deposit-out" if protocol == "lodo" else "Spatial blocks"
        fig = heldout_success_curves(shares, f"{title}\nheld-out deposits, all seeds pooled")
        written[f"success_{protocol}"] = save_figure(
            fig, layout.figure(curve_figure_name("success_rate", protocol))
        )
    return written
