"""Per-cell value transforms (log, centred log-ratio) and per-channel scaling.

A :class:`ChannelTransform` is fitted on the raw cell values of the **training windows only** (use
:func:`cells_in_windows` to find those cells) and saved with the model as plain JSON
(:meth:`ChannelTransform.to_dict`), so prediction on a new map applies exactly the same numbers.

The pipeline for one cell with raw values ``x`` (one per channel) is:

1. ``method = "log"``: ``log10(x + shift)``; ``"clr"``: ``ln(x + shift)`` minus the mean of
   ``ln(x + shift)`` over the compositional channels of the same cell (the centred log-ratio of
   compositional data); ``"none"``: ``x``. ``x + shift`` is first clipped below at a per-channel
   ``floor`` so a new map with smaller values than the training data never gives NaN (see
   ChannelTransform). This step applies to the **compositional** channels only (concentrations,
   parts of one composition); the others (the knowledge channel, a magnetic or distance layer:
   ``[elements] auxiliary``) keep their raw value and are only scaled, because a log-ratio across
   a non-part would move every element's value with it.
2. ``scaling = "standard"``: ``(v - mean) / std``; ``"robust"``: ``(v - median) / (IQR / 1.349)``;
   ``"none"``: unchanged.
3. A cell where any channel is NaN (or infinite) is invalid and becomes 0 in every channel. After
   standard scaling 0 is the training mean; this is the project's single padding/invalid rule
   (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import numpy as np

from gkdcn.errors import GkdcnError

Method = Literal["none", "log", "clr"]
Scaling = Literal["none", "standard", "robust"]
METHODS: tuple[str, ...] = get_args(Method)
SCALINGS: tuple[str, ...] = get_args(Scaling)

# IQR of a standard normal distribution: IQR / 1.349 estimates the standard deviation.
_IQR_TO_STD = 1.349
# Version 1: every channel compositional. Version 2 adds the "compositional" mask; it is written
# only when some channel is not compositional, so a transform without such channels is written in
# version 1 (which every gkdcn reads), and a reader that knows only version 1 refuses (instead of
# misreading) one with them.
_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass
class ChannelTransform:
    """A fitted per-channel transform; all arrays have one float64 entry per channel.

    ``shift`` is added before taking logs (0 for channels whose training values are all positive).
    ``floor`` is half the smallest ``x + shift`` seen in training; at apply time ``x + shift`` is
    raised to at least ``floor`` before the log. This only matters for a new map with values below
    the training range: a value that would make the log undefined (``x + shift <= 0``) lands just
    below the training range instead of giving NaN or ``log(1e-308)``, and the clipping stays
    monotonic (a small positive value never ends up below a zero). Values within half the
    training minimum are untouched, so the fitted data are transformed exactly. ``center`` and
    ``scale`` are applied after the log step. ``compositional`` (bool per channel, default all
    true) marks the channels the log step applies to; the others have shift 0 and are only scaled.
    """

    method: Method
    scaling: Scaling
    shift: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    floor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    compositional: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GkdcnError(f"unknown transform method {self.method!r} (use one of {METHODS})")
        if self.scaling not in SCALINGS:
            raise GkdcnError(f"unknown scaling {self.scaling!r} (use one of {SCALINGS})")
        self.shift = np.asarray(self.shift, dtype=np.float64).reshape(-1)
        self.center = np.asarray(self.center, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        self.floor = np.asarray(self.floor, dtype=np.float64).reshape(-1)
        n = self.shift.size
        if self.floor.size == 0:
            self.floor = np.full(n, np.finfo(np.float64).tiny)
        self.compositional = _mask(self.compositional, n)
        if n == 0 or not (self.center.size == self.scale.size == self.floor.size == n):
            raise GkdcnError(
                "channel transform arrays must be non-empty and of equal length "
                f"(shift {n}, center {self.center.size}, scale {self.scale.size}, "
                f"floor {self.floor.size})"
            )
        arrays = (self.shift, self.center, self.scale, self.floor)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise GkdcnError("channel transform arrays must be finite")
        if np.any(self.scale <= 0) or np.any(self.floor <= 0):
            raise GkdcnError("channel transform scale and floor must be positive")

    @property
    def n_channels(self) -> int:
        """Number of channels the transform was fitted on."""
        return int(self.shift.size)

    @property
    def all_compositional(self) -> bool:
        """True when the log step applies to every channel (the only case before version 2)."""
        return bool(self.compositional.all())

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        method: str,
        scaling: str,
        compositional: Sequence[bool] | np.ndarray | None = None,
    ) -> ChannelTransform:
        """Fit on raw training cell values ``(N, C)``; rows with any NaN/inf are ignored.

        ``compositional`` is one bool per channel (default: all true): the log / CLR step uses
        only those channels (the CLR's geometric mean is taken over them alone); the others are
        only scaled. Each channel's scaling is fitted on that channel alone, so adding a
        non-compositional channel leaves the other channels' numbers bit for bit unchanged.
        """
        if method not in METHODS:
            raise GkdcnError(f"unknown transform method {method!r} (use one of {METHODS})")
        if scaling not in SCALINGS:
            raise GkdcnError(f"unknown scaling {scaling!r} (use one of {SCALINGS})")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] == 0:
            raise GkdcnError(f"transform needs values shaped (cells, channels), got {values.shape}")
        values = values[np.all(np.isfinite(values), axis=1)]
        if values.shape[0] == 0:
            raise GkdcnError("no valid training cells to fit the transform on (all contain nodata)")
        n_channels = values.shape[1]
        comp = _mask(
            np.ones(n_channels, dtype=bool) if compositional is None else compositional,
            n_channels,
            empty_means_all=False,
        )
        if method == "clr" and comp.sum() < 2:
            raise GkdcnError(
                "the centred log-ratio (clr) needs at least 2 compositional element channels "
                f"(got {int(comp.sum())})"
            )

        shift = np.zeros(n_channels)
        floor = np.full(n_channels, np.finfo(np.float64).tiny)
        if method != "none":
            idx = np.flatnonzero(comp)
            part = values[:, idx]
            shift[idx] = _log_shift(part)
            # Guard against roundoff (huge negative minimum) leaving a non-positive floor.
            floor[idx] = np.maximum(0.5 * (part + shift[idx]).min(axis=0), floor[idx])
        partial = cls(
            method=cast(Method, method),
            scaling="none",
            shift=shift,
            center=np.zeros(n_channels),
            scale=np.ones(n_channels),
            floor=floor,
            compositional=comp,
        )
        logged = partial._log_step(np.ascontiguousarray(values.T))
        center, scale = _scaling_params(logged, scaling)
        return cls(
            method=cast(Method, method),
            scaling=cast(Scaling, scaling),
            shift=shift,
            center=center,
            scale=scale,
            floor=floor,
            compositional=comp,
        )

    def apply(self, data: np.ndarray, channel_axis: int = 0) -> np.ndarray:
        """Transform raw values with channels on ``channel_axis``; returns float32, invalid -> 0.

        Any shape works (a map ``(C, H, W)``, cells ``(C, N)``, windows ``(N, C, h, w)`` with
        ``channel_axis=1``); each cell is transformed independently.
        """
        data = np.asarray(data)
        if data.ndim == 0:
            raise ValueError("transform input must have a channel axis")
        try:
            moved = np.moveaxis(data, channel_axis, 0)
        except np.exceptions.AxisError:
            raise ValueError(
                f"channel axis {channel_axis} is out of range for data of shape {data.shape}"
            ) from None
        if moved.shape[0] != self.n_channels:
            raise ValueError(
                f"data has {moved.shape[0]} channels on axis {channel_axis}, "
                f"the transform was fitted on {self.n_channels}"
            )
        # C order, so the CLR mean over channels sums in one order whatever the input layout.
        x = np.ascontiguousarray(moved, dtype=np.float64)
        valid = np.all(np.isfinite(x), axis=0)
        # Invalid cells are filled with a harmless value first so no warnings or NaNs propagate.
        x = np.where(valid, x, self._expand(self.floor - self.shift, x.ndim))
        out = (self._log_step(x) - self._expand(self.center, x.ndim)) / self._expand(
            self.scale, x.ndim
        )
        out = np.where(valid, out, 0.0).astype(np.float32)
        return np.ascontiguousarray(np.moveaxis(out, 0, channel_axis))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (lists of Python floats); ``from_dict`` restores it exactly.

        A transform whose channels are all compositional is written in version 1 (no mask),
        otherwise version 2 with the mask.
        """
        d: dict[str, Any] = {
            "version": 1 if self.all_compositional else _FORMAT_VERSION,
            "method": self.method,
            "scaling": self.scaling,
            "shift": self.shift.tolist(),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "floor": self.floor.tolist(),
        }
        if not self.all_compositional:
            d["compositional"] = [bool(c) for c in self.compositional]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelTransform:
        """Rebuild a transform saved with :meth:`to_dict`.

        A dict without a ``compositional`` entry (version 1) means every channel is
        compositional, which is how such models were trained, so they predict as they did.
        """
        if not isinstance(d, dict):
            raise GkdcnError("saved channel transform is not a mapping")
        missing = [k for k in ("method", "scaling", "shift", "center", "scale") if k not in d]
        if missing:
            raise GkdcnError(f"saved channel transform lacks {', '.join(missing)}")
        version = d.get("version", 1)
        if version not in _READABLE_VERSIONS:
            raise GkdcnError(f"saved channel transform has unknown version {version!r}")
        if version == 1 and "compositional" in d:
            raise GkdcnError("saved channel transform (version 1) cannot mark channels")
        comp = d.get("compositional")
        if comp is not None and (
            not isinstance(comp, list) or not comp or not all(isinstance(c, bool) for c in comp)
        ):
            raise GkdcnError("saved channel transform 'compositional' is not a list of true/false")
        try:
            arrays: dict[str, np.ndarray] = {
                k: np.asarray(d[k], dtype=np.float64)
                for k in ("shift", "center", "scale", "floor")
                if k in d
            }
        except (TypeError, ValueError):
            raise GkdcnError("saved channel transform arrays are not numbers") from None
        if comp is not None:
            arrays["compositional"] = np.asarray(comp, dtype=bool)
        return cls(method=d["method"], scaling=d["scaling"], **arrays)

    def _log_step(self, x: np.ndarray) -> np.ndarray:
        """The method step on float64 data with channels first (no scaling).

        Non-compositional channels pass through unchanged. The compositional ones are taken out
        as one contiguous block first, so their result (the CLR mean included) is bit for bit the
        one of a transform fitted on them alone.
        """
        if self.method == "none":
            return x
        if self.all_compositional:
            return self._log_block(x, self.shift, self.floor)
        idx = np.flatnonzero(self.compositional)
        out = np.array(x, dtype=np.float64, copy=True)
        if idx.size:
            out[idx] = self._log_block(x[idx], self.shift[idx], self.floor[idx])
        return out

    def _log_block(self, x: np.ndarray, shift: np.ndarray, floor: np.ndarray) -> np.ndarray:
        shifted = np.maximum(x + self._expand(shift, x.ndim), self._expand(floor, x.ndim))
        if self.method == "log":
            return np.log10(shifted)
        logs = np.log(shifted)
        return logs - logs.mean(axis=0, keepdims=True)

    @staticmethod
    def _expand(v: np.ndarray, ndim: int) -> np.ndarray:
        return v.reshape((-1,) + (1,) * (ndim - 1))


def _mask(
    compositional: Sequence[bool] | np.ndarray, n_channels: int, empty_means_all: bool = True
) -> np.ndarray:
    """One bool per channel; an empty mask (the dataclass default) means all compositional."""
    mask = np.asarray(compositional)
    if mask.size == 0 and empty_means_all:
        return np.ones(n_channels, dtype=bool)
    if mask.dtype != bool or mask.ndim != 1 or mask.size != n_channels:
        raise GkdcnError(
            f"the compositional mask must be {n_channels} true/false values, one per channel "
            f"(got {mask.size} of type {mask.dtype})"
        )
    return mask.copy()


def _log_shift(values: np.ndarray) -> np.ndarray:
    """Per-channel shift making every training value positive.

    A channel whose minimum is <= 0 (zeros, below-detection codes) is shifted so its minimum
    becomes half its smallest positive value; a channel with no positive value at all is shifted
    so its minimum becomes 1.
    """
    shift = np.zeros(values.shape[1])
    mins = values.min(axis=0)
    for j in np.flatnonzero(mins <= 0):
        positive = values[values[:, j] > 0, j]
        target = 0.5 * positive.min() if positive.size else 1.0
        shift[j] = target - mins[j]
    return shift


def _scaling_params(v: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) per channel of ``v`` (C, N), each fitted on its own contiguous row.

    One channel at a time so its numbers never depend on which other channels are present
    (numpy's summation order can change with the array's shape). A constant channel (zero
    range) gets scale 1. Robust scaling of a channel whose IQR is 0 but which is not constant
    (common with censored geochemical data: most cells at the detection limit) falls back to the
    standard deviation, so the few distinct values are not blown up.
    """
    n_channels = v.shape[0]
    center, scale = np.zeros(n_channels), np.ones(n_channels)
    if scaling == "none":
        return center, scale
    for j in range(n_channels):
        row = np.ascontiguousarray(v[j])
        std = row.std()
        if scaling == "standard":
            c, s = row.mean(), std
        else:
            q25, c, q75 = np.percentile(row, [25.0, 50.0, 75.0])
            s = (q75 - q25) / _IQR_TO_STD
            s = s if s > 0 else std
        constant = np.ptp(row) == 0
        center[j] = c
        scale[j] = 1.0 if constant or not (s > 0) or not np.isfinite(s) else s
    return center, scale


def cells_in_windows(
    shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, window: int
) -> np.ndarray:
    """Sorted unique flat indices (``row * W + col``) of cells covered by windows at the centres.

    Windows are ``window`` x ``window`` cells centred on ``(rows, cols)``; parts beyond the grid
    are dropped (padding cells are not data). Use this to fit a transform on training cells only:
    ``raw.reshape(C, -1)[:, cells_in_windows(...)].T``.
    """
    height, width = (int(s) for s in shape)
    if height <= 0 or width <= 0:
        raise ValueError(f"grid shape must be positive, got {shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of cells, got {window}")
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols differ in length ({rows.size} vs {cols.size})")
    half = window // 2
    offsets = np.arange(-half, half + 1)
    r = (rows[:, None] + offsets)[:, :, None]
    c = (cols[:, None] + offsets)[:, None, :]
    inside = ((r >= 0) & (r < height)) & ((c >= 0) & (c < width))
    r, c = np.broadcast_arrays(r, c)
    # A boolean map avoids sorting N * window^2 indices and dedups for free.
    covered = np.zeros((height, width), dtype=bool)
    covered[r[inside], c[inside]] = True
    return np.flatnonzero(covered).astype(np.int64)
