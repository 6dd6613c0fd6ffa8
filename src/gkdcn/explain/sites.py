"""The explanations at the chosen sites: Grad-CAM, deformable sampling and element contributions.

:func:`explain_sites` draws, for each site (every deposit, plus non-deposits or the user's own
points), its Grad-CAM figure and, per deformable layer, its sampling and offset-field figures;
it writes the per-site integrated-gradients table and the element ranking chart, and returns
plain data (the ranking, the element shown, each site's files, the sampling statistics) for the
map steps and the index.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gkdcn.errors import GkdcnError
from gkdcn.explain.attribution import (
    IG_UNITS,
    ElementAttribution,
    element_attribution,
    plot_element_ranking,
    rank_elements,
)
from gkdcn.explain.gradcam import CAM_UNITS, gradcam, plot_site_cam
from gkdcn.explain.index import safe_name
from gkdcn.explain.layout import ExplainLayout
from gkdcn.explain.offsets import (
    SUMMARY_NOTES,
    plot_offset_field,
    plot_sampling,
    sampling_positions,
    sampling_summary,
)
from gkdcn.io.jsonsafe import json_safe

if TYPE_CHECKING:
    from rich.progress import Progress
    from torch import nn

    from gkdcn.data.sites import SiteTable
    from gkdcn.explain.index import OutputFiles
    from gkdcn.explain.options import ExplainOptions, SiteChoice
    from gkdcn.io.grid import Grid

POINT_LABEL = -1  # label of a user-given point: neither deposit (1) nor non-deposit (0)
LABEL_NAMES = {1: "deposit", 0: "non-deposit", POINT_LABEL: "point"}


class StudyLike(Protocol):
    """What :func:`~gkdcn.explain.run.explain_model` reads from a :class:`gkdcn.data.study.Study`."""

    names: list[str]
    grid: Grid
    raw: np.ndarray
    valid: np.ndarray
    sites: SiteTable


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


@dataclass(frozen=True)
class ChosenSites:
    """The sites to explain, with their map coordinates and file stems.

    Attributes
    ----------
    ids
        Site ids.
    labels
        1 deposit, 0 non-deposit, :data:`POINT_LABEL` a user's point.
    rows, cols
        Cells on the element grid.
    xs, ys
        Map coordinates of the cell centres.
    stems
        Safe, distinct file stems, one per site.
    """

    ids: list[str]
    labels: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    stems: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def label_name(self, n: int) -> str:
        """The word for site ``n``'s label (``deposit``, ``non-deposit`` or ``point``)."""
        return LABEL_NAMES.get(int(self.labels[n]), "site")

    def records(self, files: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """One index record per site: id, label, cell, coordinates and ``files[n]``.

        Parameters
        ----------
        files
            The files written for each site, in site order.

        Returns
        -------
        list of dict
            JSON-ready records.
        """
        return [
            {
                "id": self.ids[n],
                "label": self.label_name(n),
                "row": int(self.rows[n]),
                "col": int(self.cols[n]),
                "x": float(self.xs[n]),
                "y": float(self.ys[n]),
                "files": list(files[n]),
            }
            for n in range(len(self.ids))
        ]


def choose_sites(study: StudyLike, sites: SiteChoice) -> ChosenSites:
    """The sites to explain (:func:`select_sites`) with coordinates and file stems.

    Parameters
    ----------
    study
        The study whose sites and grid are read.
    sites
        ``"deposits"``, ``"all"`` or a list of ``(id, row, col)`` points.

    Returns
    -------
    ChosenSites
        At least one site.

    Raises
    ------
    GkdcnError
        When the choice is unknown, a point is off the grid, or no site is left.
    """
    ids, labels, rows, cols = select_sites(study, sites)
    if not ids:
        raise GkdcnError("no sites to explain")
    xs, ys = study.grid.xy(rows, cols)
    return ChosenSites(ids, labels, rows, cols, xs, ys, _unique_names(ids))


class _FigureCount:
    """Advances one ``site figures`` task of a progress display (a no-op without one)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("site figures", total=total, info="") if progress else None

    def __call__(self, steps: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=steps)


@dataclass(frozen=True)
class SiteExplanation:
    """What :func:`explain_sites` found, for the map steps and the index.

    Attributes
    ----------
    ranking
        The elements by mean contribution at the deposits (at every site when none is a
        deposit), largest first.
    element
        The element shown under the per-site CAMs (the user's, or the top one).
    files
        The files written for each site, in site order.
    sampling
        Per deformable layer, its sampling statistics at the sites (:func:`sampling_summary`).
    notes
        Warnings, such as integrated gradients that do not add up to the logit change.
    """

    ranking: list[str]
    element: str
    files: list[list[str]]
    sampling: dict[str, dict[str, Any]]
    notes: list[str]


def explain_sites(
    net: nn.Module,
    windows: np.ndarray,
    chosen: ChosenSites,
    *,
    kind: str,
    names: list[str],
    sampling_layers: Sequence[str],
    options: ExplainOptions,
    out: OutputFiles,
    progress: Progress | None = None,
) -> SiteExplanation:
    """Write every per-site explanation and return what the later steps need.

    In order: integrated gradients at every site (which pick the element shown), the Grad-CAM
    figures, the sampling and offset figures of each deformable layer, the contribution table
    (``element_attribution.csv``) and the ranking chart.

    Parameters
    ----------
    net
        The network, in eval mode.
    windows
        ``(N, C, w, w)`` transformed windows centred on the sites, channels in model order.
    chosen
        The sites.
    kind
        The model kind (named in the ranking chart's title).
    names
        The model's channels.
    sampling_layers
        The deformable layers whose sampling is drawn.
    options
        The explanation settings (``element``, ``ig_steps``, ``batch_size``, the Grad-CAM layer).
    out
        Where files are written and listed.
    progress
        A progress display advanced once per figure, or None.

    Returns
    -------
    SiteExplanation
        The ranking, the element shown, each site's files, the sampling statistics and notes.
    """
    # Per-element contributions (integrated gradients) at every chosen site, first: the
    # element that contributes most at the deposits is the default input panel (the mean of
    # CLR-scaled channels would be ~0 by construction and show nothing).
    attribution = element_attribution(net, windows, names, n_steps=options.ig_steps, ids=chosen.ids)
    is_deposit = chosen.labels == 1
    ranked_values = attribution.values[is_deposit] if is_deposit.any() else attribution.values
    ranking = rank_elements(ranked_values)
    shown = options.element if options.element is not None else ranking[0]
    advance = _FigureCount(progress, len(chosen) * (1 + 2 * len(sampling_layers)))
    files: list[list[str]] = [[] for _ in chosen.ids]
    draw_site_cams(net, windows, chosen, names, shown, options, out, files, advance)
    sampling = {
        layer: draw_site_sampling(net, windows, chosen, layer, options, out, files, advance)
        for layer in sampling_layers
    }
    write_attribution_table(attribution, chosen, out)
    who = "deposits" if is_deposit.any() else "sites"
    fig = plot_element_ranking(
        ranked_values, title=f"Element contributions at {len(ranked_values)} {who} ({kind})"
    )
    out.figure(
        fig,
        ExplainLayout.RANKING_FIGURE,
        f"elements ranked by mean contribution at the {who} ({IG_UNITS})",
    )
    return SiteExplanation(
        ranking=ranking,
        element=shown,
        files=files,
        sampling=sampling,
        notes=completeness_notes(attribution),
    )


def draw_site_cams(
    net: nn.Module,
    windows: np.ndarray,
    chosen: ChosenSites,
    names: list[str],
    element: str,
    options: ExplainOptions,
    out: OutputFiles,
    files: list[list[str]],
    advance: Callable[[int], None],
) -> None:
    """Draw the Grad-CAM figure of every site into ``gradcam/``, on one colour scale.

    Parameters
    ----------
    net
        The network.
    windows
        The sites' windows.
    chosen
        The sites.
    names
        The model's channels.
    element
        The element drawn beside each CAM.
    options
        The settings (the Grad-CAM layer, ``batch_size``).
    out
        Where the figures are written and listed.
    files
        Each site's files, appended to.
    advance
        Called with 1 after each figure.
    """
    layer = options.cam_layer
    # One colour scale for all sites, so that the figures compare.
    cams = gradcam(net, windows, layer, batch_size=options.batch_size)
    cam_vmax = float(cams.max()) if cams.size and cams.max() > 0 else None
    (out.root / ExplainLayout.GRADCAM_DIR).mkdir()
    for n, stem in enumerate(chosen.stems):
        fig = plot_site_cam(
            windows[n],
            cams[n],
            names,
            chosen.ids[n],
            float(chosen.xs[n]),
            float(chosen.ys[n]),
            element,
            layer=layer,
            cam_vmax=cam_vmax,
        )
        files[n].append(
            out.figure(
                fig,
                f"{ExplainLayout.GRADCAM_DIR}/{stem}.png",
                f"Grad-CAM at {layer} for site {chosen.ids[n]} ({CAM_UNITS})",
            )
        )
        advance(1)


def draw_site_sampling(
    net: nn.Module,
    windows: np.ndarray,
    chosen: ChosenSites,
    layer: str,
    options: ExplainOptions,
    out: OutputFiles,
    files: list[list[str]],
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """Draw one deformable layer's sampling and offset field at every site.

    Parameters
    ----------
    net
        The network.
    windows
        The sites' windows.
    chosen
        The sites.
    layer
        A deformable layer of ``net``.
    options
        The settings (``batch_size``).
    out
        Where the figures are written (``sampling/`` and ``offsets/``) and listed.
    files
        Each site's files, appended to.
    advance
        Called with 2 after each site's pair of figures.

    Returns
    -------
    dict
        The layer's sampling statistics at the sites, per class (:func:`sampling_summary`).
    """
    for folder in (ExplainLayout.SAMPLING_DIR, ExplainLayout.OFFSETS_DIR):
        (out.root / folder).mkdir(exist_ok=True)
    data = sampling_positions(net, windows, layer, batch_size=options.batch_size)
    for n, stem in enumerate(chosen.stems):
        label, site_id = chosen.label_name(n), chosen.ids[n]
        fig = plot_sampling(data, n, title=f"{layer} sampling at {label} {site_id}")
        files[n].append(
            out.figure(
                fig,
                f"{ExplainLayout.SAMPLING_DIR}/{stem}_{layer}.png",
                f"{layer} sampling positions of the middle output position, {site_id}",
            )
        )
        fig = plot_offset_field(data, n, title=f"{layer} mean offsets at {label} {site_id}")
        files[n].append(
            out.figure(
                fig,
                f"{ExplainLayout.OFFSETS_DIR}/{stem}_{layer}.png",
                f"{layer} mean offset per output position (cells), {site_id}",
            )
        )
        advance(2)
    return sampling_summary(data, chosen.labels)


def write_attribution_table(
    attribution: ElementAttribution, chosen: ChosenSites, out: OutputFiles
) -> None:
    """Write ``element_attribution.csv``: each site's label, cell, coordinates and contributions.

    Parameters
    ----------
    attribution
        The integrated-gradients contributions, one row per site.
    chosen
        The sites, in the same order.
    out
        Where the table is written and listed.
    """
    table = attribution.to_frame()
    table.insert(0, "label", [chosen.label_name(n) for n in range(len(chosen))])
    table.insert(1, "row", chosen.rows)
    table.insert(2, "col", chosen.cols)
    table.insert(3, "x", chosen.xs)
    table.insert(4, "y", chosen.ys)
    path = out.root / ExplainLayout.ATTRIBUTION_TABLE
    table.to_csv(path, index=True)
    out.record(
        path,
        f"integrated-gradients contribution of each element per site ({IG_UNITS}, summed "
        "over the window; baseline = 0 in transformed space) with logit and convergence delta",
    )


def completeness_notes(attribution: ElementAttribution) -> list[str]:
    """A note when some site's contributions do not add up to its logit change.

    A gap counts when it is above 5 % of that change, with a 1e-3 logit floor, as tiny
    changes make any relative gap large.

    Parameters
    ----------
    attribution
        The integrated-gradients contributions at the sites.

    Returns
    -------
    list of str
        Empty, or one note naming how many sites fall short and by how much.
    """
    change = np.abs(attribution.logit - attribution.baseline_logit)
    loose = np.abs(attribution.delta) > np.maximum(0.05 * change, 1e-3)
    if not loose.any():
        return []
    return [
        f"integrated gradients at {int(loose.sum())} of {len(loose)} sites add up to their "
        f"logit change only within {float(np.abs(attribution.delta).max()):.3g} logit "
        f"units (over 5 %); raise ig_steps for tighter attributions"
    ]


def write_sampling_summary(out: OutputFiles, summaries: dict[str, dict[str, Any]]) -> None:
    """Write ``sampling_summary.json`` (per deformable layer, at the sites and over the map).

    Parameters
    ----------
    out
        Where the file is written and listed.
    summaries
        Per layer, ``{"sites": ..., "map": ...}`` (``map`` absent without map outputs); nothing
        is written when empty (no deformable layer).
    """
    if not summaries:
        return
    path = out.root / ExplainLayout.SAMPLING_SUMMARY
    payload = {"units": SUMMARY_NOTES, "layers": summaries}
    path.write_text(json.dumps(json_safe(payload), indent=2), encoding="utf-8")
    out.record(
        path,
        "offset length, share of taps outside the map and mean mask, per class and over the map",
    )
