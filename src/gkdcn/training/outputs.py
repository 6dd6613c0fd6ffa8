"""A training folder: the model file, the history and the training curve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from gkdcn.figures import save_figure
from gkdcn.io.atomic import atomic_path, check_writable

if TYPE_CHECKING:  # the result's type only: writing needs no torch
    from gkdcn.training.loop import TrainResult


def training_curve(history: pd.DataFrame, title: str = "") -> Figure:
    """Loss and accuracy per epoch, training and validation."""
    fig = Figure(figsize=(9, 3.6), dpi=150)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(history["epoch"], history["train_loss"], label="training")
    ax_acc.plot(history["epoch"], history["train_accuracy"], label="training")
    if "val_loss" in history:
        ax_loss.plot(history["epoch"], history["val_loss"], label="validation (BCE)")
        ax_acc.plot(history["epoch"], history["val_accuracy"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# The files of a training folder (``gkdcn train --out``, and each job folder of a comparison,
# whose RunLayout.MODEL names the same model file).
TRAINING_FILES = {"model": "model.pt", "history": "history.csv", "curve": "training_curve.png"}


def training_paths(out_dir: str | Path) -> dict[str, Path]:
    """The paths :func:`write_training_outputs` writes in ``out_dir``, by ``TRAINING_FILES`` key."""
    return {key: Path(out_dir) / name for key, name in TRAINING_FILES.items()}


def write_training_outputs(
    result: TrainResult, out_dir: str | Path, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``model.pt``, ``history.csv`` and ``training_curve.png`` into ``out_dir``."""
    paths = training_paths(out_dir)
    for path in paths.values():
        check_writable(path, overwrite)
    result.bundle.save(paths["model"], overwrite=overwrite)
    with atomic_path(paths["history"], overwrite) as tmp:
        result.history.to_csv(tmp, index=False)
    fig = training_curve(
        result.history, title=f"{result.bundle.kind} (best epoch {result.best_epoch})"
    )
    save_figure(fig, paths["curve"], overwrite)
    return paths
