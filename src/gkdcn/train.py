"""One trainer for all four networks: windows in, a :class:`ModelBundle` and its history out.

Transforms are fitted on the cells of the training windows only; the knowledge weight of each
window is read at the window's own centre cell; early stopping watches the validation BCE (the
same criterion for all four models, so model selection does not favour the GK loss) and restores
the best weights. Everything random is driven by ``seed`` inside a forked RNG, so training twice
with the same seed on the CPU gives identical weights and leaves the caller's RNG untouched.

The recipe (``TrainConfig``; ``preset = "authors"`` switches it off):

- **background**: every epoch, ``background_ratio`` unlabelled windows per labelled one are drawn
  (seeded) from a :class:`~gkdcn.data.background.BackgroundPool` and cut from the stack that was
  transformed once; each batch holds labelled and background windows in that ratio, so batch
  norm also learns the statistics of the map it will be applied to. The background risk is
  non-negative PU or down-weighted BCE (:func:`gkdcn.models.losses.unlabelled_risk`);
- **knowledge on the background**: GK models add the GK prior term on background windows;
- **augmentation**: a random dihedral transform and Gaussian value noise per window per epoch;
- **calibration**: ``prior-shift`` adds a constant to the output logit (the last layer's bias) so
  the mean probability over background cells is ``class_prior``; it is recorded in
  ``bundle.info["calibration"]`` and, being part of the weights, applied wherever the model is.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from rich.progress import Progress
from sklearn.metrics import roc_auc_score

from gkdcn.config import ModelKind, TrainConfig, TransformConfig
from gkdcn.data.background import BackgroundPool, background_pool
from gkdcn.data.samples import Padding, SampleSet, Split, extract_windows
from gkdcn.data.transforms import ChannelTransform, cells_in_windows
from gkdcn.errors import GkdcnError
from gkdcn.figures import save_figure
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.models.bundle import ModelBundle, now_iso, package_versions
from gkdcn.models.losses import (
    BCELoss,
    GKLoss,
    knowledge_prior,
    soft_label_risk,
    unlabelled_risk,
)
from gkdcn.models.nets import ModelSpec, build_network


@dataclass
class WindowData:
    """Network-ready windows with labels and the knowledge weight at each window's centre."""

    x: np.ndarray  # (N, C, w, w) float32, transformed
    y: np.ndarray  # (N,) float32 in {0, 1}
    knowledge: np.ndarray  # (N,) float32 in [0, 1]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class PreparedWindows:
    """Training and validation windows plus the transform fitted on the training ones."""

    train: WindowData
    val: WindowData
    transform: ChannelTransform
    channels: list[str]
    window: int
    padding: Padding
    features: np.ndarray | None = None  # (C, H, W) transformed stack, to cut background from
    weight: np.ndarray | None = None  # (H, W) knowledge weight (zeros without knowledge)
    background: BackgroundPool | None = None  # None: labelled windows only

    def background_windows(self, rows: np.ndarray, cols: np.ndarray) -> WindowData:
        """Unlabelled windows (label 0, never used as one) at background centres."""
        if self.features is None or self.weight is None:
            raise GkdcnError("these prepared windows carry no stack to cut background from")
        x = extract_windows(self.features, rows, cols, self.window, self.padding)
        w = np.nan_to_num(self.weight[rows, cols].astype(np.float32), nan=0.0)
        return WindowData(x=x, y=np.zeros(len(rows), dtype=np.float32), knowledge=w)


@dataclass
class TrainResult:
    bundle: ModelBundle
    history: pd.DataFrame
    best_epoch: int


def prepare_windows(
    raw: np.ndarray,
    channels: list[str],
    knowledge: np.ndarray | None,
    samples: SampleSet,
    split: Split,
    transform_cfg: TransformConfig,
    window: int,
    padding: Padding,
    compositional: list[bool] | None = None,
    background: BackgroundPool | None = None,
) -> PreparedWindows:
    """Fit the transform on the training windows' cells, then cut and label both sides' windows.

    ``compositional`` (one bool per channel, default all) marks the channels the log / CLR applies
    to; the others (knowledge channel, auxiliary layers) are only scaled. ``background``, when
    given, is the pool the trainer draws unlabelled windows from each epoch (cut from the same
    transformed stack, so the transform is fitted and applied once).
    """
    train_idx = np.asarray(split.train, dtype=np.int64)
    val_idx = np.asarray(split.val, dtype=np.int64)
    if len(train_idx) == 0:
        raise GkdcnError(f"split '{split.name}' has no training windows")
    cells = cells_in_windows(
        raw.shape[1:], samples.rows[train_idx], samples.cols[train_idx], window
    )
    values = raw.reshape(raw.shape[0], -1)[:, cells].T
    transform = ChannelTransform.fit(
        values, transform_cfg.method, transform_cfg.scaling, compositional=compositional
    )
    features = transform.apply(raw)
    weight = knowledge if knowledge is not None else np.zeros(raw.shape[1:], dtype=np.float32)

    def cut(idx: np.ndarray) -> WindowData:
        rows, cols = samples.rows[idx], samples.cols[idx]
        x = extract_windows(features, rows, cols, window, padding, samples.aug[idx])
        w = np.nan_to_num(weight[rows, cols].astype(np.float32), nan=0.0)
        return WindowData(x=x, y=samples.labels[idx].astype(np.float32), knowledge=w)

    return PreparedWindows(
        train=cut(train_idx),
        val=cut(val_idx),
        transform=transform,
        channels=list(channels),
        window=window,
        padding=padding,
        features=features,
        weight=weight,
        background=background,
    )


def fit_network(
    kind: ModelKind,
    data: PreparedWindows,
    cfg: TrainConfig,
    *,
    seed: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
) -> TrainResult:
    """Train one network on prepared windows; returns the bundle with the best weights."""
    seed = cfg.seed if seed is None else seed
    spec = ModelSpec(
        kind=kind,
        in_channels=len(data.channels),
        window=data.window,
        head=cfg.head,
        dropout=cfg.dropout,
        width=cfg.width,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(spec).to(device)
        criterion: torch.nn.Module = (
            GKLoss(cfg.gk_loss, cfg.gk_lambda) if spec.knowledge_guided else BCELoss()
        ).to(device)
        params = list(net.parameters()) + list(criterion.parameters())
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        shuffler = torch.Generator().manual_seed(seed)
        history, best_state, best_epoch = _loop(
            net, criterion, optimiser, shuffler, data, cfg, device, progress, label or kind, seed
        )
    net.load_state_dict(best_state)
    calibration = _calibrate(net, data, cfg, seed, device)
    bundle = ModelBundle(
        spec=spec,
        state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        channels=data.channels,
        transform=data.transform,
        padding=data.padding,
        train_config={**cfg.model_dump(mode="json"), "seed": seed},
        info={
            "created": now_iso(),
            "versions": package_versions(),
            "best_epoch": best_epoch,
            "n_train": len(data.train),
            "n_val": len(data.val),
            "n_background_pool": 0 if data.background is None else len(data.background),
            "background_per_epoch": _n_background(data, cfg),
            **({"calibration": calibration} if calibration is not None else {}),
            **(
                {"gk_a": criterion.a.item(), "gk_b": criterion.b.item()}
                if isinstance(criterion, GKLoss)
                else {}
            ),
        },
    )
    return TrainResult(bundle=bundle, history=pd.DataFrame(history), best_epoch=best_epoch)


def _n_background(data: PreparedWindows, cfg: TrainConfig) -> int:
    """Background windows drawn per epoch (0 without a pool or with the ratio at 0)."""
    if data.background is None or len(data.background) == 0:
        return 0
    return round(cfg.background_ratio * len(data.train))


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random dihedral transform of each window (codes as in :mod:`gkdcn.data.samples`)."""
    codes = torch.randint(0, 8, (len(x),), generator=generator)
    out = x.clone()
    for code in torch.unique(codes).tolist():
        if code == 0:
            continue
        sel = codes == code
        block = torch.rot90(x[sel], code % 4, dims=(-2, -1))
        out[sel] = torch.flip(block, dims=(-1,)) if code >= 4 else block
    return out


def _loop(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    shuffler: torch.Generator,
    data: PreparedWindows,
    cfg: TrainConfig,
    device: str,
    progress: Progress | None,
    label: str,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], int]:
    x_train = torch.from_numpy(data.train.x).to(device)
    y_train = torch.from_numpy(data.train.y).to(device)
    k_train = torch.from_numpy(data.train.knowledge).to(device)
    n = len(y_train)
    n_bg = _n_background(data, cfg)
    # Separate seeded streams, so switching a lever on does not move the others' draws.
    bg_rng = np.random.default_rng([seed, 1])
    aug_gen = torch.Generator().manual_seed(seed + 7919)
    is_gk = isinstance(criterion, GKLoss)
    gk_on_background = is_gk and cfg.gk_background and criterion.applies_to_unlabelled
    # GK models with soft background labels: the background's prior follows the knowledge.
    prior_follows_knowledge = is_gk and cfg.knowledge_prior and cfg.background_loss == "soft"
    mean_weight = 0.0
    if n_bg and prior_follows_knowledge:
        assert data.background is not None and data.weight is not None
        pool = data.background
        mean_weight = float(np.nan_to_num(data.weight[pool.rows, pool.cols]).mean())
    has_val = len(data.val) > 0
    history: list[dict[str, Any]] = []
    best_loss = math.inf
    best_state = copy.deepcopy(net.state_dict())
    best_criterion = copy.deepcopy(criterion.state_dict())
    best_epoch = 0
    stale = 0
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.randperm(n, generator=shuffler).to(device)
        starts = list(range(0, n, cfg.batch_size))
        if n_bg:
            assert data.background is not None
            bg = data.background_windows(*data.background.draw(n_bg, bg_rng))
            x_bg = torch.from_numpy(bg.x).to(device)
            k_bg = torch.from_numpy(bg.knowledge).to(device)
            # The epoch's background, dealt evenly to the labelled batches.
            bg_bounds = np.linspace(0, n_bg, len(starts) + 1).round().astype(int)
        total_loss = 0.0
        correct = 0
        for i, start in enumerate(starts):
            batch = order[start : start + cfg.batch_size]
            xb, kb = x_train[batch], k_train[batch]
            m = 0
            if n_bg:
                xb = torch.cat([xb, x_bg[bg_bounds[i] : bg_bounds[i + 1]]])
                kb_u = k_bg[bg_bounds[i] : bg_bounds[i + 1]]
                m = len(kb_u)
            if len(batch) + m < 2 and n >= 2:  # BatchNorm needs two samples; skip a lone leftover
                continue
            if cfg.augment or cfg.noise > 0:
                if cfg.augment:
                    xb = augment_batch(xb, aug_gen)
                if cfg.noise > 0:
                    xb = xb + cfg.noise * torch.randn(xb.shape, generator=aug_gen).to(device)
            all_logits = net(xb)
            logits = all_logits[: len(batch)]
            yb = y_train[batch]
            loss = criterion(logits, yb, kb)
            if m:
                logits_u = all_logits[len(batch) :]
                if prior_follows_knowledge:
                    target = knowledge_prior(kb_u, cfg.class_prior, mean_weight)
                    risk = soft_label_risk(logits_u, target)
                else:
                    risk = unlabelled_risk(
                        logits_u, logits[yb > 0.5], cfg.background_loss, cfg.class_prior
                    )
                loss = loss + cfg.background_weight * risk
                if gk_on_background:
                    assert isinstance(criterion, GKLoss)
                    loss = loss + criterion.prior_term(logits_u, kb_u)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(batch)
            correct += int(((logits > 0).float() == yb).sum())
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "train_accuracy": correct / n,
        }
        if has_val:
            row.update(evaluate_windows(net, data.val, device))
        history.append(row)
        # Without a validation set the configured epochs are the stopping rule: keep the last.
        monitored = row["val_loss"] if has_val else -float(epoch)
        if monitored < best_loss:
            best_loss = monitored
            best_state = copy.deepcopy(net.state_dict())
            best_criterion = copy.deepcopy(criterion.state_dict())
            best_epoch = epoch
            stale = 0
        else:
            stale += 1
        if progress is not None and task is not None:
            info = f"loss {row['train_loss']:.3f}"
            if has_val:
                info += f"  val {row['val_loss']:.3f}  acc {row['val_accuracy']:.2f}"
            progress.update(task, advance=1, info=info)
        if has_val and cfg.patience is not None and stale >= cfg.patience:
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    criterion.load_state_dict(best_criterion)  # the GK loss's a, b as at the best epoch
    return history, best_state, best_epoch


CALIBRATION_CELLS = 4096  # background cells the prior shift is fitted on (seeded draw)


@torch.no_grad()
def _calibrate(
    net: torch.nn.Module, data: PreparedWindows, cfg: TrainConfig, seed: int, device: str
) -> dict[str, Any] | None:
    """Prior-shift calibration: a logit offset so the mean background probability is the prior.

    Background windows were sampled far more often than their share of any batch says, and the
    labelled windows are half deposits, so the raw output overstates the base rate. The offset
    is found by bisection on up to ``CALIBRATION_CELLS`` pool cells and added to the last layer's
    bias, so every consumer of the model file (predict, explain) applies it; ranks do not move.
    """
    if cfg.calibration != "prior-shift" or _n_background(data, cfg) == 0:
        return None
    assert data.background is not None
    rng = np.random.default_rng([seed, 2])
    rows, cols = data.background.draw(min(CALIBRATION_CELLS, len(data.background)), rng)
    bg = data.background_windows(rows, cols)
    net.eval()
    x = torch.from_numpy(bg.x).to(device)
    logits = torch.cat([net(x[i : i + 1024]) for i in range(0, len(x), 1024)]).double()
    lo, hi = -60.0, 60.0
    for _ in range(80):  # mean sigmoid(z + b) is increasing in b
        mid = 0.5 * (lo + hi)
        if float(torch.sigmoid(logits + mid).mean()) < cfg.class_prior:
            lo = mid
        else:
            hi = mid
    offset = 0.5 * (lo + hi)
    last = net.head[-1]  # type: ignore[index]
    if not isinstance(last, torch.nn.Linear) or last.bias is None:
        raise GkdcnError("calibration needs the network to end in a linear layer with a bias")
    last.bias.add_(offset)
    return {
        "method": "prior-shift",
        "logit_offset": offset,
        "target_mean_probability": cfg.class_prior,
        "cells": len(rows),
    }


@torch.no_grad()
def evaluate_windows(
    net: torch.nn.Module, data: WindowData, device: str = "cpu"
) -> dict[str, float]:
    """Validation BCE, accuracy and (when both classes are present) AUC."""
    net.eval()
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    logits = torch.cat([net(x[i : i + 1024]) for i in range(0, len(y), 1024)])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    out = {
        "val_loss": float(loss),
        "val_accuracy": float(((logits > 0).float() == y).float().mean()),
    }
    labels = data.y
    if 0 < labels.sum() < len(labels):
        out["val_auc"] = float(roc_auc_score(labels, logits.cpu().numpy()))
    return out


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


def write_training_outputs(
    result: TrainResult, out_dir: str | Path, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``model.pt``, ``history.csv`` and ``training_curve.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {
        "model": out_dir / "model.pt",
        "history": out_dir / "history.csv",
        "curve": out_dir / "training_curve.png",
    }
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


def train_study(
    study: Any,
    kind: ModelKind,
    *,
    samples: SampleSet | None = None,
    split: Split | None = None,
    cfg: TrainConfig | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: np.ndarray | None = None,
) -> TrainResult:
    """Train ``kind`` on a loaded :class:`gkdcn.data.study.Study` (its first split by default).

    ``exclude_background`` is an ``(H, W)`` mask of cells never to draw as background (a
    comparison passes the cells it ranks held-out deposits against).
    """
    from gkdcn.data.study import build_samples

    if kind in ("gk-cnn", "gk-dcn") and study.knowledge is None:
        raise GkdcnError(
            f"{kind} needs geological knowledge: set [knowledge] faults or weights in the config"
        )
    if samples is None or split is None:
        samples, splits = build_samples(study)
        split = splits[0]
    cfg = cfg or study.config.train
    pool = None
    if cfg.background_ratio > 0:
        pool = study_background(study, samples, split, cfg, exclude=exclude_background)
    data = prepare_windows(
        study.raw,
        study.names,
        study.knowledge,
        samples,
        split,
        study.config.transform,
        study.config.samples.window,
        study.config.samples.padding,
        compositional=study.compositional,
        background=pool,
    )
    result = fit_network(
        kind,
        data,
        cfg,
        seed=seed,
        device=device,
        progress=progress,
        label=label,
    )
    result.bundle.info.update({"study": study.config.name, "split": split.name})
    return result


def study_background(
    study: Any,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    exclude: np.ndarray | None = None,
) -> BackgroundPool:
    """The background pool of ``split`` on a study (:func:`gkdcn.data.background.background_pool`).

    The distance to training deposits defaults to half a window; held-out deposits are kept at
    least ``split.exclusion_radius`` away as well.
    """
    distance = cfg.background_distance
    if distance is None:
        distance = (study.config.samples.window // 2) * max(study.grid.cell_size)
    return background_pool(
        study.valid,
        study.grid,
        study.sites,
        samples,
        split,
        min_distance=distance,
        exclusion_radius=study.config.split.exclusion_radius,
        exclude=exclude,
    )
