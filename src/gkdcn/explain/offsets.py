"""Where a deformable layer samples: positions, offsets and modulation masks, plots and summaries.

Layout (torchvision's ``deform_conv2d``, followed by :class:`gkdcn.models.deform.DeformConv2d`):
the offset tensor has ``2 * kh * kw`` channels, interleaved per kernel tap, with tap
``t = i * kw + j`` for kernel row ``i`` and column ``j``; channel ``2t`` is the **row** offset
``dy`` and channel ``2t + 1`` the **column** offset ``dx``. Output position ``(ho, wo)`` samples
tap ``t`` at

    row = ho * stride_h - pad_h + i * dil_h + dy,   col = wo * stride_w - pad_w + j * dil_w + dx

in the layer's **input** coordinates, where integer ``k`` is the centre of input cell ``k``.
The mask channel ``t`` (after the sigmoid, in [0, 1]) scales what tap ``t`` reads.

Input coordinates and window cells: ``conv2`` sees a map the size of the window, so its input
cells *are* window cells (``scale = 1``). ``conv3`` runs after a 2 x 2 max pool (floor), so its
input cell ``p`` summarises window cells ``2p`` and ``2p + 1`` (a 9-cell window pools to 4 cells
covering window cells 0..7). A position ``p`` (fractional, offsets included) on the pooled grid is
window coordinate ``2p + 0.5``; in general ``scale * p + (scale - 1) / 2`` with
``scale = window // input_size``. Offsets scale by ``scale`` alone. Statistics in "cells" are in
window cells; "layer cells" are the layer's input cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from gkdcn.errors import GkdcnError
from gkdcn.explain.gradcam import (
    as_windows,
    check_map_inputs,
    eval_mode,
    map_windows,
    net_device,
    resolve_layer,
)
from gkdcn.models.deform import DeformConv2d

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from rich.progress import Progress

    from gkdcn.models.bundle import ModelBundle


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = (int(v) for v in value)
    return (a, b)


@dataclass
class SamplingData:
    """Sampling of one deformable layer for ``N`` windows (module docstring for coordinates).

    ``positions`` ``(N, Ho, Wo, K, 2)``: (row, col) of each tap in layer-input coordinates, offsets
    included. ``offset`` ``(N, K, 2, Ho, Wo)``: (dy, dx) in layer-input cells. ``mask``
    ``(N, K, Ho, Wo)`` in [0, 1]. ``background`` ``(N, window, window)``: mean of the network's
    input channels, drawn under plots. ``scale``: window cells per layer-input cell.
    """

    layer: str
    positions: np.ndarray
    offset: np.ndarray
    mask: np.ndarray
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    input_size: tuple[int, int]
    window: int
    scale: int
    background: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_taps(self) -> int:
        """Kernel taps per output cell (9 for a 3x3 layer)."""
        return int(self.positions.shape[3])

    @property
    def output_size(self) -> tuple[int, int]:
        """The layer's output size ``(Ho, Wo)``."""
        return (int(self.positions.shape[1]), int(self.positions.shape[2]))

    @property
    def origin(self) -> float:
        """Window coordinate of layer-input coordinate 0: ``(scale - 1) / 2``."""
        return (self.scale - 1) / 2.0

    def to_window(self, coords: np.ndarray) -> np.ndarray:
        """Layer-input coordinates (positions, not offsets) -> window coordinates."""
        return np.asarray(coords) * self.scale + self.origin

    def base_positions(self) -> np.ndarray:
        """The regular (undeformed) sampling grid ``(Ho, Wo, K, 2)`` in layer-input coordinates."""
        return base_grid(
            self.output_size, self.kernel_size, self.stride, self.padding, self.dilation
        )

    def output_centres(self) -> np.ndarray:
        """Layer-input coordinates ``(Ho, Wo, 2)`` of each output position (its kernel centre)."""
        kh, kw = self.kernel_size
        ho = np.arange(self.output_size[0]) * self.stride[0] - self.padding[0]
        wo = np.arange(self.output_size[1]) * self.stride[1] - self.padding[1]
        rows = ho + self.dilation[0] * (kh - 1) / 2.0
        cols = wo + self.dilation[1] * (kw - 1) / 2.0
        grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
        return np.stack([grid_r, grid_c], axis=-1)

    def outside(self) -> np.ndarray:
        """``(N, Ho, Wo, K)`` bool: taps whose position falls outside the layer's input map.

        Outside means beyond ``[-0.5, size - 0.5]`` on either axis, i.e. in the zero padding.
        """
        return _outside(self.positions, self.input_size)


def base_grid(
    output_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> np.ndarray:
    """Regular convolution sampling positions ``(Ho, Wo, K, 2)``, tap ``t = i * kw + j``."""
    kh, kw = kernel_size
    ho = np.arange(output_size[0])[:, None, None] * stride[0] - padding[0]
    wo = np.arange(output_size[1])[None, :, None] * stride[1] - padding[1]
    taps = np.arange(kh * kw)
    i, j = taps // kw, taps % kw
    rows = ho + i[None, None, :] * dilation[0]
    cols = wo + j[None, None, :] * dilation[1]
    rows, cols = np.broadcast_arrays(rows, cols)
    return np.stack([rows, cols], axis=-1).astype(np.float64)


def _outside(positions: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    rows, cols = positions[..., 0], positions[..., 1]
    h, w = input_size
    return (rows < -0.5) | (rows > h - 0.5) | (cols < -0.5) | (cols > w - 0.5)


def sampling_positions(
    net: nn.Module,
    windows: torch.Tensor | np.ndarray,
    layer: str = "conv2",
    *,
    batch_size: int = 256,
) -> SamplingData:
    """Run ``net`` on ``windows`` and read where deformable ``layer`` samples each tap.

    The layer's input is caught with a forward pre-hook and passed to the
    :class:`~gkdcn.models.deform.DeformConv2d` layer's ``forward_with_sampling``, which returns its offsets and (sigmoid) masks. ``net`` runs in eval
    mode; its modes are restored.
    """
    x = as_windows(windows)
    module = resolve_layer(net, layer)
    if not isinstance(module, DeformConv2d):
        raise GkdcnError(
            f"layer {layer!r} is a {type(module).__name__}, not a deformable convolution: "
            "it has no sampling offsets (CNN and GK-CNN models have none)"
        )
    groups = int(getattr(module, "offset_groups", 1))
    if groups != 1:
        raise GkdcnError(f"layer {layer!r} has {groups} offset groups; only 1 is supported")
    kernel = _pair(module.kernel_size)
    stride, padding, dilation = (
        _pair(module.stride),
        _pair(module.padding),
        _pair(module.dilation),
    )
    k = kernel[0] * kernel[1]
    device = net_device(net)
    caught: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
        caught.append(args[0])

    offsets, masks = [], []
    input_size: tuple[int, int] | None = None
    handle = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad(), eval_mode(net):
            for start in range(0, x.shape[0], batch_size):
                caught.clear()
                net(x[start : start + batch_size].to(device))
                if len(caught) != 1:
                    raise GkdcnError(f"layer {layer!r} ran {len(caught)} times in one forward pass")
                layer_in = caught[0]
                input_size = (int(layer_in.shape[-2]), int(layer_in.shape[-1]))
                _, off, msk = module.forward_with_sampling(layer_in)
                offsets.append(off.detach().cpu().double().numpy())
                masks.append(msk.detach().cpu().double().numpy())
    finally:
        handle.remove()
    assert input_size is not None  # x has at least one window (as_windows checked its shape)
    offset = np.concatenate(offsets)
    mask = np.concatenate(masks)
    n, channels, ho, wo = offset.shape
    if channels != 2 * k or mask.shape != (n, k, ho, wo):
        raise GkdcnError(
            f"layer {layer!r} returned offsets {offset.shape} and masks {mask.shape}; expected "
            f"{2 * k} offset and {k} mask channels"
        )
    # Channel 2t is dy and 2t+1 is dx of tap t: (N, 2K, Ho, Wo) -> (N, K, 2, Ho, Wo).
    offset = offset.reshape(n, k, 2, ho, wo)
    base = base_grid((ho, wo), kernel, stride, padding, dilation)
    positions = base[None] + offset.transpose(0, 3, 4, 1, 2)
    window = int(x.shape[-1])
    scale = max(1, window // input_size[0])
    return SamplingData(
        layer=layer,
        positions=positions,
        offset=offset,
        mask=mask,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        input_size=input_size,
        window=window,
        scale=scale,
        background=x.mean(dim=1).numpy(),
    )


# --- summaries ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Running sums so map-wide summaries never hold every window's offsets at once."""

    windows: int = 0
    taps: int = 0
    magnitude: float = 0.0
    outside: int = 0
    outside_regular: int = 0
    mask: float = 0.0

    def add(self, data: SamplingData, select: np.ndarray | None = None) -> None:
        idx = np.arange(len(data)) if select is None else np.flatnonzero(select)
        if idx.size == 0:
            return
        offset = data.offset[idx]
        self.windows += idx.size
        self.taps += offset[:, :, 0].size
        self.magnitude += float(np.hypot(offset[:, :, 0], offset[:, :, 1]).sum()) * data.scale
        self.outside += int(_outside(data.positions[idx], data.input_size).sum())
        regular = _outside(data.base_positions(), data.input_size)
        self.outside_regular += int(regular.sum()) * idx.size
        self.mask += float(data.mask[idx].sum())

    def result(self, scale: int) -> dict[str, Any]:
        if self.taps == 0:
            return {
                "n_windows": 0,
                "mean_offset_cells": None,
                "mean_offset_layer_cells": None,
                "outside_share": None,
                "outside_share_regular_grid": None,
                "mean_mask": None,
            }
        mean_offset = self.magnitude / self.taps
        return {
            "n_windows": self.windows,
            "mean_offset_cells": mean_offset,
            "mean_offset_layer_cells": mean_offset / scale,
            "outside_share": self.outside / self.taps,
            "outside_share_regular_grid": self.outside_regular / self.taps,
            "mean_mask": self.mask / self.taps,
        }


SUMMARY_NOTES = {
    "mean_offset_cells": "mean length of the (dy, dx) offset over taps and output positions, "
    "in window cells",
    "mean_offset_layer_cells": "the same in the layer's input cells (window cells / scale)",
    "outside_share": "share of taps sampling outside the layer's input map "
    "(beyond [-0.5, size - 0.5]), i.e. in the zero padding",
    "outside_share_regular_grid": "that share for the undeformed 3 x 3 grid (edge outputs read "
    "padding even without offsets): the reference to compare with",
    "mean_mask": "mean modulation mask (0..1) over taps and output positions",
}


def sampling_summary(data: SamplingData, labels: np.ndarray | Sequence[int]) -> dict[str, Any]:
    """Offset statistics per class: ``deposit`` (label 1), ``background`` (label 0) and ``all``.

    Windows with any other label (e.g. -1 for user points) count only in ``all``. Each entry has
    ``n_windows``, ``mean_offset_cells``, ``mean_offset_layer_cells``, ``outside_share``,
    ``outside_share_regular_grid`` and ``mean_mask`` (see :data:`SUMMARY_NOTES`); values are
    None for a class without windows.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size != len(data):
        raise GkdcnError(f"{labels.size} labels for {len(data)} windows")
    out: dict[str, Any] = {"layer": data.layer, "scale": data.scale}
    for name, select in (("deposit", labels == 1), ("background", labels == 0), ("all", None)):
        tally = _Tally()
        tally.add(data, select)
        out[name] = tally.result(data.scale)
    return out


def map_sampling_summary(
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    layer: str = "conv2",
    *,
    max_cells: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Offset statistics over the map: windows of every valid cell, or of a seeded random sample.

    ``max_cells`` caps the number of cells (drawn without replacement with
    ``numpy.random.default_rng(seed)``); None uses them all. Same statistics as
    :func:`sampling_summary`, under ``all``.
    """
    features = np.asarray(features)
    valid = check_map_inputs(bundle, features, valid)
    rows, cols = np.nonzero(valid)
    total = rows.size
    if max_cells is not None:
        if max_cells < 1:
            raise GkdcnError(f"max_cells must be >= 1, got {max_cells}")
        if total > max_cells:
            pick = np.sort(np.random.default_rng(seed).choice(total, max_cells, replace=False))
            rows, cols = rows[pick], cols[pick]
    net = bundle.network()
    tally = _Tally()
    scale = 1
    batches = map_windows(
        bundle, features, rows, cols, batch_size, progress, f"offsets over the map ({layer})"
    )
    for _, _, win in batches:
        data = sampling_positions(net, win, layer, batch_size=batch_size)
        scale = data.scale
        tally.add(data)
    return {
        "layer": layer,
        "scale": scale,
        "valid_cells": int(total),
        "sampled_cells": int(rows.size),
        "seed": seed if rows.size < total else None,
        "all": tally.result(scale),
    }


# --- plots -------------------------------------------------------------------------------------


def _check_index(data: SamplingData, index: int) -> None:
    if not -len(data) <= index < len(data):
        raise GkdcnError(f"window index {index} out of range for {len(data)} windows")


def _centre(data: SamplingData, centre: tuple[int, int] | None) -> tuple[int, int]:
    ho_n, wo_n = data.output_size
    ho, wo = centre if centre is not None else (ho_n // 2, wo_n // 2)
    if not (0 <= ho < ho_n and 0 <= wo < wo_n):
        raise GkdcnError(f"output position {(ho, wo)} outside the {ho_n} x {wo_n} output map")
    return int(ho), int(wo)


def _draw_window(fig: Figure, ax: Axes, data: SamplingData, index: int) -> None:
    """The window's mean input as background, in window coordinates, with its outline."""
    w = data.window
    image = data.background[index]
    lim = float(np.nanmax(np.abs(image))) or 1.0
    im = ax.imshow(
        image, cmap="Greys", vmin=-lim, vmax=lim, extent=(-0.5, w - 0.5, w - 0.5, -0.5), alpha=0.6
    )
    fig.colorbar(im, ax=ax, label="mean input (transformed units)", shrink=0.8)
    ax.add_patch(
        Rectangle((-0.5, -0.5), w, w, fill=False, edgecolor="black", lw=1.2, label="window")
    )
    ax.set_xlabel("column in window (cells)")
    ax.set_ylabel("row in window (cells)")


def plot_sampling(
    data: SamplingData,
    index: int,
    centre: tuple[int, int] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Where every tap of one output position samples, over the window (window cells).

    ``centre`` is the output position ``(ho, wo)`` on the layer's output grid (default: its
    middle, the window centre for ``conv2``). Hollow squares mark the regular grid, arrows run
    from each regular tap to where it samples, and dots there are coloured by the modulation mask.
    """
    _check_index(data, index)
    ho, wo = _centre(data, centre)
    base = data.to_window(data.base_positions()[ho, wo])  # (K, 2)
    sampled = data.to_window(data.positions[index, ho, wo])  # (K, 2)
    mask = data.mask[index, :, ho, wo]
    out_pos = data.to_window(data.output_centres()[ho, wo])
    fig = Figure(figsize=(6.4, 5.2), dpi=150)
    ax = fig.subplots()
    _draw_window(fig, ax, data, index)
    ax.scatter(
        base[:, 1],
        base[:, 0],
        marker="s",
        s=70,
        facecolors="none",
        edgecolors="tab:blue",
        lw=1.2,
        label="regular 3 x 3 grid" if data.n_taps == 9 else "regular grid",
    )
    for (r0, c0), (r1, c1) in zip(base, sampled, strict=True):
        if abs(r1 - r0) + abs(c1 - c0) > 1e-6:
            ax.annotate(
                "",
                xy=(c1, r1),
                xytext=(c0, r0),
                arrowprops={"arrowstyle": "->", "color": "tab:orange", "lw": 1.0},
            )
    dots = ax.scatter(
        sampled[:, 1],
        sampled[:, 0],
        c=mask,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        s=45,
        edgecolors="black",
        linewidths=0.5,
        zorder=4,
        label="sampled position",
    )
    fig.colorbar(dots, ax=ax, label="modulation mask (0-1)", shrink=0.8)
    ax.plot(out_pos[1], out_pos[0], marker="+", color="red", ms=12, mew=2, label="output position")
    # Show the whole window plus any tap that reaches into the padding beyond it.
    points = np.concatenate([sampled, base])
    lo = min(-1.0, float(points.min()) - 0.5)
    hi = max(float(data.window), float(points.max()) + 0.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(hi, lo)  # rows grow downwards, as on the map
    ax.legend(
        loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2, frameon=False, fontsize="small"
    )
    scale_note = "" if data.scale == 1 else f", 1 layer cell = {data.scale} window cells"
    ax.set_title(
        title or f"{data.layer}: sampling of output ({ho}, {wo}), window {index}{scale_note}",
        fontsize="medium",
    )
    # Fixed margins (one figure per site and layer; tight_layout doubles the cost).
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.2, top=0.93)
    return fig


def plot_offset_field(data: SamplingData, index: int, *, title: str | None = None) -> Figure:
    """Mean offset vector per output position (quiver) over the mean offset length (heatmap).

    Both in window cells. Arrows are scaled so the longest is 0.8 of the output spacing; the key
    gives their length. Rows grow downwards as on the map.
    """
    _check_index(data, index)
    off = data.offset[index] * data.scale  # (K, 2, Ho, Wo), window cells
    magnitude = np.hypot(off[:, 0], off[:, 1]).mean(axis=0)  # (Ho, Wo)
    mean_vec = off.mean(axis=0)  # (2, Ho, Wo)
    centres = data.to_window(data.output_centres())  # (Ho, Wo, 2)
    ho_n, wo_n = data.output_size
    step = data.scale * data.stride[0]
    extent = (
        centres[0, 0, 1] - step / 2,
        centres[0, -1, 1] + step / 2,
        centres[-1, 0, 0] + step / 2,
        centres[0, 0, 0] - step / 2,
    )
    fig = Figure(figsize=(6.2, 5.0), dpi=150)
    ax = fig.subplots()
    im = ax.imshow(magnitude, cmap="magma", vmin=0.0, extent=extent)
    fig.colorbar(im, ax=ax, label="mean offset length over taps (cells)")
    longest = float(np.hypot(mean_vec[0], mean_vec[1]).max())
    if longest > 0:
        arrow_scale = longest / (0.8 * step)  # data units per arrow-length unit
        q = ax.quiver(
            centres[..., 1],
            centres[..., 0],
            mean_vec[1],
            mean_vec[0],
            angles="xy",  # arrows in data coordinates, so +dy points down the inverted row axis
            scale_units="xy",
            scale=arrow_scale,
            color="cyan",
            width=0.006,
        )
        ax.quiverkey(
            q,
            0.02,
            -0.14,
            longest,
            f"mean offset, {longest:.2g} cells",
            labelpos="E",
            coordinates="axes",
        )
    w = data.window
    ax.add_patch(Rectangle((-0.5, -0.5), w, w, fill=False, edgecolor="grey", lw=1.0, ls="--"))
    ax.set_xlim(min(-0.5, extent[0]), max(w - 0.5, extent[1]))
    ax.set_ylim(max(w - 0.5, extent[2]), min(-0.5, extent[3]))
    ax.set_xlabel("column in window (cells)")
    ax.set_ylabel("row in window (cells)")
    ax.set_title(
        title or f"{data.layer}: mean offset per output position ({ho_n} x {wo_n}), window {index}",
        fontsize="medium",
    )
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.17, top=0.92)
    return fig
