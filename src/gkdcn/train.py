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
import dataclasses
import functools
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from rich.progress import Progress
from sklearn.metrics import roc_auc_score

from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.background import BackgroundPool, background_pool
from gkdcn.data.samples import Padding, SampleSet, Split, extract_windows
from gkdcn.data.transforms import ChannelTransform, cells_in_windows
from gkdcn.errors import GkdcnError
from gkdcn.figures import save_figure
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.models import registry
from gkdcn.models.bundle import ModelBundle, grid_record, now_iso, package_versions
from gkdcn.models.losses import (
    BCELoss,
    GKLoss,
    knowledge_prior,
    soft_label_risk,
    unlabelled_risk,
)
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.models.stacked import StackedNet, stack_networks
from gkdcn.pretrain import PretrainResult, load_trunk, pretrain_for_training

if TYPE_CHECKING:  # loading a study needs geopandas and rasterio, which training does not
    from gkdcn.data.study import Study


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
    transform: ChannelTransform | None = None,
) -> PreparedWindows:
    """Fit the transform on the training windows' cells, then cut and label both sides' windows.

    ``compositional`` (one bool per channel, default all) marks the channels the log / CLR applies
    to; the others (knowledge channel, auxiliary layers) are only scaled. ``background``, when
    given, is the pool the trainer draws unlabelled windows from each epoch (cut from the same
    transformed stack, so the transform is fitted and applied once). ``transform``, when given,
    is used as it is instead (a pretrained trunk's, fitted on every valid cell).
    """
    train_idx = np.asarray(split.train, dtype=np.int64)
    val_idx = np.asarray(split.val, dtype=np.int64)
    if len(train_idx) == 0:
        raise GkdcnError(f"split '{split.name}' has no training windows")
    if transform is None:
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


Precision = Literal["float32", "bfloat16"]


def resolve_precision(precision: str, device: str) -> Precision:
    """The training arithmetic ``precision`` (a :class:`TrainConfig` value) means on
    ``device``: ``"auto"`` is bfloat16 where :func:`native_bfloat16` says so, else float32."""
    if precision == "float32":
        return "float32"
    if precision == "bfloat16":
        return "bfloat16"
    if precision != "auto":
        raise GkdcnError(f"unknown precision {precision!r} (choose auto, float32 or bfloat16)")
    return "bfloat16" if native_bfloat16(device) else "float32"


def native_bfloat16(device: str) -> bool:
    """Whether bfloat16 products run faster than float32 ones on ``device``: a CUDA GPU of
    compute capability 8 or newer, or a CPU whose bfloat16 units outrun its float32 ones.

    Such a CPU has AMX (Intel Sapphire Rapids and later, where the host exposes it), or is an
    AMD processor with AVX512-BF16 (Zen 4 and later: training steps measured 1.2-1.6x faster).
    AVX512-BF16 without AMX on an Intel processor (Cooper Lake; Sapphire or Granite Rapids
    whose host hides AMX, as virtual machines often do) is native but no faster: there oneDNN's
    bfloat16 products ran at 0.6x float32's rate and the training steps at 0.6-0.8x (README,
    "Training precision"). Elsewhere bfloat16 is emulated, and slower.
    """
    where = torch.device(device)
    kind = where.type
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        # Not torch.cuda.is_bf16_supported(): it counts emulation (pre-Ampere GPUs) and asks
        # the current device. bfloat16 tensor cores came with compute capability 8 (Ampere).
        return torch.cuda.get_device_properties(where).major >= 8
    if kind != "cpu":
        return False
    if _cpu_probe("_is_amx_tile_supported"):
        return True
    return _cpu_probe("_is_avx512_bf16_supported") and cpu_vendor() == "AuthenticAMD"


def _cpu_probe(name: str) -> bool:
    """One of torch.cpu's private feature probes (no public API in torch 2.13); an absent
    one counts as "no"."""
    return bool(getattr(torch.cpu, name, lambda: False)())


@functools.cache
def cpu_vendor() -> str:
    """The x86 vendor string of this machine's CPU (``"GenuineIntel"``, ``"AuthenticAMD"``),
    or ``""`` where it cannot be told (other architectures, unreadable ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    # Windows names the vendor in the processor string ("AMD64 Family 25 ... AuthenticAMD").
    processor = platform.processor()
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in processor), "")


def training_autocast(precision: Precision, device: str) -> torch.autocast:
    """The context the forward passes of training steps run in: bfloat16 autocast, or off."""
    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16"
    )


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
    cfg = _resolved(cfg, device)
    spec = _spec(kind, data, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, criterion = _build(spec, cfg, device)
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
    return _result(spec, net, criterion, data, cfg, seed, device, history, best_epoch)


def _resolved(cfg: TrainConfig, device: str) -> TrainConfig:
    """``cfg`` with ``precision`` resolved for ``device`` (the model file records what ran)."""
    precision = resolve_precision(cfg.precision, device)
    return cfg if precision == cfg.precision else cfg.model_copy(update={"precision": precision})


def _spec(kind: str, data: PreparedWindows, cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(
        kind=kind,
        in_channels=len(data.channels),
        window=data.window,
        head=cfg.head,
        dropout=cfg.dropout,
        width=cfg.width,
    )


def _build(
    spec: ModelSpec, cfg: TrainConfig, device: str
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A freshly initialised network and its loss (from the global RNG: seed it first)."""
    net = build_network(spec).to(device)
    criterion: torch.nn.Module = (
        GKLoss(cfg.gk_loss, cfg.gk_lambda) if spec.knowledge_guided else BCELoss()
    ).to(device)
    return net, criterion


def _result(
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
    """A random dihedral transform of each window (codes as in :mod:`gkdcn.data.samples`).

    Window ``i`` gets code ``c`` = ``torch.randint(0, 8)``: ``rot90`` by ``c % 4`` quarter turns,
    then a flip of the columns when ``c >= 4``. All windows move in one gather of their cells
    (each code is a fixed permutation of a square window's cells), not one rotation per code.
    """
    codes = torch.randint(0, 8, (len(x),), generator=generator)
    n, channels, height, width = x.shape
    perm = _dihedral_permutations(height, width).to(x.device)[codes.to(x.device)]
    cells = perm.unsqueeze(1).expand(n, channels, height * width)
    return x.reshape(n, channels, -1).gather(2, cells).view(n, channels, height, width)


@functools.cache
def _dihedral_permutations(height: int, width: int) -> torch.Tensor:
    """(8, height*width) int64: row ``c`` lists, for each cell of a window transformed by code
    ``c`` (``rot90`` by ``c % 4``, then a column flip when ``c >= 4``), the cell it comes from."""
    if height != width:
        raise ValueError(f"dihedral transforms need square windows, got {height} x {width}")
    cells = torch.arange(height * width).view(height, width)
    out = []
    for code in range(8):
        moved = torch.rot90(cells, code % 4, dims=(0, 1))
        out.append((torch.flip(moved, dims=(1,)) if code >= 4 else moved).reshape(-1))
    return torch.stack(out)


class _Stream:
    """One member's training data and its seeded draws: data order, background, augmentation.

    Solo and stacked training take every batch and every loss from a stream, so a member of a
    stack sees exactly the batches, draws and loss terms it would see training alone.
    """

    def __init__(
        self,
        data: PreparedWindows,
        cfg: TrainConfig,
        criterion: torch.nn.Module,
        shuffler: torch.Generator,
        device: str,
        seed: int,
    ) -> None:
        self.data, self.cfg, self.criterion, self.device = data, cfg, criterion, device
        self.shuffler = shuffler
        self.x_train = torch.from_numpy(data.train.x).to(device)
        self.y_train = torch.from_numpy(data.train.y).to(device)
        self.k_train = torch.from_numpy(data.train.knowledge).to(device)
        self.n = len(self.y_train)
        self.n_bg = _n_background(data, cfg)
        # Separate seeded streams, so switching a lever on does not move the others' draws.
        self.bg_rng = np.random.default_rng([seed, 1])
        self.aug_gen = torch.Generator().manual_seed(seed + 7919)
        is_gk = isinstance(criterion, GKLoss)
        self.gk_on_background = is_gk and cfg.gk_background and criterion.applies_to_unlabelled
        # GK models with soft background labels: the background's prior follows the knowledge.
        self.prior_follows_knowledge = (
            is_gk and cfg.knowledge_prior and cfg.background_loss == "soft"
        )
        self.mean_weight = 0.0
        if self.n_bg and self.prior_follows_knowledge:
            assert data.background is not None and data.weight is not None
            pool = data.background
            self.mean_weight = float(np.nan_to_num(data.weight[pool.rows, pool.cols]).mean())

    def starts(self) -> list[int]:
        """First labelled window of each batch of an epoch."""
        return list(range(0, self.n, self.cfg.batch_size))

    def new_epoch(self) -> None:
        """Draw the epoch's data order and background windows."""
        self.order = torch.randperm(self.n, generator=self.shuffler).to(self.device)
        if self.n_bg:
            data = self.data
            assert data.background is not None
            bg = data.background_windows(*data.background.draw(self.n_bg, self.bg_rng))
            self.x_bg = torch.from_numpy(bg.x).to(self.device)
            self.k_bg = torch.from_numpy(bg.knowledge).to(self.device)
            # The epoch's background, dealt evenly to the labelled batches.
            self.bg_bounds = np.linspace(0, self.n_bg, len(self.starts()) + 1).round().astype(int)

    def batch(self, i: int, start: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Batch ``i``'s windows (labelled first, then background) and their indices, or None
        for a lone leftover window (batch norm needs two samples)."""
        batch = self.order[start : start + self.cfg.batch_size]
        xb = self.x_train[batch]
        m = 0
        if self.n_bg:
            lo, hi = self.bg_bounds[i], self.bg_bounds[i + 1]
            xb = torch.cat([xb, self.x_bg[lo:hi]])
            m = hi - lo
        if len(batch) + m < 2 and self.n >= 2:
            return None
        cfg = self.cfg
        if cfg.augment or cfg.noise > 0:
            if cfg.augment:
                xb = augment_batch(xb, self.aug_gen)
            if cfg.noise > 0:
                noise = torch.randn(xb.shape, generator=self.aug_gen).to(self.device)
                xb = xb + cfg.noise * noise
        return xb, batch

    def loss(
        self, i: int, batch: torch.Tensor, all_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss and its labelled windows' logits."""
        cfg, criterion = self.cfg, self.criterion
        logits = all_logits[: len(batch)]
        yb, kb = self.y_train[batch], self.k_train[batch]
        loss = criterion(logits, yb, kb)
        if self.n_bg and self.bg_bounds[i + 1] > self.bg_bounds[i]:
            kb_u = self.k_bg[self.bg_bounds[i] : self.bg_bounds[i + 1]]
            logits_u = all_logits[len(batch) :]
            if self.prior_follows_knowledge:
                target = knowledge_prior(kb_u, cfg.class_prior, self.mean_weight)
                risk = soft_label_risk(logits_u, target)
            else:
                risk = unlabelled_risk(
                    logits_u, logits[yb > 0.5], cfg.background_loss, cfg.class_prior
                )
            loss = loss + cfg.background_weight * risk
            if self.gk_on_background:
                assert isinstance(criterion, GKLoss)
                loss = loss + criterion.prior_term(logits_u, kb_u)
        return loss, logits

    def correct(self, batch: torch.Tensor, logits: torch.Tensor) -> int:
        return int(((logits > 0).float() == self.y_train[batch]).sum())


@dataclass
class _Tracker:
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


def _progress_info(row: dict[str, Any], has_val: bool) -> str:
    info = f"loss {row['train_loss']:.3f}"
    if has_val:
        info += f"  val {row['val_loss']:.3f}  acc {row['val_accuracy']:.2f}"
    return info


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
    stream = _Stream(data, cfg, criterion, shuffler, device, seed)
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)
    has_val = len(data.val) > 0
    tracker = _Tracker(
        copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict()), history=[]
    )
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    for epoch in range(1, cfg.epochs + 1):
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
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total_loss / stream.n,
            "train_accuracy": correct / stream.n,
        }
        if has_val:
            row.update(evaluate_windows(net, data.val, device))
        tracker.record(
            row,
            has_val,
            cfg.patience,
            lambda: (copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict())),
        )
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=_progress_info(row, has_val))
        if tracker.stopped:
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    criterion.load_state_dict(tracker.criterion_state)  # the GK loss's a, b at the best epoch
    return tracker.history, tracker.net_state, tracker.best_epoch


@dataclass
class _ScoreTracker:
    """The monitored history: every evaluated epoch within ``tolerance`` of the best score so
    far keeps its snapshot, so the earliest of them at the end is :func:`choose_epoch`'s."""

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
    stream = _Stream(data, cfg, criterion, shuffler, device, seed)
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)
    has_val = len(data.val) > 0
    scored = torch.from_numpy(data.background_windows(monitor.rows, monitor.cols).x).to(device)
    tracker = _ScoreTracker(monitor, history=[])
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    for epoch in range(1, cfg.epochs + 1):
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
            loss, logits = stream.loss(i, batch, out.float())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(batch)
            correct += stream.correct(batch, logits)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total_loss / stream.n,
            "train_accuracy": correct / stream.n,
        }
        if has_val:
            row.update(evaluate_windows(net, data.val, device))
        if monitor.evaluates(epoch, cfg.epochs):
            row[SELECTION_SCORE] = float(monitor.metric(_window_logits(net, scored)))
        tracker.record(
            row, lambda: (copy.deepcopy(net.state_dict()), copy.deepcopy(criterion.state_dict()))
        )
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=_progress_info(row, has_val))
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


def fit_networks(
    kind: str,
    data: Sequence[PreparedWindows],
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
) -> list[TrainResult]:
    """Train one network per seed at once, as one stacked model; one result per seed.

    ``data[i]`` are seed ``i``'s prepared windows (e.g. its own background pool); all must have
    the same number of training windows, channels and window size. Each member is initialised,
    shuffled, augmented, given background and dropout masks exactly as :func:`fit_network` with
    its seed would, and stops early on its own validation set, so each result equals
    ``fit_network(kind, data[i], cfg, seed=seeds[i])`` up to floating-point rounding (the
    grouped layers sum in another order). Every step runs the members' layers as one grouped
    layer (:class:`gkdcn.models.stacked.StackedNet`): fewer, larger kernels, which pays where
    per-kernel overhead dominates; on a 2-core CPU it measured no gain per CPU-second (README,
    Benchmarks), so ``gkdcn compare`` stacks only with ``--stack-seeds``.
    """
    if len(data) != len(seeds) or not seeds:
        raise GkdcnError(f"fit_networks needs one prepared fold per seed, got {len(data)}")
    specs = [_spec(kind, d, cfg) for d in data]
    if any(spec != specs[0] for spec in specs) or len({len(d.train) for d in data}) != 1:
        raise GkdcnError("stacked trainings need folds of one shape (windows, channels, size)")
    spec = specs[0]
    cfg = _resolved(cfg, device)
    with torch.random.fork_rng(devices=[]):
        nets, criteria, rng_states = [], [], []
        for seed in seeds:
            torch.manual_seed(seed)
            net, criterion = _build(spec, cfg, device)
            nets.append(net)
            criteria.append(criterion)
            # What the solo run's dropout draws from next.
            rng_states.append(torch.get_rng_state())
        stacked = stack_networks(nets)  # type: ignore[arg-type]
        stacked.dropout_states = rng_states
        params = list(stacked.parameters()) + [p for c in criteria for p in c.parameters()]
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        streams = [
            _Stream(d, cfg, c, torch.Generator().manual_seed(seed), device, seed)
            for d, c, seed in zip(data, criteria, seeds, strict=True)
        ]
        trackers = _stacked_loop(
            stacked, criteria, optimiser, streams, cfg, device, progress, label or kind
        )
    results = []
    for index, (tracker, d, seed) in enumerate(zip(trackers, data, seeds, strict=True)):
        net = nets[index]
        net.load_state_dict(tracker.net_state)
        criteria[index].load_state_dict(tracker.criterion_state)
        results.append(
            _result(spec, net, criteria[index], d, cfg, seed, device, tracker.history,
                    tracker.best_epoch)
        )  # fmt: skip
    return results


def _stacked_loop(
    net: StackedNet,
    criteria: list[torch.nn.Module],
    optimiser: torch.optim.Optimizer,
    streams: list[_Stream],
    cfg: TrainConfig,
    device: str,
    progress: Progress | None,
    label: str,
) -> list[_Tracker]:
    """:func:`_loop` for every member of ``net`` at once (members that stopped early keep
    training with the rest, but their histories and best states no longer change)."""
    size = len(streams)
    has_val = [len(s.data.val) > 0 for s in streams]
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)

    def snapshot(index: int) -> Any:
        return lambda: (net.member_state(index), copy.deepcopy(criteria[index].state_dict()))

    trackers = []
    for index in range(size):
        net_state, criterion_state = snapshot(index)()
        trackers.append(_Tracker(net_state, criterion_state, history=[]))
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    starts = streams[0].starts()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for stream in streams:
            stream.new_epoch()
        totals = [0.0] * size
        correct = [0] * size
        for i, start in enumerate(starts):
            drawn = [stream.batch(i, start) for stream in streams]
            if drawn[0] is None:  # the same batch sizes in every member
                continue
            batches = [d[1] for d in drawn if d is not None]
            xb = torch.cat([d[0] for d in drawn if d is not None], dim=1)
            with autocast:
                all_logits = net(xb).float()
            losses, logits = [], []
            for k, stream in enumerate(streams):
                loss, member_logits = stream.loss(i, batches[k], all_logits[k])
                losses.append(loss)
                logits.append(member_logits)
            optimiser.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimiser.step()
            for k, stream in enumerate(streams):
                totals[k] += losses[k].item() * len(batches[k])
                correct[k] += stream.correct(batches[k], logits[k])
        for k, (stream, tracker) in enumerate(zip(streams, trackers, strict=True)):
            if tracker.stopped:
                continue
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": totals[k] / stream.n,
                "train_accuracy": correct[k] / stream.n,
            }
            if has_val[k]:
                row.update(evaluate_windows(net.member(k), stream.data.val, device))
            tracker.record(row, has_val[k], cfg.patience, snapshot(k))
        if progress is not None and task is not None:
            progress.update(
                task, advance=1, info=_progress_info(trackers[0].history[-1], has_val[0])
            )
        if all(t.stopped for t in trackers):
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    return trackers


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


def train_study(
    study: Study,
    kind: str,
    *,
    samples: SampleSet | None = None,
    split: Split | None = None,
    cfg: TrainConfig | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: np.ndarray | None = None,
    monitor: EpochMonitor | None = None,
    pretrained: PretrainResult | None = None,
) -> TrainResult:
    """Train ``kind`` on a loaded :class:`gkdcn.data.study.Study` (its first split by default).

    ``exclude_background`` is an ``(H, W)`` mask of cells never to draw as background (a
    comparison passes the cells it ranks held-out deposits against). ``monitor`` chooses the
    epoch (:class:`EpochMonitor`; by default the validation BCE does). With ``cfg.pretrain``
    on, the network starts from ``pretrained`` (made here when not given) and its inputs take
    that pretraining's transform.
    """
    from gkdcn.data.study import build_samples

    if samples is None or split is None:
        samples, splits = build_samples(study)
        split = splits[0]
    cfg = cfg or study.config.train
    seed = cfg.seed if seed is None else seed
    if cfg.pretrain != "off" and pretrained is None:
        pretrained = pretrain_for_training(study, kind, cfg, seed, device=device)
    if cfg.pretrain == "off":
        pretrained = None
    data = _study_windows(
        study, kind, samples, split, cfg, exclude_background,
        transform=pretrained.transform if pretrained is not None else None,
    )  # fmt: skip
    result = fit_network(
        kind,
        data,
        cfg,
        seed=seed,
        device=device,
        progress=progress,
        label=label,
        monitor=monitor,
        trunk=pretrained.trunk if pretrained is not None else None,
    )
    result.bundle.info.update({"study": study.config.name, "split": split.name})
    result.bundle.info.update(grid_record(study.grid))
    if pretrained is not None:
        result.bundle.info["pretrain"] = {
            "method": cfg.pretrain,
            "epochs": len(pretrained.losses),
            "loss_first": pretrained.losses[0],
            "loss_last": pretrained.losses[-1],
        }
    return result


def train_study_seeds(
    study: Study,
    kind: str,
    samples: SampleSet,
    splits: Sequence[Split],
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: Sequence[np.ndarray | None] | None = None,
) -> list[TrainResult]:
    """:func:`train_study` for several seeds at once (:func:`fit_networks`): ``splits[i]`` and
    ``exclude_background[i]`` belong to ``seeds[i]``; the splits must have equally many
    training windows. Each result equals ``train_study`` with that seed up to rounding."""
    excludes = list(exclude_background) if exclude_background is not None else [None] * len(seeds)
    if not len(splits) == len(seeds) == len(excludes):
        raise GkdcnError("train_study_seeds needs one split and one exclusion mask per seed")
    data = [
        _study_windows(study, kind, samples, split, cfg, exclude)
        for split, exclude in zip(splits, excludes, strict=True)
    ]
    results = fit_networks(kind, data, cfg, seeds, device=device, progress=progress, label=label)
    for result, split in zip(results, splits, strict=True):
        result.bundle.info.update({"study": study.config.name, "split": split.name})
        result.bundle.info.update(grid_record(study.grid))
    return results


def _study_windows(
    study: Study,
    kind: str,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    exclude: np.ndarray | None,
    transform: ChannelTransform | None = None,
) -> PreparedWindows:
    """The prepared windows (and background pool) of ``split`` on a study."""
    if registry.model_kind(kind).needs_knowledge and study.knowledge is None:
        raise GkdcnError(
            f"{kind} needs geological knowledge: set [knowledge] faults or weights in the config"
        )
    pool = None
    if cfg.background_ratio > 0:
        pool = study_background(study, samples, split, cfg, exclude=exclude)
    return prepare_windows(
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
        transform=transform,
    )


def study_background(
    study: Study,
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


def train_and_write(
    study: Study,
    kind: str,
    out_dir: str | Path,
    *,
    samples: SampleSet,
    split: Split,
    seed: int,
    seeds: int = 1,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[TrainResult, dict[str, Path]]:
    """Train ``seeds`` networks of ``kind`` (seeds ``seed``, ``seed + 1``, ...) and write them.

    What ``gkdcn train`` does once the study and its samples are ready: with one seed the
    model file holds that network; with several it holds all of them as one seed ensemble
    (members averaged by prediction), and the history and training curve are the first
    member's.

    Parameters
    ----------
    study
        The loaded study, its config as the training should use it.
    kind
        A network kind of the registry (``cnn``, ``dcn``, ``gk-cnn``, ``gk-dcn``).
    out_dir
        Folder for ``model.pt``, ``history.csv`` and ``training_curve.png``
        (:func:`training_paths`).
    samples, split
        The windows and the split every member trains on.
    seed
        The first member's seed.
    seeds
        How many members to train (at least 1).
    device
        A resolved device type (``"cpu"``, ``"cuda"``, ``"mps"``).
    overwrite
        Replace earlier training outputs (:func:`write_training_outputs`).
    progress
        A started progress display: one bar per member.
    log
        Told, before writing, how an ensemble's members went into the one model file.

    Returns
    -------
    tuple of TrainResult and dict
        The training (the ensemble's bundle with the first member's history) and the paths
        written, by :data:`TRAINING_FILES` key.
    """
    results = [
        train_study(
            study,
            kind,
            samples=samples,
            split=split,
            seed=seed + i,
            device=device,
            progress=progress,
            label=f"{kind} seed {seed + i}" if seeds > 1 else None,
        )
        for i in range(seeds)
    ]
    result = results[0]
    if seeds > 1:
        result = dataclasses.replace(
            result, bundle=ModelBundle.ensemble([r.bundle for r in results])
        )
        if log is not None:
            log(
                f"{seeds} members (seeds {seed}-{seed + seeds - 1}) in one model file; "
                "history and training curve of the first"
            )
    return result, write_training_outputs(result, out_dir, overwrite=overwrite)
