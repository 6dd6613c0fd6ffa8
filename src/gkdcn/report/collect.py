"""Reading a comparison run folder (and its explanations) into a :class:`Report`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gkdcn.compare.layout import MAPS_FIGURE, RunLayout
from gkdcn.errors import InputError
from gkdcn.explain.layout import INDEX_FORMAT, ExplainLayout
from gkdcn.io.toml import to_toml
from gkdcn.report.commands import reproduce_commands
from gkdcn.report.formatting import coord, duration, fmt_number, model_label, relative_path
from gkdcn.report.images import Image, read_image
from gkdcn.report.tables import data_rows, plan_rows, protocol_sections
from gkdcn.report.texts import (
    CURVE_ORDER,
    FIGURE_TEXT,
    SAMPLING_ROWS,
    baselines_intro,
    maps_caption,
    seed_sentence,
)

MAX_SITES = 4  # deposits shown per explained model


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
    baselines_intro: str = ""  # what the run's baselines are (HTML, "" without baselines)
    layers_intro: str = "the study's layers"  # what the grid holds, in a few words


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object of the run folder; otherwise a one-line error naming ``path`` and ``what``."""
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
    layout = RunLayout(run_dir)
    run = read_json(layout.run_json, "the comparison's settings")
    summary = read_json(
        layout.summary_json,
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
    if layout.summary_json.exists():
        stamp = layout.summary_json.stat().st_mtime
        finished = dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
    report_dir = out.parent
    maps_figure = read_image(
        run_dir, layout.relative(layout.figure(MAPS_FIGURE)), *maps_caption(data), problems
    )
    return Report(
        title=f"GK-DCN comparison: {study}",
        study=study,
        built=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        finished=finished,
        run_dir=relative_path(run_dir, report_dir),
        run_name=run_dir.resolve().name,
        intro_seeds=seed_sentence(len(seeds), models),
        layers_intro=_layers_intro([str(x) for x in data.get("layers") or []]),
        baselines_intro=baselines_intro(models),
        data=data_rows(data, config, layout),
        splits=list(data.get("splits") or []),
        layers=[str(x) for x in data.get("layers") or []],
        data_notes=[str(n) for n in data.get("notes") or []],
        protocols=protocol_sections(summary.get("protocols") or {}, models, len(seeds)),
        maps_figure=maps_figure,
        geotiffs=_geotiffs(layout, report_dir, models),
        curves=_curves(layout, problems),
        explanations=_explanations(layout, report_dir, models, problems),
        config_toml=to_toml(config) if config else "(run.json holds no config)",
        plan=plan_rows(plan),
        versions=[(str(k), str(v)) for k, v in (run.get("versions") or {}).items()],
        seconds=duration(summary.get("seconds")),
        commands=reproduce_commands(run, plan, run_dir, out),
        problems=problems,
    )


def _layers_intro(layers: Sequence[str], shown: int = 6) -> str:
    """E.g. ``39 layers: Ag, Al2O3, As, Au, B, Ba, ...``."""
    if not layers:
        return "the study's layers"
    more = ", ..." if len(layers) > shown else ""
    return f"{len(layers)} layers: {', '.join(layers[:shown])}{more}"


def _geotiffs(layout: RunLayout, report_dir: Path, models: Sequence[str]) -> list[tuple[str, str]]:
    rank = {m: i for i, m in enumerate(models)}
    found = sorted(
        layout.mean_maps(),
        key=lambda p: (rank.get(layout.mean_map_model(p) or p.name, len(rank)), p.name),
    )
    out = []
    for path in found:
        model = layout.mean_map_model(path)
        what = (
            f"{model_label(model)} probability, mean over seeds" if model is not None else path.stem
        )
        out.append((relative_path(path, report_dir), what + _class_text(path)))
    return out


def _class_text(path: Path) -> str:
    """The area classes the map opens in (its ``.qml``), as thresholds; empty if unreadable."""
    from gkdcn.errors import GkdcnError
    from gkdcn.io.qml import area_classes
    from gkdcn.io.rasters import read_probability_map

    try:
        prob, _valid, _grid = read_probability_map(path)
    except (GkdcnError, OSError, ValueError):
        return ""
    classes = area_classes(prob)
    if not classes:
        return ""
    shown = ", ".join(f"{c.label} >= {c.threshold:.3g}" for c in classes)
    return f"; opens in QGIS in area classes ({shown})"


def _curves(layout: RunLayout, problems: list[str]) -> list[Image]:
    names = [n for n in CURVE_ORDER if layout.figure(n).is_file()]
    names += sorted(
        p.name
        for p in layout.figures_dir.glob("*.png")
        if p.name not in CURVE_ORDER and p.name != MAPS_FIGURE
    )
    images = []
    for name in names:
        title, caption = FIGURE_TEXT.get(name, (name.removesuffix(".png").replace("_", " "), ""))
        image = read_image(
            layout.root, layout.relative(layout.figure(name)), title, caption, problems
        )
        if image is not None:
            images.append(image)
    return images


def _explanations(
    layout: RunLayout, report_dir: Path, models: Sequence[str], problems: list[str]
) -> list[dict[str, Any]]:
    rank = {m: i for i, m in enumerate(["gk-dcn", *models])}
    folders = sorted(
        layout.explanations(), key=lambda e: (rank.get(e.root.name, len(rank)), e.root.name)
    )
    out = []
    for folder in folders:
        try:
            index = read_json(folder.index, "explanation index")
        except InputError as exc:
            problems.append(f"{exc}; explanations of {folder.root.name} left out")
            continue
        if index.get("format") != INDEX_FORMAT:
            problems.append(
                f"{layout.relative(folder.index)}: not a gkdcn explanation index; left out"
            )
            continue
        out.append(_explanation(layout, report_dir, folder, index, problems))
    return out


def _explanation(
    layout: RunLayout,
    report_dir: Path,
    explained: ExplainLayout,
    index: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    folder = explained.root
    base = layout.relative(folder)
    cam_dir, sampling_dir = f"{ExplainLayout.GRADCAM_DIR}/", f"{ExplainLayout.SAMPLING_DIR}/"
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
            if not (rel.startswith(cam_dir) or rel.startswith(sampling_dir)):
                continue  # offset-field figures stay in the folder
            title = "Grad-CAM" if rel.startswith(cam_dir) else "Deformable sampling"
            image = read_image(
                layout.root, f"{base}/{rel}", title, descriptions.get(rel, ""), problems
            )
            if image is not None:
                image.bold_title = not image.caption
                images.append(image)
        sites.append(
            {
                "id": str(site.get("id", "")),
                "label": str(site.get("label", "")),
                "xy": f"x = {coord(float(site.get('x', 0)))}, y = {coord(float(site.get('y', 0)))}",
                "cam": [i for i in images if i.title == "Grad-CAM"],
                "sampling": [i for i in images if i.title != "Grad-CAM"],
            }
        )
    ranking_image = read_image(
        layout.root,
        layout.relative(explained.ranking_figure),
        "Element contributions",
        descriptions.get(ExplainLayout.RANKING_FIGURE, "")
        + ". Integrated gradients: how much each element moved the model's output (logit) "
        "away from a neutral all-average window, summed over the window.",
        problems,
    )
    geotiffs = [
        (relative_path(folder / path, report_dir), text)
        for path, text in descriptions.items()
        if path.endswith(".tif")
    ]
    return {
        "model": model_label(kind),
        "folder": relative_path(folder, report_dir),
        "anchor": f"explain-{re.sub(r'[^a-z0-9]+', '-', folder.name.lower())}",
        "window": model.get("window"),
        "gradcam_layer": str(index.get("gradcam_layer") or ""),
        "sampling_layers": sampling_layers,
        "ranking": [str(x) for x in index.get("element_ranking") or []],
        "ranking_image": ranking_image,
        "sites": sites,
        "n_sites": len(deposits),
        "site_kind": "deposits" if deposits and deposits[0].get("label") == "deposit" else "sites",
        "sampling": _sampling_tables(explained, problems),
        "geotiffs": geotiffs,
        "notes": [str(n) for n in index.get("notes") or []],
        "has_offsets": any(p.startswith(f"{ExplainLayout.OFFSETS_DIR}/") for p in descriptions),
    }


def _sampling_tables(explained: ExplainLayout, problems: list[str]) -> list[dict[str, Any]]:
    path = explained.sampling_summary
    if not path.is_file():
        return []
    try:
        summary = read_json(path, "sampling summary")
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
