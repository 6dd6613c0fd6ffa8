"""Rows of the report's tables (plain strings for the template) from a run's saved numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gkdcn.compare.layout import RunLayout
from gkdcn.models import registry
from gkdcn.report.formatting import TIE, as_float, coord, fmt_interval, fmt_number, model_label
from gkdcn.report.texts import (
    METRICS,
    PROTOCOL_TEXT,
    MetricInfo,
    baseline_sentence,
    ensemble_sentence,
    knowledge_text,
)

HELDOUT_PROTOCOLS = ("lodo", "blocks")


def protocol_sections(
    protocols: Mapping[str, Any], models: Sequence[str], n_seeds: int
) -> list[dict[str, Any]]:
    """Held-out protocols first (the honest numbers), then the authors' in-sample one."""
    order = [p for p in HELDOUT_PROTOCOLS if p in protocols]
    order += [p for p in protocols if p not in order and p != "authors"]
    order += ["authors"] if "authors" in protocols else []
    return [_protocol(name, protocols[name] or {}, models, n_seeds) for name in order]


def _protocol(
    name: str, block: Mapping[str, Any], models: Sequence[str], plan_seeds: int
) -> dict[str, Any]:
    records = [r for r in block.get("summary") or [] if isinstance(r, dict)]
    rank = {m: i for i, m in enumerate(models)}
    records.sort(key=lambda r: rank.get(str(r.get("model")), len(rank)))
    metric_keys: list[str] = []
    for record in records:
        for key in record:
            if key.endswith("_mean") and key[: -len("_mean")] not in metric_keys:
                metric_keys.append(key[: -len("_mean")])
    n_seeds = max((int(r.get("seeds") or plan_seeds) for r in records), default=plan_seeds)
    # One seed: a held-out table's intervals are a bootstrap over its deposits (``interval``).
    resampled = next((str(r["interval"]) for r in records if _over_deposits(r)), "")
    folds = str(block.get("folds") or "")
    if resampled and folds and not folds.endswith("."):
        folds += "."  # a sentence follows
    rows = []
    for metric in metric_keys:
        info = METRICS.get(metric, MetricInfo(metric, ""))
        means = [as_float(r.get(f"{metric}_mean")) for r in records]
        present = [m for m in means if m is not None]
        best_value = None
        if len(present) > 1 and max(present) - min(present) > TIE:
            best_value = max(present) if info.higher_is_better else min(present)
        cells = []
        for record, mean in zip(records, means, strict=True):
            seeds = int(record.get("seeds") or plan_seeds)
            cells.append(
                {
                    "mean": fmt_number(mean, percent=info.percent),
                    "ci": fmt_interval(
                        record.get(f"{metric}_lo"), record.get(f"{metric}_hi"), percent=info.percent
                    )
                    if seeds > 1 or _over_deposits(record)
                    else "",
                    "best": best_value is not None
                    and mean is not None
                    and abs(mean - best_value) <= TIE,
                }
            )
        rows.append(
            {
                "key": metric,
                "label": info.title,
                "help": info.help,
                "better": "higher is better" if info.higher_is_better else "lower is better",
                "cells": cells,
            }
        )
    return {
        "name": name,
        "anchor": f"protocol-{re.sub(r'[^a-z0-9]+', '-', name.lower())}",
        "title": str(block.get("title") or name),
        "in_sample": name == "authors",
        # The fold scheme used (e.g. grouped deposit folds for many deposits), from summary.json.
        "text": " ".join(
            t
            for t in (
                PROTOCOL_TEXT.get(name, ""),
                folds,
                f"With one seed, the 95 % intervals are a {resampled}." if resampled else "",
                selection_sentence(block.get("selection") or []),
                layers_sentence(block.get("chosen_layers") or {}),
            )
            if t
        ),
        "models": [model_label(str(r.get("model"))) for r in records],
        "baseline_columns": [registry.is_baseline(str(r.get("model"))) for r in records],
        "baseline_sentence": baseline_sentence(
            block.get("baseline_check"), in_sample=name == "authors"
        ),
        "ensemble_sentence": ensemble_sentence(block.get("ensemble") or [], name),
        "seeds": n_seeds,
        "rows": rows,
        "paired": paired_rows(block.get("paired") or []),
    }


def layers_sentence(chosen: Mapping[str, Any]) -> str:
    """Which layer each one-layer baseline chose (``summary.json``'s ``chosen_layers``)."""
    parts = []
    for model, layers in chosen.items():
        if not isinstance(layers, Mapping):
            continue
        counts = {str(k): int(v) for k, v in layers.items() if isinstance(v, int | float)}
        total = sum(counts.values())
        if not total:
            continue
        if len(counts) == 1:
            parts.append(f"{model_label(str(model))} chose {next(iter(counts))} in every fit")
        else:
            shown = ", ".join(f"{layer} ({n} of {total} fits)" for layer, n in counts.items())
            parts.append(f"{model_label(str(model))} chose {shown}")
    if not parts:
        return ""
    return "Layers chosen on each fold's training deposits: " + "; ".join(parts) + "."


def selection_sentence(records: Sequence[Any]) -> str:
    """One sentence on the epochs the networks' folds chose inside the fold.

    From ``summary.json``'s ``selection`` rows, one per model and seed; empty without them.
    """
    rows = [r for r in records if isinstance(r, dict) and r.get("epochs_mean") is not None]
    if not rows:
        return ""
    parts = []
    for model in dict.fromkeys(str(r.get("model")) for r in rows):
        mine = [r for r in rows if str(r.get("model")) == model]
        mean = sum(float(r["epochs_mean"]) for r in mine) / len(mine)
        low = min(int(r["epochs_min"]) for r in mine)
        high = max(int(r["epochs_max"]) for r in mine)
        parts.append(f"{model_label(model)} {mean:.1f} on average ({low}-{high})")
    first = rows[0]
    return (
        f"Epochs chosen inside each fold ({first.get('method')}: by the held-out AUC of inner "
        f"folds of the fold's training deposits), of {first.get('epochs_configured')}: "
        + "; ".join(parts)
        + "."
    )


def _over_deposits(record: Mapping[str, Any]) -> bool:
    """Whether a table row's interval is a bootstrap over held-out deposits (one seed)."""
    return str(record.get("interval", "")).startswith("bootstrap")


def paired_rows(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the paired-differences table, each with its verdict in words."""
    rows = []
    for record in records:
        if not isinstance(record, dict):
            continue
        metric = str(record.get("metric", ""))
        info = METRICS.get(metric, MetricInfo(metric, ""))
        first = int(record.get("seeds_first_better") or 0)
        second = int(record.get("seeds_second_better") or 0)
        tied = int(record.get("seeds_tied") or 0)
        n = first + second + tied
        comparison = str(record.get("comparison", ""))
        a, _, b = comparison.partition(" - ")
        lo, hi = as_float(record.get("ci_lo")), as_float(record.get("ci_hi"))
        mean = as_float(record.get("mean_difference"))
        resampled = _over_deposits(record)
        if n < 2 and not resampled:
            verdict, tone = "1 seed: no interval", "muted"
        elif lo is None or hi is None or mean is None:
            verdict, tone = "no interval", "muted"
        elif lo <= 0.0 <= hi:
            verdict, tone = "no demonstrated difference", "muted"
        else:
            positive_is_first = (lo > 0) == info.higher_is_better
            verdict, tone = f"{a if positive_is_first else b} better", "strong"
        rows.append(
            {
                "comparison": comparison,
                "metric": info.label + (" (% points)" if info.percent else ""),
                "mean": fmt_number(mean, percent=info.percent, signed=True),
                "ci": fmt_interval(lo, hi, percent=info.percent, signed=True)
                if n > 1 or resampled
                else "",
                "first": first,
                "second": second,
                "tied": tied,
                "first_name": a or "first",
                "second_name": b or "second",
                "differences": str(record.get("differences", "")),
                "verdict": verdict,
                "tone": tone,
            }
        )
    return rows


def data_rows(
    data: Mapping[str, Any], config: Mapping[str, Any], layout: RunLayout
) -> list[tuple[str, str]]:
    """The report's data rows (label, text): grid, cells, layers, sites, windows, knowledge."""
    rows: list[tuple[str, str]] = []
    shape = data.get("shape")
    if isinstance(shape, list) and len(shape) == 2:
        rows.append(("Grid", f"{shape[0]} rows × {shape[1]} columns"))
    elif data.get("grid"):
        rows.append(("Grid", str(data["grid"])))
    cell = data.get("cell_size")
    if isinstance(cell, list) and len(cell) == 2:
        rows.append(("Cell size", f"{cell[0]:g} × {cell[1]:g} map units"))
    if data.get("crs") is not None or "crs" in data:
        rows.append(("CRS", str(data.get("crs") or "none")))
    origin = _origin(layout, data)
    if origin:
        rows.append(("Origin (upper-left corner)", origin))
    layers = data.get("layers") or []
    if layers:
        rows.append(("Element layers", f"{len(layers)} (listed below)"))
    if "valid_cells" in data and "cells" in data:
        valid, cells = int(data["valid_cells"]), int(data["cells"])
        share = 100 * valid / cells if cells else 0.0
        rows.append(("Valid cells", f"{valid:,} of {cells:,} ({share:.1f} %)"))
    if "deposits" in data:
        text = f"{data['deposits']} deposits, {data.get('non_deposits', 0)} non-deposits"
        skipped = int(data.get("skipped_sites") or 0)
        text += f"; {skipped} skipped (off the grid or on invalid cells)" if skipped else ""
        rows.append(("Sites kept", text))
    sites = config.get("sites") or {}
    negatives = sites.get("negatives") if isinstance(sites, dict) else None
    if isinstance(negatives, dict) and negatives.get("count") is not None:
        rows.append(
            (
                "Non-deposit sampling",
                f"{negatives['count']} random cells at least {negatives.get('min_distance', 0):g} "
                f"map units from any deposit (seed {negatives.get('seed', 0)})",
            )
        )
    samples = data.get("samples")
    window = config.get("samples") or {}
    if isinstance(samples, dict):
        text = (
            f"{samples.get('total', 0):,} windows ({samples.get('positive', 0):,} deposit, "
            f"{samples.get('negative', 0):,} non-deposit)"
        )
        rows.append(("Training windows", text))
    if isinstance(window, dict) and window:
        aug = [a for a in ("rotations", "flips") if window.get(a)]
        rows.append(
            (
                "Window",
                f"{window.get('window', '?')} × {window.get('window', '?')} cells, "
                f"{window.get('padding', 'zero')} padding at the map edge, shifted by up to "
                f"{window.get('shift', 0)} cells around each site"
                + (f", augmented with {' and '.join(aug)}" if aug else ", no augmentation"),
            )
        )
    transform = config.get("transform") or {}
    if isinstance(transform, dict) and transform:
        method = {"clr": "centred log-ratio (CLR)", "log": "log", "none": "none"}.get(
            str(transform.get("method")), str(transform.get("method"))
        )
        scaling = str(transform.get("scaling", "none"))
        rows.append(
            (
                "Transforms",
                f"{method}, then {scaling} scaling per element (fitted on training windows only)"
                if scaling != "none"
                else f"{method}, no scaling",
            )
        )
    rows.append(("Geological knowledge", knowledge_text(data.get("knowledge"), config)))
    return rows


def _origin(layout: RunLayout, data: Mapping[str, Any]) -> str | None:
    """Upper-left corner from a map GeoTIFF's header, else from the grid description."""
    for tif in layout.mean_maps():
        try:
            import rasterio

            with rasterio.open(tif) as src:
                return f"x = {coord(src.transform.c)}, y = {coord(src.transform.f)}"
        except Exception:  # a damaged map must not stop the report
            continue
    match = re.search(r"origin \(([^)]*)\)", str(data.get("grid", "")))
    return match.group(1) if match else None


def plan_rows(plan: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The report's settings rows (label, text): models, seeds, protocols, training, bootstrap."""
    rows = []
    if plan.get("models"):
        rows.append(("Models", ", ".join(model_label(str(m)) for m in plan["models"])))
    seeds = plan.get("seeds") or []
    if seeds:
        rows.append(("Seeds", f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"))
    if plan.get("protocols"):
        rows.append(("Protocols", ", ".join(str(p) for p in plan["protocols"])))
    train = plan.get("train") or {}
    if isinstance(train, dict) and train:
        parts = [f"{train.get('epochs', '?')} epochs"]
        if train.get("patience"):
            parts.append(f"early stopping after {train['patience']} epochs without improvement")
        for key, label in (
            ("batch_size", "batch"),
            ("lr", "learning rate"),
            ("weight_decay", "weight decay"),
            ("width", "width"),
            ("dropout", "dropout"),
            ("head", "head"),
        ):
            if train.get(key) is not None:
                parts.append(f"{label} {train[key]}")
        if train.get("precision") == "bfloat16":
            parts.append("bfloat16 mixed precision")
        elif train.get("precision"):
            parts.append(f"{train['precision']} arithmetic")
        if train.get("gk_loss"):
            parts.append(
                f"GK models: {train['gk_loss']} knowledge loss, λ = {train.get('gk_lambda', '?')}"
            )
        rows.append(("Training", ", ".join(parts)))
    if plan.get("bootstrap") is not None:
        rows.append(("Bootstrap resamples", str(plan["bootstrap"])))
    if "background_sample" in plan:
        sample = plan.get("background_sample")
        rows.append(
            (
                "Held-out background cells",
                (
                    "all valid non-deposit cells"
                    if sample is None
                    else f"a seeded sample of {sample:,}"
                )
                + (
                    f", one draw (seed {plan['heldout_background_seed']}) for every seed"
                    if "heldout_background_seed" in plan
                    else ", drawn once per seed (an older run)"
                ),
            )
        )
    if plan.get("quick"):
        rows.append(("Quick run", "yes (shortened settings: for trying the tool, not for results)"))
    return rows
