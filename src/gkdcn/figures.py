"""Every gkdcn plot: map panels, held-out curves, ROC / PR / success-rate / prediction-area.

A leaf: it draws what it is given and imports nothing above :mod:`gkdcn.config` (so evaluation,
training, the comparison and explanations can all use it without cycles). All functions return :class:`matplotlib.figure.Figure` objects built without pyplot, so nothing
depends on global plotting state; ``save_figure`` writes one atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gkdcn.io.atomic import atomic_path
from gkdcn.io.grid import Grid
from gkdcn.models import registry

if TYPE_CHECKING:
    import geopandas as gpd

DPI = 150


class CurveSource(Protocol):
    """What the curve plots read from an evaluation (:class:`gkdcn.evaluate.Evaluation`)."""

    @property
    def auc(self) -> float:
        """Area under the ROC curve."""

    @property
    def auc_ci(self) -> tuple[float, float]:
        """The AUC's bootstrap 95 % interval."""

    @property
    def pr_auc(self) -> float:
        """Area under the precision-recall curve."""

    @property
    def prevalence(self) -> float:
        """Share of scored cells that are deposits (the precision-recall baseline)."""

    @property
    def success_auc(self) -> float:
        """Area under the success-rate curve."""

    @property
    def success_auc_ci(self) -> tuple[float, float]:
        """The success-rate AUC's bootstrap 95 % interval."""

    @property
    def roc(self) -> Any:
        """The ROC curve (false and true positive rates)."""

    @property
    def pr(self) -> Any:
        """The precision-recall curve."""

    @property
    def success(self) -> Any:
        """The success-rate curve (share of area against share of deposits captured)."""

    @property
    def pa(self) -> Any:
        """The prediction-area curves against the threshold."""

    @property
    def pa_intersection(self) -> Any:
        """Where the prediction-area curves cross."""


def save_figure(fig: Figure, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``fig`` as PNG atomically: the one way every gkdcn figure is saved."""
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _extent_km(grid: Grid) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return (left / 1000, right / 1000, bottom / 1000, top / 1000)


def map_panels(
    maps: dict[str, np.ndarray],
    grid: Grid,
    *,
    deposits_xy: tuple[np.ndarray, np.ndarray] | None = None,
    faults: gpd.GeoDataFrame | None = None,
    label: str = "probability",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    ncols: int | None = None,
) -> Figure:
    """Maps side by side on the grid's coordinates (km), deposits and faults overlaid."""
    names = list(maps)
    ncols = ncols or min(len(names), 2 if len(names) == 4 else len(names))
    nrows = int(np.ceil(len(names) / ncols))
    height, width = grid.shape
    aspect = height / max(width, 1)
    panel = 5.0
    fig = Figure(
        figsize=(panel * ncols + 1.2, panel * aspect * nrows + 0.8 * nrows + 0.4),
        dpi=150,
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    extent = _extent_km(grid)
    image = None
    for ax, name in zip(axes, names, strict=False):
        data = np.ma.masked_invalid(maps[name])
        image = ax.imshow(data, extent=extent, origin="upper", cmap=cmap, vmin=vmin, vmax=vmax)
        if faults is not None and len(faults):
            for geom in faults.geometry:
                for line in getattr(geom, "geoms", [geom]):
                    xs, ys = line.xy
                    ax.plot(
                        np.asarray(xs) / 1000,
                        np.asarray(ys) / 1000,
                        color="white",
                        lw=0.8,
                        alpha=0.8,
                    )
        if deposits_xy is not None:
            ax.scatter(
                deposits_xy[0] / 1000,
                deposits_xy[1] / 1000,
                marker="^",
                s=28,
                facecolor="red",
                edgecolor="black",
                linewidth=0.6,
                label="deposit",
                zorder=3,
            )
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(registry.label(name))
        ax.set_xlabel("easting (km)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("northing (km)")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(names)]), shrink=0.8, label=label)
    if deposits_xy is not None:
        axes[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    return fig


def heldout_success_curves(shares: dict[str, np.ndarray], title: str) -> Figure:
    """Success-rate curves from pooled held-out ranks (share of area at or above each deposit)."""
    fig = Figure(figsize=(5.2, 4.6), dpi=150)
    ax = fig.subplots()
    for model, values in shares.items():
        values = np.sort(np.asarray(values, dtype=float))
        n = len(values)
        x = np.concatenate([[0.0], np.repeat(values, 2), [1.0]]) * 100
        y = np.concatenate([[0.0], np.repeat(np.arange(n + 1), 2)[1:-1] / n, [1.0]]) * 100
        auc = 1.0 - values.mean()
        base = registry.is_baseline(model)  # baselines dotted, so the networks stand out
        label = f"{registry.label(model)}{' (baseline)' if base else ''}"
        ax.plot(x, y, ls=":" if base else "-", label=f"{label} (AUC {auc:.3f}, n={n})")
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=0.8, label="random")
    ax.set(xlabel="share of valid area (%)", ylabel="held-out deposits captured (%)", title=title)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig


def _ci_text(ci: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in ci):
        return ""
    return f", 95% CI {ci[0]:.3f}–{ci[1]:.3f}"


def _new_axes(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _check_curves(curves: Mapping[str, CurveSource]) -> None:
    if not curves:
        raise ValueError("nothing to plot: no evaluations given")


def _curves_against_diagonal(
    title: str, xlabel: str, ylabel: str, series: list[tuple[str, np.ndarray, np.ndarray]]
) -> Figure:
    """Curves in % on both axes over the dashed diagonal of a random ranking."""
    fig, ax = _new_axes(title)
    ax.plot([0, 100], [0, 100], ls="--", color="0.5", lw=1, label="random (AUC 0.500)")
    for label, x, y in series:
        ax.plot(100 * x, 100 * y, lw=1.8, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_roc(curves: Mapping[str, CurveSource]) -> Figure:
    """ROC curves of one or more evaluations (legend: AUC and its bootstrap CI)."""
    _check_curves(curves)
    return _curves_against_diagonal(
        "ROC curve",
        "False positive rate (% of background cells)",
        "True positive rate (% of deposit cells)",
        [
            (f"{name} (AUC {ev.auc:.3f}{_ci_text(ev.auc_ci)})", ev.roc.fpr, ev.roc.tpr)
            for name, ev in curves.items()
        ],
    )


def plot_pr(curves: Mapping[str, CurveSource]) -> Figure:
    """Precision-recall curves (legend: average precision); dotted lines show no-skill precision."""
    _check_curves(curves)
    fig, ax = _new_axes("Precision–recall curve")
    for name, ev in curves.items():
        (line,) = ax.plot(
            100 * ev.pr.recall,
            100 * ev.pr.precision,
            lw=1.8,
            label=f"{name} (AP {ev.pr_auc:.3f})",
        )
        ax.axhline(100 * ev.prevalence, ls=":", lw=1, color=line.get_color())
    ax.plot([], [], ls=":", color="0.5", label="no skill (deposit share of cells)")
    ax.set_xlabel("Recall (% of deposit cells)")
    ylabel = "Precision (% of selected cells that are deposits)"
    ax.set_xlim(0, 100)
    low = min(ev.prevalence for ev in curves.values())
    if low < 0.05:
        # On a map deposits are a tiny share of cells, so precision spans orders of magnitude.
        ax.set_yscale("log")
        ax.set_ylim(50 * low, 110)
        ylabel += ", log scale"
    else:
        ax.set_ylim(0, 101)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_success_rate(curves: Mapping[str, CurveSource]) -> Figure:
    """Success-rate curves: deposits captured against share of valid area, highest prob first."""
    _check_curves(curves)
    return _curves_against_diagonal(
        "Success-rate curve",
        "Cumulative area, highest probability first (% of valid area)",
        "Deposits captured (% of deposits)",
        [
            (
                f"{name} (AUC {ev.success_auc:.3f}{_ci_text(ev.success_auc_ci)})",
                ev.success.area,
                ev.success.captured,
            )
            for name, ev in curves.items()
        ],
    )


def plot_prediction_area(ev: CurveSource, title: str = "") -> Figure:
    """Prediction-area plot: prediction rate and occupied area against threshold.

    Prediction rate on the left axis, occupied area on the right axis (inverted); the curves cross
    where prediction rate = 100 - occupied area %.
    """
    full = "Prediction–area plot" + (f": {title}" if title else "")
    fig, ax = _new_axes(full)
    pa = ev.pa
    ax.plot(
        pa.threshold,
        100 * pa.prediction_rate,
        color="tab:blue",
        lw=1.8,
        label="prediction rate (% of deposits)",
    )
    # Plot 100 - area on the left scale and relabel the right axis inverted, so the right axis
    # reads occupied area while the crossing stays a true intersection of the two lines.
    ax.plot(
        pa.threshold,
        100 * (1 - pa.area_share),
        color="tab:red",
        lw=1.8,
        label="occupied area (% of valid area, right axis)",
    )
    right = ax.secondary_yaxis(
        "right", functions=(lambda v: np.subtract(100, v), lambda v: np.subtract(100, v))
    )
    right.set_ylabel("Occupied area (% of valid area)", color="tab:red")
    ax.set_ylabel("Prediction rate (% of deposits)", color="tab:blue")
    ax.set_xlabel("Probability threshold")
    ax.set_ylim(0, 101)
    t, rate, area = ev.pa_intersection
    if not math.isnan(t):
        ax.plot(
            [t],
            [100 * rate],
            "ko",
            ms=6,
            label=f"intersection: t = {t:.3g}, {100 * rate:.1f}% of deposits "
            f"in {100 * area:.1f}% of area",
        )
        ax.axvline(t, color="k", ls=":", lw=1)
    ax.legend(loc="lower left", fontsize="small")
    return fig
