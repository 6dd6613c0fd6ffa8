"""Map figures shared by the comparison, the demo and the report.

All functions return :class:`matplotlib.figure.Figure` objects built without pyplot, so nothing
depends on global plotting state; ``save_figure`` writes one atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from gkdcn.io.atomic import atomic_path
from gkdcn.io.grid import Grid

if TYPE_CHECKING:
    from gkdcn.data.study import Study
    from gkdcn.experiments import Comparison

MODEL_LABELS = {"cnn": "CNN", "dcn": "DCN", "gk-cnn": "GK-CNN", "gk-dcn": "GK-DCN"}
DPI = 150


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
    faults: Any = None,
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
        ax.set_title(MODEL_LABELS.get(name, name))
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
        ax.plot(x, y, label=f"{MODEL_LABELS.get(model, model)} (AUC {auc:.3f}, n={n})")
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=0.8, label="random")
    ax.set(xlabel="share of valid area (%)", ylabel="held-out deposits captured (%)", title=title)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig


def comparison_figures(
    comparison: Comparison, study: Study, maps: dict[str, np.ndarray], out_dir: Path
) -> dict[str, Path]:
    """All figures of a comparison run; returns name -> path."""
    from gkdcn.evaluate import evaluate_map, plot_prediction_area, plot_roc, plot_success_rate
    from gkdcn.experiments import heldout_shares

    written: dict[str, Path] = {}
    deposits = study.sites.deposits()
    dep_xy = study.grid.xy(deposits.rows, deposits.cols)
    if maps:
        fig = map_panels(maps, study.grid, deposits_xy=dep_xy, faults=study.faults)
        fig.suptitle("Mean probability over seeds (authors' protocol)")
        written["maps"] = save_figure(fig, out_dir / "maps.png")
        evaluations = {
            MODEL_LABELS.get(m, m): evaluate_map(
                np.nan_to_num(p, nan=0.0), study.valid, deposits.rows, deposits.cols, n_boot=0
            )
            for m, p in maps.items()
        }
        written["roc"] = save_figure(plot_roc(evaluations), out_dir / "roc_authors.png")
        written["success"] = save_figure(
            plot_success_rate(evaluations), out_dir / "success_rate_authors.png"
        )
        best = "GK-DCN" if "GK-DCN" in evaluations else next(iter(evaluations))
        written["pa"] = save_figure(
            plot_prediction_area(evaluations[best], title=f"{best}, authors' protocol"),
            out_dir / "prediction_area_authors.png",
        )
    for protocol in comparison.plan.protocols:
        if protocol == "authors":
            continue
        shares = {
            model: heldout_shares(comparison.out_dir, protocol, model, comparison.plan.seeds)
            for model in comparison.plan.models
        }
        title = "Leave-one-deposit-out" if protocol == "lodo" else "Spatial blocks"
        fig = heldout_success_curves(shares, f"{title}\nheld-out deposits, all seeds pooled")
        written[f"success_{protocol}"] = save_figure(fig, out_dir / f"success_rate_{protocol}.png")
    return written
