"""The windows a network trains on: cut from the transformed stack, labelled, with knowledge.

The transform is fitted on the cells of the training windows only (or a pretrained trunk's is
used as it is); the knowledge weight of each window is read at the window's own centre cell.
Background windows (unlabelled) are cut from the same transformed stack, at centres drawn from a
:class:`~gkdcn.data.background.BackgroundPool`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.background import BackgroundPool
from gkdcn.data.samples import Padding, SampleSet, Split, extract_windows
from gkdcn.data.transforms import ChannelTransform, cells_in_windows
from gkdcn.errors import GkdcnError


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


def background_per_epoch(data: PreparedWindows, cfg: TrainConfig) -> int:
    """Background windows drawn per epoch (0 without a pool or with the ratio at 0)."""
    if data.background is None or len(data.background) == 0:
        return 0
    return round(cfg.background_ratio * len(data.train))
