"""One self-contained HTML report of a comparison run folder (``gkdcn report RUN_DIR``).

:func:`build_report` reads what :func:`gkdcn.compare.run_comparison` wrote (``run.json``,
``summary.json``, ``figures/*.png``, ``maps/*.tif``) and, when present, the explanation folders
``RUN_DIR/explain/<model>/index.json`` written by :func:`gkdcn.explain.run.explain_model`, and
renders ``templates/report.html.j2`` into a single HTML file. Figures are embedded as base64 PNG
data URIs and the stylesheet is inline, so the file opens from disk or an e-mail attachment with
no network access. Optional parts (a protocol, the explanations, a figure) are left out, with a
line saying so, when the run does not have them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from gkdcn.errors import InputError
from gkdcn.config import MODEL_LABELS
from gkdcn.io.atomic import check_writable, write_text

TEMPLATE = "report.html.j2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SITES = 4  # deposits shown per explained model
HELDOUT_PROTOCOLS = ("lodo", "blocks")
TIE = 1e-12


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, explained and shown."""

    label: str
    help: str
    higher_is_better: bool = True
    percent: bool = False  # a share in 0..1 shown as %
    unit: str = ""  # shown after the label

    @property
    def title(self) -> str:
        """The label with its unit."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


METRICS: dict[str, MetricInfo] = {
    "auc": MetricInfo(
        "ROC AUC",
        "chance that a deposit outranks a background cell (0.5 = random, 1 = perfect)",
    ),
    "success_auc": MetricInfo(
        "Success-rate AUC",
        "area under the success-rate curve (deposits captured against area, best cells first)",
    ),
    "accuracy": MetricInfo(
        "Accuracy",
        "share of cells classed correctly at the F1-optimal threshold; near 1 whenever deposits "
        "are rare, so it says little on its own",
    ),
    "kappa": MetricInfo("Cohen's kappa", "agreement with the deposit cells beyond chance"),
    "mcc": MetricInfo("MCC", "Matthews correlation of the thresholded map with the deposit cells"),
    "precision": MetricInfo(
        "Precision", "share of cells flagged prospective (above threshold) that are deposit cells"
    ),
    "recall": MetricInfo("Recall", "share of deposit cells that are flagged prospective"),
    "f1": MetricInfo("F1", "harmonic mean of precision and recall"),
    "area_50": MetricInfo(
        "Area for 50 % of deposits",
        "% of the valid area, best cells first, needed to capture half of the held-out deposits",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "area_80": MetricInfo(
        "Area for 80 % of deposits",
        "% of the valid area needed to capture 80 % of the held-out deposits",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "area_100": MetricInfo(
        "Area for all deposits",
        "% of the valid area needed to capture every held-out deposit",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "capture_top10": MetricInfo(
        "Deposits in the top 10 % of area",
        "% of held-out deposits ranked within the best 10 % of the valid area",
        percent=True,
        unit="% of deposits",
    ),
}

PROTOCOL_TEXT = {
    "lodo": (
        "Leave one deposit out. For each deposit in turn, the models are trained without it "
        "(and without any window near it), then asked how highly they rank that deposit "
        "against background cells that no model trained on. Every deposit is scored by a model "
        "that never saw it, "
        "so these numbers estimate how well a model would point at an undiscovered deposit."
    ),
    "blocks": (
        "Spatial-block cross-validation. The map is cut into blocks; each fold holds out whole "
        "blocks, trains on the rest and ranks the held-out deposits against background cells. "
        "Deposits are scored by models that never saw them nor their neighbourhood."
    ),
    "authors": (
        "The authors' protocol, kept to reproduce the paper. Training windows are split at "
        "random, so windows of every deposit are used for training, and the whole map is then "
        "scored against those same deposits. These numbers are in-sample: they show how well "
        "a model fits the known deposits, not how well it finds new ones."
    ),
}

FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "roc_authors.png": (
        "ROC curves (authors' protocol, in-sample)",
        "True-positive rate (share of deposit cells) against false-positive rate (share of "
        "background cells) as the probability threshold is lowered, for each model's seed-mean "
        "map. The dashed diagonal is a random map. All deposits were used in training.",
    ),
    "success_rate_authors.png": (
        "Success-rate curves (authors' protocol, in-sample)",
        "Share of deposits captured against share of the valid area, taking cells from the "
        "highest probability down. A curve that rises steeply at the left puts the deposits in "
        "a small area. All deposits were used in training.",
    ),
    "prediction_area_authors.png": (
        "Prediction–area plot (authors' protocol, in-sample)",
        "Prediction rate (share of deposits above a threshold, left axis) and occupied area "
        "(share of the map above it, right axis) against the probability threshold. Where the "
        "curves cross, X % of the deposits lie in (100 − X) % of the area: the higher the "
        "crossing, the more selective the map.",
    ),
    "success_rate_lodo.png": (
        "Success-rate curves (leave one deposit out, held-out)",
        "Each held-out deposit placed at the share of background area ranked at or above it by "
        "the model that did not see it, all seeds pooled. This is the curve to trust for "
        "finding new deposits: the dashed diagonal is a random ranking.",
    ),
    "success_rate_blocks.png": (
        "Success-rate curves (spatial blocks, held-out)",
        "Held-out deposits of every block placed at the share of background area ranked at or "
        "above them by the model of their fold, all seeds pooled; the diagonal is random.",
    ),
}
CURVE_ORDER = (
    "success_rate_lodo.png",
    "success_rate_blocks.png",
    "roc_authors.png",
    "success_rate_authors.png",
    "prediction_area_authors.png",
)

SAMPLING_ROWS = (
    ("n_windows", "windows", "count"),
    ("mean_offset_cells", "mean offset length (window cells)", "float"),
    ("outside_share", "share of taps outside the map", "percent"),
    ("outside_share_regular_grid", "same for the undeformed 3 × 3 grid (reference)", "percent"),
    ("mean_mask", "mean modulation mask (0–1)", "float"),
)


@dataclass
class Image:
    """An embedded PNG with its caption."""

    src: str  # data URI
    title: str
    caption: str
    source: str  # path relative to the run folder, for the reader
    width: int
    height: int
    bold_title: bool = True  # False: the title is only the alt text (the caption says it all)


@dataclass
class Report:
    """Everything the template shows (plain data; formatting is done here, not in the template)."""

    title: str
    study: str
    built: str
    finished: str | None
    run_dir: str  # relative to the report ("." when the report sits in the run folder)
    run_name: str
    intro_seeds: str
    data: list[tuple[str, str]]
    splits: list[dict[str, Any]]
    layers: list[str]
    data_notes: list[str]
    protocols: list[dict[str, Any]]
    maps_figure: Image | None
    geotiffs: list[tuple[str, str]]
    curves: list[Image]
    explanations: list[dict[str, Any]]
    config_toml: str
    plan: list[tuple[str, str]]
    versions: list[tuple[str, str]]
    seconds: str | None
    commands: list[str]
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# entry point


def build_report(
    run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write one self-contained HTML report of the comparison run in ``run_dir``; return its path.

    ``out`` defaults to ``RUN_DIR/report.html``. Refuses to replace an existing file unless
    ``overwrite``. Raises :class:`~gkdcn.errors.InputError` when ``run_dir`` is not a finished
    comparison run (no ``run.json`` or ``summary.json``, or unreadable ones).
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    if not run_dir.is_dir():
        raise InputError(run_dir, "not a folder (expected a comparison run folder)")
    if not (run_dir / "run.json").is_file():
        raise InputError(
            run_dir, "not a comparison run folder (no run.json; make one with `gkdcn compare`)"
        )
    check_writable(out, overwrite)
    report = collect_report(run_dir, out)
    html = render_report(report)
    write_text(out, html, overwrite=overwrite)
    return out


def render_report(report: Report) -> str:
    """The report as HTML text (autoescaped jinja2 template shipped in ``gkdcn/templates``)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gkdcn", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE).render(r=report)


# --------------------------------------------------------------------------------------------
# reading the run folder


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"missing ({what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc.__class__.__name__}: {exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object, found {type(data).__name__}")
    return data


def collect_report(run_dir: Path, out: Path) -> Report:
    """Read the run folder into a :class:`Report` (``out`` sets the relative paths shown)."""
    run = _read_json(run_dir / "run.json", "the comparison's settings")
    summary = _read_json(
        run_dir / "summary.json",
        "the comparison has not finished: run the same `gkdcn compare` command again to resume",
    )
    config = run.get("config") or {}
    plan = summary.get("plan") or run.get("plan") or {}
    data = summary.get("data") or {}
    if not isinstance(config, dict) or not isinstance(plan, dict) or not isinstance(data, dict):
        raise InputError(run_dir, "run.json / summary.json do not look like a gkdcn comparison")
    problems: list[str] = []
    study = str(run.get("study") or data.get("name") or config.get("name") or run_dir.name)
    models = [str(m) for m in plan.get("models", [])]
    seeds = list(plan.get("seeds", []))
    finished = None
    if (run_dir / "summary.json").exists():
        stamp = (run_dir / "summary.json").stat().st_mtime
        finished = dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
    report_dir = out.parent
    maps_figure = _image(run_dir, "figures/maps.png", *_maps_caption(data), problems)
    return Report(
        title=f"GK-DCN comparison: {study}",
        study=study,
        built=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        finished=finished,
        run_dir=_relative(run_dir, report_dir),
        run_name=run_dir.resolve().name,
        intro_seeds=_seed_sentence(len(seeds), models),
        data=_data_rows(data, config, run_dir),
        splits=list(data.get("splits") or []),
        layers=[str(x) for x in data.get("layers") or []],
        data_notes=[str(n) for n in data.get("notes") or []],
        protocols=_protocols(summary.get("protocols") or {}, models, len(seeds)),
        maps_figure=maps_figure,
        geotiffs=_geotiffs(run_dir, report_dir, models),
        curves=_curves(run_dir, problems),
        explanations=_explanations(run_dir, report_dir, models, problems),
        config_toml=to_toml(config) if config else "(run.json holds no config)",
        plan=_plan_rows(plan),
        versions=[(str(k), str(v)) for k, v in (run.get("versions") or {}).items()],
        seconds=_duration(summary.get("seconds")),
        commands=_commands(run, plan, run_dir, out),
        problems=problems,
    )


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX separators), or absolute when on another drive."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return path.resolve().as_posix()


def model_label(model: str) -> str:
    """Display name of a model kind (``gk-dcn`` -> ``GK-DCN``)."""
    return MODEL_LABELS.get(model, model)


def _seed_sentence(n_seeds: int, models: Sequence[str]) -> str:
    names = ", ".join(model_label(m) for m in models) or "no models"
    if n_seeds == 1:
        return (
            f"{names}, each trained once (1 seed): no confidence interval can be given, and "
            "differences between models may be chance"
        )
    return f"{names}, each trained with {n_seeds} seeds; numbers are means over the seeds"


# --------------------------------------------------------------------------------------------
# formatting


def fmt_number(value: Any, *, percent: bool = False, signed: bool = False) -> str:
    """A metric value: 3 decimals (a 0..1 share as % with 1 decimal); ``—`` when missing."""
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "—"
    sign = "+" if signed else ""
    if percent:
        return f"{100 * number:{sign}.1f}"
    return f"{number:{sign}.3f}"


def fmt_interval(lo: Any, hi: Any, *, percent: bool = False, signed: bool = False) -> str:
    """``[lo, hi]`` with :func:`fmt_number`."""
    return (
        f"[{fmt_number(lo, percent=percent, signed=signed)}, "
        f"{fmt_number(hi, percent=percent, signed=signed)}]"
    )


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _protocols(
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
    rows = []
    for metric in metric_keys:
        info = METRICS.get(metric, MetricInfo(metric, ""))
        means = [_float(r.get(f"{metric}_mean")) for r in records]
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
                    if seeds > 1
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
        "text": PROTOCOL_TEXT.get(name, ""),
        "models": [model_label(str(r.get("model"))) for r in records],
        "seeds": n_seeds,
        "rows": rows,
        "paired": _paired(block.get("paired") or []),
    }


def _paired(records: Sequence[Any]) -> list[dict[str, Any]]:
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
        lo, hi = _float(record.get("ci_lo")), _float(record.get("ci_hi"))
        mean = _float(record.get("mean_difference"))
        if n < 2:
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
                "ci": fmt_interval(lo, hi, percent=info.percent, signed=True) if n > 1 else "",
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


# --------------------------------------------------------------------------------------------
# data summary


def _data_rows(
    data: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path
) -> list[tuple[str, str]]:
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
    origin = _origin(run_dir, data)
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
    rows.append(("Geological knowledge", _knowledge_text(data.get("knowledge"), config)))
    return rows


def _knowledge_text(summary: Any, config: Mapping[str, Any]) -> str:
    knowledge = config.get("knowledge") or {}
    if not isinstance(knowledge, dict) or not (knowledge.get("faults") or knowledge.get("weights")):
        return "none (GK models cannot be trained without it)"
    if knowledge.get("weights"):
        text = f"ready-made weight raster {knowledge['weights']}"
    else:
        decay = knowledge.get("decay") or {}
        if decay.get("kind") == "exponential":
            how = f"exp(−distance / {decay.get('scale', 0):g} map units)"
        else:
            how = (
                f"rings {decay.get('ring_width', 0):g} map units wide, weight falling as a power "
                f"law (exponent {decay.get('exponent', 0):g}) to 0 at ring {decay.get('rings', 0)}"
            )
        text = f"fault proximity from {knowledge['faults']}: {how}"
    if knowledge.get("as_channel"):
        text += "; also fed to the networks as an extra channel"
    if isinstance(summary, dict) and summary.get("mean") is not None:
        text += (
            f". Mean weight {float(summary['mean']):.3f}; "
            f"{100 * float(summary.get('nonzero_fraction') or 0):.1f} % of valid cells have weight > 0"
        )
    return text


def _origin(run_dir: Path, data: Mapping[str, Any]) -> str | None:
    """Upper-left corner from a map GeoTIFF's header, else from the grid description."""
    for tif in sorted((run_dir / "maps").glob("*.tif")):
        try:
            import rasterio

            with rasterio.open(tif) as src:
                return f"x = {_coord(src.transform.c)}, y = {_coord(src.transform.f)}"
        except Exception:  # a damaged map must not stop the report
            continue
    match = re.search(r"origin \(([^)]*)\)", str(data.get("grid", "")))
    return match.group(1) if match else None


def _coord(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def _maps_caption(data: Mapping[str, Any]) -> tuple[str, str]:
    return (
        "Mean probability maps (authors' protocol)",
        "Each model's probability of a mineralization-related anomaly, averaged over seeds, on "
        "the map grid (axes in km of the map CRS"
        + (f", {data['crs']}" if data.get("crs") else "")
        + "). Red triangles: known deposits; white lines: faults. Blank cells have no data. "
        "These models were trained with every deposit, so high values at the deposits are "
        "expected; look at where else the models point.",
    )


def _geotiffs(run_dir: Path, report_dir: Path, models: Sequence[str]) -> list[tuple[str, str]]:
    rank = {m: i for i, m in enumerate(models)}
    found = sorted(
        (run_dir / "maps").glob("*.tif"),
        key=lambda p: (rank.get(p.name.removesuffix("_mean_probability.tif"), len(rank)), p.name),
    )
    out = []
    for path in found:
        model = path.name.removesuffix("_mean_probability.tif")
        what = (
            f"{model_label(model)} probability, mean over seeds"
            if path.name.endswith("_mean_probability.tif")
            else path.stem
        )
        out.append((_relative(path, report_dir), what))
    return out


# --------------------------------------------------------------------------------------------
# images


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when they are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _image(
    root: Path, relative: str, title: str, caption: str, problems: list[str]
) -> Image | None:
    path = root / relative
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"{relative}: cannot read ({exc.strerror or exc}); left out")
        return None
    size = _png_size(data)
    if size is None:
        problems.append(f"{relative}: not a PNG image; left out")
        return None
    return Image(png_data_uri(data), title, caption, relative, *size)


def _curves(run_dir: Path, problems: list[str]) -> list[Image]:
    figures = run_dir / "figures"
    names = [n for n in CURVE_ORDER if (figures / n).is_file()]
    names += sorted(
        p.name for p in figures.glob("*.png") if p.name not in CURVE_ORDER and p.name != "maps.png"
    )
    images = []
    for name in names:
        title, caption = FIGURE_TEXT.get(name, (name.removesuffix(".png").replace("_", " "), ""))
        image = _image(run_dir, f"figures/{name}", title, caption, problems)
        if image is not None:
            images.append(image)
    return images


# --------------------------------------------------------------------------------------------
# explanations


def _explanations(
    run_dir: Path, report_dir: Path, models: Sequence[str], problems: list[str]
) -> list[dict[str, Any]]:
    root = run_dir / "explain"
    if not root.is_dir():
        return []
    rank = {m: i for i, m in enumerate(["gk-dcn", *models])}
    folders = sorted(
        (p.parent for p in root.glob("*/index.json")),
        key=lambda p: (rank.get(p.name, len(rank)), p.name),
    )
    out = []
    for folder in folders:
        try:
            index = _read_json(folder / "index.json", "explanation index")
        except InputError as exc:
            problems.append(f"{exc}; explanations of {folder.name} left out")
            continue
        if index.get("format") != "gkdcn-explanations":
            problems.append(
                f"explain/{folder.name}/index.json: not a gkdcn explanation index; left out"
            )
            continue
        out.append(_explanation(run_dir, report_dir, folder, index, problems))
    return out


def _explanation(
    run_dir: Path,
    report_dir: Path,
    folder: Path,
    index: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    base = folder.relative_to(run_dir).as_posix()
    descriptions = {
        str(f.get("path")): str(f.get("description", ""))
        for f in index.get("files") or []
        if isinstance(f, dict)
    }
    model = index.get("model") or {}
    kind = str(model.get("kind") or folder.name)
    sampling_layers = [str(x) for x in index.get("sampling_layers") or []]
    all_sites = [s for s in index.get("sites") or [] if isinstance(s, dict)]
    deposits = [s for s in all_sites if s.get("label") == "deposit"] or all_sites
    sites = []
    for site in deposits[:MAX_SITES]:
        images = []
        for rel in site.get("files") or []:
            rel = str(rel)
            if not (rel.startswith("gradcam/") or rel.startswith("sampling/")):
                continue  # offset-field figures stay in the folder
            title = "Grad-CAM" if rel.startswith("gradcam/") else "Deformable sampling"
            image = _image(run_dir, f"{base}/{rel}", title, descriptions.get(rel, ""), problems)
            if image is not None:
                image.bold_title = not image.caption
                images.append(image)
        sites.append(
            {
                "id": str(site.get("id", "")),
                "label": str(site.get("label", "")),
                "xy": f"x = {_coord(float(site.get('x', 0)))}, y = {_coord(float(site.get('y', 0)))}",
                "cam": [i for i in images if i.title == "Grad-CAM"],
                "sampling": [i for i in images if i.title != "Grad-CAM"],
            }
        )
    ranking_image = _image(
        run_dir,
        f"{base}/element_ranking.png",
        "Element contributions",
        descriptions.get("element_ranking.png", "")
        + ". Integrated gradients: how much each element moved the model's output (logit) "
        "away from a neutral all-average window, summed over the window.",
        problems,
    )
    geotiffs = [
        (_relative(folder / path, report_dir), text)
        for path, text in descriptions.items()
        if path.endswith(".tif")
    ]
    return {
        "model": model_label(kind),
        "folder": _relative(folder, report_dir),
        "anchor": f"explain-{re.sub(r'[^a-z0-9]+', '-', folder.name.lower())}",
        "window": model.get("window"),
        "gradcam_layer": str(index.get("gradcam_layer") or ""),
        "sampling_layers": sampling_layers,
        "ranking": [str(x) for x in index.get("element_ranking") or []],
        "ranking_image": ranking_image,
        "sites": sites,
        "n_sites": len(deposits),
        "site_kind": "deposits" if deposits and deposits[0].get("label") == "deposit" else "sites",
        "sampling": _sampling_tables(folder, problems),
        "geotiffs": geotiffs,
        "notes": [str(n) for n in index.get("notes") or []],
        "has_offsets": any(p.startswith("offsets/") for p in descriptions),
    }


def _sampling_tables(folder: Path, problems: list[str]) -> list[dict[str, Any]]:
    path = folder / "sampling_summary.json"
    if not path.is_file():
        return []
    try:
        summary = _read_json(path, "sampling summary")
    except InputError as exc:
        problems.append(f"{exc}; sampling numbers left out")
        return []
    tables = []
    for layer, stats in (summary.get("layers") or {}).items():
        if not isinstance(stats, dict):
            continue
        sites = stats.get("sites") or {}
        columns: list[tuple[str, Mapping[str, Any]]] = [
            ("deposits", sites.get("deposit") or {}),
            ("background sites", sites.get("background") or {}),
        ]
        whole = stats.get("map") or {}
        if whole.get("all"):
            sampled = whole.get("sampled_cells")
            columns.append(
                (
                    "whole map" + (f" ({sampled:,} cells)" if isinstance(sampled, int) else ""),
                    whole["all"],
                )
            )
        columns = [(name, col) for name, col in columns if col.get("n_windows")]
        rows = []
        for key, label, kind in SAMPLING_ROWS:
            values = []
            for _, col in columns:
                value = col.get(key)
                if kind == "count":
                    values.append("—" if value is None else f"{int(value):,}")
                else:
                    values.append(fmt_number(value, percent=kind == "percent"))
            rows.append({"label": label + (" (%)" if kind == "percent" else ""), "cells": values})
        scale = sites.get("scale") or whole.get("scale")
        tables.append(
            {
                "layer": str(layer),
                "scale": scale,
                "columns": [name for name, _ in columns],
                "compare": len(columns) > 1,
                "rows": rows,
            }
        )
    return tables


# --------------------------------------------------------------------------------------------
# reproducibility


def _plan_rows(plan: Mapping[str, Any]) -> list[tuple[str, str]]:
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
                "all valid non-deposit cells"
                if sample is None
                else f"a seeded sample of {sample:,}",
            )
        )
    if plan.get("quick"):
        rows.append(("Quick run", "yes (shortened settings: for trying the tool, not for results)"))
    return rows


def _duration(seconds: Any) -> str | None:
    value = _float(seconds)
    if value is None:
        return None
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min ({value:,.0f} s)"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{value:.1f} s"


def _commands(
    run: Mapping[str, Any], plan: Mapping[str, Any], run_dir: Path, out: Path
) -> list[str]:
    """Command lines that redo this run into a new folder, from the saved config."""
    base_dir = run.get("config_base_dir")
    config = f"{base_dir}/study.toml" if base_dir else "study.toml"
    new_run = f"{run_dir.name}-again"
    args = ["gkdcn", "compare", config, "--out", new_run]
    if plan.get("quick"):
        args.append("--quick")
    if plan.get("seeds"):
        args += ["--seeds", str(len(plan["seeds"]))]
    if plan.get("models"):
        args += ["--models", ",".join(str(m) for m in plan["models"])]
    if plan.get("protocols"):
        args += ["--protocols", ",".join(str(p) for p in plan["protocols"])]
    train = plan.get("train") or {}
    if isinstance(train, dict) and train.get("epochs") is not None:
        args += ["--epochs", str(train["epochs"])]
    commands = [_shell(args)]
    explain = run_dir / "explain"
    for index_path in sorted(explain.glob("*/index.json")) if explain.is_dir() else []:
        model = index_path.parent.name
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        commands.append(_shell(_explain_command(index, model, run_dir, new_run, config)))
    commands.append(_shell(["gkdcn", "report", new_run, "--out", f"{new_run}/{out.name}"]))
    return commands


def _explain_command(
    index: dict[str, Any], model: str, run_dir: Path, new_run: str, config: str
) -> list[str]:
    """``gkdcn explain`` with the model file and settings its index recorded.

    A model file inside the run folder is pointed at the same place in the new run; older indexes
    without a recorded file fall back to seed 0 of the authors' protocol.
    """
    recorded = index.get("model_file")
    model_file = f"{new_run}/authors/{model}/seed0/model.pt"
    if isinstance(recorded, str) and recorded:
        try:
            inside = Path(recorded).resolve().relative_to(run_dir.resolve())
            model_file = f"{new_run}/{inside.as_posix()}"
        except ValueError:
            model_file = recorded
    args = ["gkdcn", "explain", model_file, config, "--out", f"{new_run}/explain/{model}"]
    settings = index.get("settings") if isinstance(index.get("settings"), dict) else {}
    for key, option in (("layer", "--layer"), ("element", "--element")):
        if isinstance(settings.get(key), str) and settings[key]:
            args += [option, settings[key]]
    if settings.get("sites") == "all":  # the CLI's other choice is the default, "deposits"
        args += ["--sites", "all"]
    if isinstance(settings.get("top_k"), int) and settings["top_k"] != 3:
        args += ["--top-k", str(settings["top_k"])]
    has_maps = settings.get(
        "map_outputs",
        any(
            str(f.get("path", "")).endswith(".tif")
            for f in index.get("files") or []
            if isinstance(f, dict)
        ),
    )
    if not has_maps:
        args.append("--no-maps")
    elif isinstance(settings.get("map_ig_steps"), int) and settings["map_ig_steps"] != 16:
        args += ["--map-ig-steps", str(settings["map_ig_steps"])]
    return args


def _shell(args: Sequence[str], width: int = 88) -> str:
    """A quoted command line, continued over lines (``\\``) at its options when long."""
    line = shlex.join(args)
    if len(line) <= width:
        return line
    parts: list[list[str]] = [[]]
    for arg in args:
        if arg.startswith("--") and parts[-1]:
            parts.append([])
        parts[-1].append(arg)
    return " \\\n    ".join(shlex.join(p) for p in parts)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(str(value), ensure_ascii=False)


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A plain-data config as TOML text (the study config's shape: nested tables of scalars)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((f"{prefix}{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines)
    for name, table in tables:
        body = to_toml(table, prefix=f"{name}.")
        has_scalars = any(v is not None and not isinstance(v, dict) for v in table.values())
        header = f"[{name}]\n" if has_scalars or not table else ""
        block = header + body
        text = f"{text}\n\n{block}" if text else block
    return text.strip("\n")
