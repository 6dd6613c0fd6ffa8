"""One network's training: the epochs, early stopping, the chosen epoch, the model file's bundle.

Early stopping watches the validation BCE (the same criterion for all four models, so model
selection does not favour the GK loss) and restores the best weights; without validation the
last epoch is kept; an :class:`EpochMonitor` may choose the epoch instead. Everything random is
driven by ``seed`` inside a forked RNG, so training twice with the same seed on the CPU gives
identical weights and leaves the caller's RNG untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from sklearn.metrics import roc_auc_score

from gkdcn.config import TrainConfig
from gkdcn.models.bundle import ModelBundle, now_iso, package_versions
from gkdcn.models.losses import BCELoss, GKLoss
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.pretrain import load_trunk
from gkdcn.runtime import resolve_precision, training_autocast
from gkdcn.training.calibration import calibrate
from gkdcn.training.stream import Stream
from gkdcn.training.windows import PreparedWindows, WindowData, background_per_epoch


@dataclass
class TrainResult:
    """One trained network: its model file's bundle, its history (a row per epoch), its epoch."""

    bundle: ModelBundle
    history: pd.DataFrame
    best_epoch: int


#: The history column of an :class:`EpochMonitor`'s score (empty on epochs it skips).
SELECTION_SCORE = "selection_score"


@dataclass(frozen=True)
class EpochMonitor:
    """What chooses the epoch instead of the validation BCE: the network's logits at chosen cells.

    Every ``period`` epochs (and at the last) the network scores the windows centred on
    ``rows``/``cols`` (cut from the prepared, transformed stack) and ``metric`` turns their
    logits into one number to maximise (history column :data:`SELECTION_SCORE`). The chosen
    epoch is the **earliest evaluated epoch whose score is within ``tolerance`` of the best
    score** (:func:`choose_epoch`), and training returns that epoch's weights. ``patience``
    (epochs, None = off) stops training that many epochs after the best score. Scoring runs in
    eval mode and draws from no random stream, so a monitored training takes exactly the steps
    of an unmonitored one: its weights at the chosen epoch are those of a training that stops
    there.
    """

    rows: np.ndarray
    cols: np.ndarray
    metric: Callable[[np.ndarray], float]
    period: int = 1
    tolerance: float = 0.0
    patience: int | None = None

    def evaluates(self, epoch: int, last: int) -> bool:
        """Whether ``epoch`` (of ``last``) is scored."""
        return epoch % self.period == 0 or epoch == last


def choose_epoch(epochs: Sequence[int], scores: Sequence[float], tolerance: float) -> int:
    """The earliest of ``epochs`` whose score is within ``tolerance`` of the best score.

    NaN scores never count; with no finite score, the last epoch.
    """
    values = np.asarray(scores, dtype=float)
    finite = np.isfinite(values)
    if len(epochs) == 0:
        raise ValueError("choose_epoch needs at least one epoch")
    if not finite.any():
        return int(epochs[-1])
    best = float(values[finite].max())
    return int(epochs[int(np.flatnonzero(finite & (values >= best - tolerance))[0])])


def fit_network(
    kind: str,
    data: PreparedWindows,
    cfg: TrainConfig,
    *,
    seed: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    monitor: EpochMonitor | None = None,
    trunk: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train one network on prepared windows; returns the bundle with the best weights.

    The best epoch is the one of least validation BCE, or the last without validation windows;
    with a ``monitor``, the one it chooses (:class:`EpochMonitor`). ``trunk``: pretrained
    trunk weights to start from (:mod:`gkdcn.pretrain`); the head starts fresh.
    """
    seed = cfg.seed if seed is None else seed
    cfg = resolved_config(cfg, device)
    spec = network_spec(kind, data, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, criterion = build_model(spec, cfg, device)
        if trunk is not None:
            load_trunk(net, {k: v.to(device) for k, v in trunk.items()})  # type: ignore[arg-type]
        params = list(net.parameters()) + list(criterion.parameters())
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        shuffler = torch.Generator().manual_seed(seed)
        if monitor is None:
            history, best_state, best_epoch = _loop(
                net, criterion, optimiser, shuffler, data, cfg, device, progress, label or kind,
                seed,
            )  # fmt: skip
        else:
            history, best_state, best_epoch = _monitored_loop(
                net, criterion, optimiser, shuffler, data, cfg, device, progress, label or kind,
                seed, monitor,
            )  # fmt: skip
    net.load_state_dict(best_state)
    return package_result(spec, net, criterion, data, cfg, seed, device, history, best_epoch)


def resolved_config(cfg: TrainConfig, device: str) -> TrainConfig:
    """``cfg`` with ``precision`` resolved for ``device`` (the model file records what ran)."""
    precision = resolve_precision(cfg.precision, device)
    return cfg if precision == cfg.precision else cfg.model_copy(update={"precision": precision})


def network_spec(kind: str, data: PreparedWindows, cfg: TrainConfig) -> ModelSpec:
    """The network ``kind`` on ``data``'s channels and window, shaped by ``cfg``."""
    return ModelSpec(
        kind=kind,
        in_channels=len(data.channels),
        window=data.window,
        head=cfg.head,
        dropout=cfg.dropout,
        width=cfg.width,
    )


def build_model(
    spec: ModelSpec, cfg: TrainConfig, device: str
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A freshly initialised network and its loss (from the global RNG: seed it first)."""
    net = build_network(spec).to(device)
    criterion: torch.nn.Module = (
        GKLoss(cfg.gk_loss, cfg.gk_lambda) if spec.knowledge_guided else BCELoss()
    ).to(device)
    return net, criterion


def package_result(
    spec: ModelSpec,
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    data: PreparedWindows,
    cfg: TrainConfig,
    seed: int,
    device: str,
    history: list[dict[str, Any]],
    best_epoch: int,
) -> TrainResult:
    """Calibrate the trained ``net`` (best weights loaded) and package it."""
    calibration = calibrate(net, data, cfg, seed, device)
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
            "background_per_epoch": background_per_epoch(data, cfg),
            **({"calibration": calibration} if calibration is not None else {}),
            **(
                {"gk_a": criterion.a.item(), "gk_b": criterion.b.item()}
                if isinstance(criterion, GKLoss)
                else {}
            ),
        },
    )
    return TrainResult(bundle=bundle, history=pd.DataFrame(history), best_epoch=best_epoch)


@dataclass
class Tracker:
    """One member's history, best epoch and early stopping."""

    net_state: dict[str, torch.Tensor]
    criterion_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False

    def record(
        self,
        row: dict[str, Any],
        has_val: bool,
        patience: int | None,
        snapshot: Any,
    ) -> None:
        """Add the epoch's row; keep ``snapshot()`` (net state, criterion state) if best."""
        self.history.append(row)
        # Without a validation set the configured epochs are the stopping rule: keep the last.
        monitored = row["val_loss"] if has_val else -float(row["epoch"])
        if monitored < self.best_loss:
            self.best_loss = monitored
            self.net_state, self.criterion_state = snapshot()
            self.best_epoch = row["epoch"]
            self.stale = 0
        else:
            self.stale += 1
        if has_val and patience is not None and self.stale >= patience:
            self.stopped = True


def progress_info(row: dict[str, Any], has_val: bool) -> str:
    """The progress bar's words for an epoch's history ``row``."""
    info = f"loss {row['train_loss']:.3f}"
    if has_val:
        info += f"  val {row['val_loss']:.3f}  acc {row['val_accuracy']:.2f}"
    return info


def _train_epoch(
    net: torch.nn.Module,
    stream: Stream,
    optimiser: torch.optim.Optimizer,
    autocast: torch.autocast,
) -> dict[str, float]:
    """One epoch of optimiser steps over ``stream``'s batches: the mean loss and accuracy."""
    net.train()
    stream.new_epoch()
    total_loss = 0.0
    correct = 0
    for i, start in enumerate(stream.starts()):
        drawn = stream.batch(i, start)
        if drawn is None:
            continue
        xb, batch = drawn
        with autocast:
            out = net(xb)
        # The loss in float32 (a no-op cast without autocast).
        loss, logits = stream.loss(i, batch, out.float())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total_loss += loss.item() * len(batch)
        correct += stream.correct(batch, logits)
    return {"train_loss": total_loss / stream.n, "train_accuracy": correct / stream.n}


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
    stream = Stream(data, cfg, criterion, shuffler, device, seed)
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)
    has_val = len(data.val) > 0
    tracker = Tracker(
        copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict()), history=[]
    )
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    for epoch in range(1, cfg.epochs + 1):
        row: dict[str, Any] = {"epoch": epoch, **_train_epoch(net, stream, optimiser, autocast)}
        if has_val:
            row.update(evaluate_windows(net, data.val, device))
        tracker.record(
            row,
            has_val,
            cfg.patience,
            lambda: (copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict())),
        )
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=progress_info(row, has_val))
        if tracker.stopped:
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    criterion.load_state_dict(tracker.criterion_state)  # the GK loss's a, b at the best epoch
    return tracker.history, tracker.net_state, tracker.best_epoch


@dataclass
class _ScoreTracker:
    """The monitored history, and the snapshots of the epochs that may be chosen.

    Every evaluated epoch within ``tolerance`` of the best score so far keeps its snapshot, so
    the earliest of them at the end is :func:`choose_epoch`'s.
    """

    monitor: EpochMonitor
    history: list[dict[str, Any]]
    candidates: list[tuple[int, float, Any]] = dataclasses.field(default_factory=list)
    best_score: float = -math.inf
    best_at: int = 0
    stopped: bool = False

    def record(self, row: dict[str, Any], snapshot: Callable[[], Any]) -> None:
        """Add the epoch's row; keep ``snapshot()`` if its score may be the chosen one."""
        self.history.append(row)
        epoch, score = row["epoch"], row.get(SELECTION_SCORE)
        tolerance = self.monitor.tolerance
        if score is not None and math.isfinite(score):
            if score > self.best_score:
                self.best_score, self.best_at = score, epoch
            self.candidates = [c for c in self.candidates if c[1] >= self.best_score - tolerance]
            if score >= self.best_score - tolerance:
                self.candidates.append((epoch, score, snapshot()))
        patience = self.monitor.patience
        if patience is not None and self.best_at and epoch - self.best_at >= patience:
            self.stopped = True


@torch.no_grad()
def _window_logits(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Logits of windows ``x`` in eval mode, float64 on the host."""
    net.eval()
    logits = torch.cat([net(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    return logits.double().cpu().numpy()


def _monitored_loop(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    shuffler: torch.Generator,
    data: PreparedWindows,
    cfg: TrainConfig,
    device: str,
    progress: Progress | None,
    label: str,
    seed: int,
    monitor: EpochMonitor,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], int]:
    """:func:`_loop` with the epoch chosen by ``monitor`` (the same training steps)."""
    stream = Stream(data, cfg, criterion, shuffler, device, seed)
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)
    has_val = len(data.val) > 0
    scored = torch.from_numpy(data.background_windows(monitor.rows, monitor.cols).x).to(device)
    tracker = _ScoreTracker(monitor, history=[])
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    for epoch in range(1, cfg.epochs + 1):
        row: dict[str, Any] = {"epoch": epoch, **_train_epoch(net, stream, optimiser, autocast)}
        if has_val:
            row.update(evaluate_windows(net, data.val, device))
        if monitor.evaluates(epoch, cfg.epochs):
            row[SELECTION_SCORE] = float(monitor.metric(_window_logits(net, scored)))
        tracker.record(
            row, lambda: (copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict()))
        )
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=progress_info(row, has_val))
        if tracker.stopped:
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    if tracker.candidates:
        epoch, _, (net_state, criterion_state) = tracker.candidates[0]
    else:  # no finite score: the last epoch, as without a monitor
        epoch = tracker.history[-1]["epoch"]
        net_state, criterion_state = copy.deepcopy(net.state_dict()), criterion.state_dict()
    criterion.load_state_dict(criterion_state)
    return tracker.history, net_state, epoch


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
