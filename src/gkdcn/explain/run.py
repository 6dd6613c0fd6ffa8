"""Batch export of every explanation for one model on one study, written as one folder.

:func:`explain_model` writes, for the chosen sites (every deposit, plus non-deposits or the user's
own points): a Grad-CAM figure per site, the deformable sampling and offset-field figures per site
and deformable layer, per-element integrated-gradients contributions (CSV and ranked chart), the
offset statistics (JSON), map GeoTIFFs on the input grid, and ``index.json`` listing every file
with a one-line description. The folder is built aside and moved into place only when complete.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from gkdcn.data.samples import extract_windows
from gkdcn.errors import GkdcnError
from gkdcn.explain import defaults
from gkdcn.explain.attribution import (
    IG_UNITS,
    attribution_maps,
    element_attribution,
    plot_element_ranking,
    rank_elements,
)
from gkdcn.explain.gradcam import CAM_UNITS, gradcam, gradcam_maps, plot_site_cam
from gkdcn.explain.layout import INDEX_FORMAT, ExplainLayout
from gkdcn.explain.offsets import (
    SUMMARY_NOTES,
    map_sampling_summary,
    plot_offset_field,
    plot_sampling,
    sampling_positions,
    sampling_summary,
)
from gkdcn.figures import save_figure
from gkdcn.io.atomic import atomic_dir
from gkdcn.io.jsonsafe import json_safe
from gkdcn.io.qml import qml_path, style_for_values
from gkdcn.io.rasters import write_geotiff

if TYPE_CHECKING:
    from rich.progress import Progress

    from gkdcn.data.sites import SiteTable
    from gkdcn.io.grid import Grid
    from gkdcn.models.bundle import ModelBundle

INDEX_VERSION = 1
POINT_LABEL = -1  # label of a user-given point: neither deposit (1) nor non-deposit (0)
LABEL_NAMES = {1: "deposit", 0: "non-deposit", POINT_LABEL: "point"}

SiteChoice = Literal["deposits", "all"] | Sequence[tuple[str, int, int]]


class StudyLike(Protocol):
    """What :func:`explain_model` reads from a :class:`gkdcn.data.study.Study`."""

    names: list[str]
    grid: Grid
    raw: np.ndarray
    valid: np.ndarray
    sites: SiteTable


def safe_name(text: str) -> str:
    """A file-name-safe version of a site id or element name (letters, digits, ``-``, ``_``, ``.``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")
    return name or "site"


def _unique_names(ids: Sequence[str]) -> list[str]:
    """Safe, distinct file stems for site ids (``D 1`` and ``D_1`` would otherwise collide)."""
    seen: dict[str, int] = {}
    out = []
    for site_id in ids:
        stem = safe_name(site_id)
        key = stem.lower()  # case-insensitive file systems
        if key in seen:
            seen[key] += 1
            stem = f"{stem}_{seen[key]}"
        else:
            seen[key] = 1
        out.append(stem)
    return out


def select_sites(
    study: StudyLike, sites: SiteChoice
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, labels, rows, cols)`` of the sites to explain.

    ``"deposits"``: the study's deposits; ``"all"``: deposits and non-deposits; a list of
    ``(id, row, col)``: the deposits plus those points (label -1), which must lie on the grid.
    """
    table = study.sites
    ids = np.asarray(table.ids).astype(str)
    labels = np.asarray(table.labels, dtype=np.int64)
    rows = np.asarray(table.rows, dtype=np.int64)
    cols = np.asarray(table.cols, dtype=np.int64)
    if isinstance(sites, str):
        if sites not in ("deposits", "all"):
            raise GkdcnError(f"unknown site choice {sites!r} (use 'deposits', 'all' or a list)")
        keep = labels == 1 if sites == "deposits" else np.ones(labels.shape, dtype=bool)
        return ids[keep].tolist(), labels[keep], rows[keep], cols[keep]
    keep = labels == 1
    extra_ids, extra_rows, extra_cols = [], [], []
    height, width = study.valid.shape
    for item in sites:
        try:
            site_id, row, col = item
            row, col = int(row), int(col)
        except (TypeError, ValueError):
            raise GkdcnError(f"a site must be (id, row, col), got {item!r}") from None
        if not (0 <= row < height and 0 <= col < width):
            raise GkdcnError(
                f"site {site_id} at row {row}, col {col} lies outside the {height} x {width} grid"
            )
        extra_ids.append(str(site_id))
        extra_rows.append(row)
        extra_cols.append(col)
    return (
        ids[keep].tolist() + extra_ids,
        np.concatenate([labels[keep], np.full(len(extra_ids), POINT_LABEL, dtype=np.int64)]),
        np.concatenate([rows[keep], np.asarray(extra_rows, dtype=np.int64)]),
        np.concatenate([cols[keep], np.asarray(extra_cols, dtype=np.int64)]),
    )


def explain_model(
    bundle: ModelBundle,
    study: StudyLike,
    out_dir: str | Path,
    *,
    sites: SiteChoice = defaults.SITES,
    layer: str | None = None,
    element: str | None = None,
    top_k: int = defaults.TOP_K,
    map_outputs: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    ig_steps: int = 50,
    map_ig_steps: int = defaults.MAP_IG_STEPS,
    map_sample: int | None = 20000,
    seed: int = 0,
    batch_size: int = 256,
    model_file: str | Path | None = None,
) -> dict[str, Any]:
    """Write all explanations of ``bundle`` on ``study`` into ``out_dir``; returns the index.

    ``layer`` sets the Grad-CAM layer (default ``conv2``) and, when deformable, the only layer
    whose sampling is drawn (otherwise every deformable layer is). ``element`` picks the element
    shown under the per-site CAMs (default: the element contributing most at the deposits) and
    is always mapped.
    ``top_k`` elements (by mean contribution at the deposits) get attribution maps.
    ``map_outputs=False`` skips all whole-map work (GeoTIFFs, map offset statistics), which is
    the slow part: ``map_ig_steps`` forward/backward passes per valid cell. ``map_sample`` caps
    the cells used for the map offset statistics (seeded with ``seed``; None = all).
    ``model_file`` (where ``bundle`` was read from) and these settings are recorded in the index,
    so that a report can give the command that redoes the explanation.
    Refuses to replace an existing ``out_dir`` unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    names = list(bundle.channels)
    order = bundle.channel_order(list(study.names))
    net = bundle.network()
    layers = net.conv_layers() if hasattr(net, "conv_layers") else {}
    cam_layer = layer or "conv2"
    if layers and cam_layer not in layers:
        raise GkdcnError(f"unknown layer {cam_layer!r} (choose {', '.join(layers)})")
    deformable = net.deformable_layers() if hasattr(net, "deformable_layers") else {}
    sampling_layers = [layer] if layer in deformable else list(deformable)
    if element is not None and element not in names:
        raise GkdcnError(f"element {element!r} is not a model channel ({', '.join(names)})")
    if top_k < 1:
        raise GkdcnError(f"top_k must be >= 1, got {top_k}")
    ids, labels, rows, cols = select_sites(study, sites)
    if not ids:
        raise GkdcnError("no sites to explain")
    valid = np.asarray(study.valid, dtype=bool)
    grid = study.grid
    xs, ys = grid.xy(rows, cols)
    stems = _unique_names(ids)

    files: list[dict[str, str]] = []
    notes: list[str] = []

    def record(path: Path, root: Path, description: str) -> None:
        files.append({"path": path.relative_to(root).as_posix(), "description": description})

    config = getattr(study, "config", None)  # a Study has one; a bare StudyLike may not
    inputs = config.input_paths() if config is not None else []
    inputs += [Path(model_file)] if model_file is not None else []
    with atomic_dir(out_dir, overwrite, inputs=inputs, command="explain") as tmp:
        features = bundle.transform.apply(np.asarray(study.raw)[order])
        windows = extract_windows(features, rows, cols, bundle.window, bundle.padding)
        site_files: list[list[str]] = [[] for _ in ids]

        # Per-element contributions (integrated gradients) at every chosen site, first: the
        # element that contributes most at the deposits is the default input panel (the mean of
        # CLR-scaled channels would be ~0 by construction and show nothing).
        attribution = element_attribution(net, windows, names, n_steps=ig_steps, ids=ids)
        is_deposit = labels == 1
        ranked_values = attribution.values[is_deposit] if is_deposit.any() else attribution.values
        who = "deposits" if is_deposit.any() else "sites"
        ranking = rank_elements(ranked_values)
        shown = element if element is not None else ranking[0]

        # Grad-CAM per site, one colour scale for all so the figures compare.
        cams = gradcam(net, windows, cam_layer, batch_size=batch_size)
        cam_vmax = float(cams.max()) if cams.size and cams.max() > 0 else None
        (tmp / ExplainLayout.GRADCAM_DIR).mkdir()
        task = (
            progress.add_task(
                "site figures", total=len(ids) * (1 + 2 * len(sampling_layers)), info=""
            )
            if progress is not None
            else None
        )
        for n, stem in enumerate(stems):
            fig = plot_site_cam(
                windows[n],
                cams[n],
                names,
                ids[n],
                float(xs[n]),
                float(ys[n]),
                shown,
                layer=cam_layer,
                cam_vmax=cam_vmax,
            )
            path = tmp / ExplainLayout.GRADCAM_DIR / f"{stem}.png"
            save_figure(fig, path)
            record(path, tmp, f"Grad-CAM at {cam_layer} for site {ids[n]} ({CAM_UNITS})")
            site_files[n].append(path.relative_to(tmp).as_posix())
            if progress is not None and task is not None:
                progress.update(task, advance=1)

        # Deformable sampling per site and layer, with statistics.
        summaries: dict[str, Any] = {}
        if sampling_layers:
            (tmp / ExplainLayout.SAMPLING_DIR).mkdir()
            (tmp / ExplainLayout.OFFSETS_DIR).mkdir()
        for lname in sampling_layers:
            data = sampling_positions(net, windows, lname, batch_size=batch_size)
            for n, stem in enumerate(stems):
                label = LABEL_NAMES.get(int(labels[n]), "site")
                fig = plot_sampling(data, n, title=f"{lname} sampling at {label} {ids[n]}")
                path = tmp / ExplainLayout.SAMPLING_DIR / f"{stem}_{lname}.png"
                save_figure(fig, path)
                record(
                    path, tmp, f"{lname} sampling positions of the middle output position, {ids[n]}"
                )
                site_files[n].append(path.relative_to(tmp).as_posix())
                fig = plot_offset_field(data, n, title=f"{lname} mean offsets at {label} {ids[n]}")
                path = tmp / ExplainLayout.OFFSETS_DIR / f"{stem}_{lname}.png"
                save_figure(fig, path)
                record(path, tmp, f"{lname} mean offset per output position (cells), {ids[n]}")
                site_files[n].append(path.relative_to(tmp).as_posix())
                if progress is not None and task is not None:
                    progress.update(task, advance=2)
            summaries[lname] = {"sites": sampling_summary(data, labels)}
            if map_outputs:
                summaries[lname]["map"] = map_sampling_summary(
                    bundle,
                    features,
                    valid,
                    lname,
                    max_cells=map_sample,
                    seed=seed,
                    batch_size=batch_size,
                    progress=progress,
                )

        table = attribution.to_frame()
        table.insert(0, "label", [LABEL_NAMES.get(int(v), "site") for v in labels])
        table.insert(1, "row", rows)
        table.insert(2, "col", cols)
        table.insert(3, "x", xs)
        table.insert(4, "y", ys)
        path = tmp / ExplainLayout.ATTRIBUTION_TABLE
        table.to_csv(path, index=True)
        record(
            path,
            tmp,
            f"integrated-gradients contribution of each element per site ({IG_UNITS}, summed "
            "over the window; baseline = 0 in transformed space) with logit and convergence delta",
        )
        # Completeness check: a site's contributions should add up to its logit change; flag
        # gaps above 5 % of that change (with a 1e-3 logit floor, as tiny changes make any
        # relative gap large).
        change = np.abs(attribution.logit - attribution.baseline_logit)
        loose = np.abs(attribution.delta) > np.maximum(0.05 * change, 1e-3)
        if loose.any():
            notes.append(
                f"integrated gradients at {int(loose.sum())} of {len(ids)} sites add up to their "
                f"logit change only within {float(np.abs(attribution.delta).max()):.3g} logit "
                f"units (over 5 %); raise ig_steps for tighter attributions"
            )
        fig = plot_element_ranking(
            ranked_values,
            title=f"Element contributions at {len(ranked_values)} {who} ({bundle.kind})",
        )
        path = tmp / ExplainLayout.RANKING_FIGURE
        save_figure(fig, path)
        record(path, tmp, f"elements ranked by mean contribution at the {who} ({IG_UNITS})")

        if summaries:
            path = tmp / ExplainLayout.SAMPLING_SUMMARY
            payload = {"units": SUMMARY_NOTES, "layers": summaries}
            path.write_text(json.dumps(json_safe(payload), indent=2), encoding="utf-8")
            record(
                path,
                tmp,
                "offset length, share of taps outside the map and mean mask, "
                "per class and over the map",
            )

        mapped: list[str] = []
        if map_outputs:
            cam_maps = gradcam_maps(
                bundle,
                features,
                valid,
                layer=cam_layer,
                batch_size=batch_size,
                progress=progress,
            )
            path = tmp / ExplainLayout.GRADCAM_MAP
            write_geotiff(
                path,
                np.stack([cam_maps["centre"], cam_maps["mean"]]),
                grid,
                nodata=math.nan,
                descriptions=[f"gradcam_{cam_layer}_centre", f"gradcam_{cam_layer}_mean"],
                overviews=True,
                style=style_for_values(f"gradcam_{cam_layer}_centre", cam_maps["centre"]),
            )
            record(
                path,
                tmp,
                f"Grad-CAM at {cam_layer} of the window centred on each cell ({CAM_UNITS}): "
                "band 1 at the window centre, band 2 the window mean; NaN off the data",
            )
            record(qml_path(path), tmp, "QGIS style of the Grad-CAM map (band 1, its value range)")
            mapped = ranking[:top_k]
            if shown not in mapped:
                mapped.append(shown)
            maps = attribution_maps(
                bundle,
                features,
                valid,
                names,
                elements=mapped,
                n_steps=map_ig_steps,
                batch_size=batch_size,
                progress=progress,
            )
            for el in mapped:
                path = tmp / ExplainLayout.attribution_map_name(safe_name(el))
                write_geotiff(path, maps[el], grid, nodata=math.nan, descriptions=[f"ig_{el}"])
                record(
                    path,
                    tmp,
                    f"contribution of {el} to the logit of the window centred on each cell "
                    f"({IG_UNITS}, integrated gradients with {map_ig_steps} steps)",
                )

        index: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": {
                "kind": bundle.kind,
                "window": bundle.window,
                "padding": bundle.padding,
                "channels": names,
            },
            # absolute: the report that reads it may run from another folder
            "model_file": None if model_file is None else str(Path(model_file).resolve()),
            "settings": {
                "sites": sites if isinstance(sites, str) else "custom",
                "layer": layer,
                "element": element,
                "top_k": top_k,
                "map_outputs": map_outputs,
                "ig_steps": ig_steps,
                "map_ig_steps": map_ig_steps,
            },
            "gradcam_layer": cam_layer,
            "sampling_layers": sampling_layers,
            "element": shown,
            "element_chosen_by": "user" if element is not None else "top contribution",
            "element_ranking": ranking,
            "mapped_elements": mapped,
            "units": {
                "gradcam": f"{CAM_UNITS}, raw (not normalised per window)",
                "attribution": f"{IG_UNITS}, summed over the window",
                "offsets": "window cells",
            },
            "sites": [
                {
                    "id": ids[n],
                    "label": LABEL_NAMES.get(int(labels[n]), "site"),
                    "row": int(rows[n]),
                    "col": int(cols[n]),
                    "x": float(xs[n]),
                    "y": float(ys[n]),
                    "files": site_files[n],
                }
                for n in range(len(ids))
            ],
            "files": files,
            "notes": notes,
        }
        (tmp / ExplainLayout.INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return {**index, "out_dir": str(out_dir)}
