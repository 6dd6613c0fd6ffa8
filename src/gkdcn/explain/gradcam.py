"""Grad-CAM for any named layer, per window, per site figure and over the whole map.

Grad-CAM (Selvaraju et al. 2017) weights each channel of a layer's output by the spatial mean of
the gradient of the **logit** with respect to it, sums the channels and keeps the positive part
(captum's ``LayerGradCam`` with ``relu_attributions=True``). Values are in logit units and are
**not** rescaled per window (no min-max), so maps compare across windows, sites and models.

A layer whose map is smaller than the window (``conv3`` runs after the 2 x 2 max pool) is
upsampled bilinearly with captum's ``LayerAttribution.interpolate``. Floor pooling by ``s`` means
layer cell ``p`` summarises window cells ``s*p .. s*p+s-1`` (a 9-cell window pools to 4 cells that
cover window cells 0..7), so the map is interpolated to ``s*h`` cells, which puts layer cell ``p``'s
centre exactly on window coordinate ``s*p + (s-1)/2``, and the trailing window cells the pool
dropped repeat the last row / column (what bilinear interpolation does beyond its last sample).
Stretching ``h`` cells over the whole window would shift the outer cells by up to a cell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib.figure import Figure
from torch import nn

from gkdcn.data.samples import extract_windows
from gkdcn.errors import GkdcnError

if TYPE_CHECKING:
    from rich.progress import Progress

    from gkdcn.models.bundle import ModelBundle

Reduce = Literal["centre", "mean"]
REDUCTIONS: tuple[Reduce, ...] = ("centre", "mean")
CAM_UNITS = "logit units"


def resolve_layer(net: nn.Module, layer: str) -> nn.Module:
    """The sub-module of ``net`` called ``layer`` (dotted names allowed); a clear error otherwise."""
    modules = dict(net.named_modules())
    if layer and layer in modules:
        return modules[layer]
    convs = [
        name
        for name, m in net.named_modules()
        if name and (isinstance(m, nn.Conv2d) or hasattr(m, "forward_with_sampling"))
    ]
    choices = ", ".join(convs) if convs else "none found"
    raise GkdcnError(f"the network has no layer {layer!r} (convolution layers: {choices})")


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """Run ``net`` in eval mode (fixed BatchNorm, no dropout), then restore each module's mode.

    Explanations of a network left in training mode would otherwise vary from call to call.
    """
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def net_device(net: nn.Module) -> torch.device:
    """Device of the network's first parameter or buffer (CPU for a parameter-free module)."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")


def as_windows(windows: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Windows as a float32 CPU tensor ``(N, C, w, w)``; a clear error for another shape."""
    x = torch.as_tensor(np.asarray(windows) if not torch.is_tensor(windows) else windows)
    x = x.detach().to(dtype=torch.float32, device="cpu")
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"windows must be shaped (N, channels, w, w), got {tuple(x.shape)}")
    return x


def upsample_to_window(cam: torch.Tensor, window: int) -> torch.Tensor:
    """Bring a layer map ``(N, 1, h, w)`` onto the ``window x window`` input grid (module docstring).

    Same-size maps are returned unchanged. A map ``h`` cells across with ``s = window // h``
    consistent with floor pooling by ``s`` (``window - s*h < s``) is interpolated to ``s*h`` cells
    and edge-padded; any other size is interpolated straight to ``window`` cells.
    """
    h, w = cam.shape[-2:]
    if (h, w) == (window, window):
        return cam
    if h != w:
        raise ValueError(f"layer map is not square ({h} x {w}); cannot place it on the window")
    s = window // h
    if s >= 1 and window - s * h < s:
        up = LayerAttribution.interpolate(cam, (s * h, s * w), interpolate_mode="bilinear")
        extra = window - s * h
        if extra:
            up = F.pad(up, (0, extra, 0, extra), mode="replicate")
        return up
    return LayerAttribution.interpolate(cam, (window, window), interpolate_mode="bilinear")


def gradcam(
    net: nn.Module,
    windows: torch.Tensor | np.ndarray,
    layer: str = "conv2",
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """Grad-CAM of the logit at ``layer`` for each window: ``(N, w, w)`` float32, logit units.

    ``net`` is any module mapping ``(N, C, w, w)`` to logits ``(N,)`` with a sub-module named
    ``layer``; it runs in eval mode (its modes are restored afterwards). Values are raw (>= 0,
    not normalised) so they compare across windows and models.
    """
    x = as_windows(windows)
    if batch_size < 1:
        raise GkdcnError(f"batch_size must be >= 1, got {batch_size}")
    module = resolve_layer(net, layer)
    device = net_device(net)
    size = int(x.shape[-1])
    explainer = LayerGradCam(net, module)
    out = np.empty((x.shape[0], size, size), dtype=np.float32)
    with eval_mode(net):
        for start in range(0, x.shape[0], batch_size):
            # Input gradients are not needed, but asking for them guarantees a graph even when
            # the layer has no parameters upstream (captum differentiates the layer output).
            xb = x[start : start + batch_size].to(device).requires_grad_(True)
            cam = explainer.attribute(xb, target=None, relu_attributions=True)
            cam = upsample_to_window(cam.detach(), size)
            out[start : start + len(xb)] = cam[:, 0].cpu().numpy()
    return out


def gradcam_maps(
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    *,
    layer: str = "conv2",
    batch_size: int = 256,
    reduce: Sequence[Reduce] = REDUCTIONS,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Grad-CAM over the map, one ``(H, W)`` float32 array per reduction in ``reduce``.

    Each valid cell gets the CAM of the window centred on it, read at the window centre
    (``"centre"``) or averaged over the window (``"mean"``); invalid cells are NaN. ``features``
    are the transformed ``(C, H, W)`` stack in the model's channel order; windows are cut with the
    model's padding rule. One pass serves every reduction.
    """
    reduce = list(dict.fromkeys(reduce))
    bad = [r for r in reduce if r not in REDUCTIONS]
    if bad or not reduce:
        raise GkdcnError(f"unknown Grad-CAM reduction {bad or reduce!r} (use 'centre' or 'mean')")
    features = np.asarray(features)
    valid = check_map_inputs(bundle, features, valid)
    rows, cols = np.nonzero(valid)
    maps: dict[str, np.ndarray] = {
        r: np.full(valid.shape, np.nan, dtype=np.float32) for r in reduce
    }
    net = bundle.network()
    half = bundle.window // 2
    batches = map_windows(
        bundle, features, rows, cols, batch_size, progress, f"Grad-CAM map ({layer})"
    )
    for r, c, win in batches:
        cam = gradcam(net, win, layer, batch_size=batch_size)
        if "centre" in maps:
            maps["centre"][r, c] = cam[:, half, half]
        if "mean" in maps:
            maps["mean"][r, c] = cam.mean(axis=(1, 2))
    return maps


def gradcam_map(
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    *,
    layer: str = "conv2",
    batch_size: int = 256,
    reduce: Reduce = "centre",
    progress: Progress | None = None,
) -> np.ndarray:
    """Grad-CAM over the map with one reduction (see :func:`gradcam_maps`): ``(H, W)``, NaN off-map."""
    return gradcam_maps(
        bundle,
        features,
        valid,
        layer=layer,
        batch_size=batch_size,
        reduce=(reduce,),
        progress=progress,
    )[reduce]


def map_windows(
    bundle: ModelBundle,
    features: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    batch_size: int,
    progress: Progress | None = None,
    label: str = "",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches ``(rows, cols, windows)`` of the cells given, cut with the model's padding rule.

    The one loop behind every whole-map explanation; advances a progress task as it goes.
    """
    task = progress.add_task(label, total=len(rows), info="") if progress is not None else None
    for start in range(0, len(rows), batch_size):
        r, c = rows[start : start + batch_size], cols[start : start + batch_size]
        yield r, c, extract_windows(features, r, c, bundle.window, bundle.padding)
        if progress is not None and task is not None:
            progress.update(task, advance=len(r))


def check_map_inputs(bundle: ModelBundle, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Validate a transformed stack and its validity mask against the model; returns the mask."""
    if features.ndim != 3:
        raise ValueError(f"features must be shaped (channels, rows, cols), got {features.shape}")
    if features.shape[0] != bundle.spec.in_channels:
        raise ValueError(
            f"features have {features.shape[0]} channels, the model takes {bundle.spec.in_channels}"
        )
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != features.shape[1:]:
        raise ValueError(
            f"valid mask of shape {valid.shape} does not match the {features.shape[1:]} map"
        )
    return valid


def window_background(
    window_input: np.ndarray, names: Sequence[str], element: str | None = None
) -> tuple[np.ndarray, str]:
    """The picture to show under an explanation: one element, or the mean of all channels.

    Returns ``(image (w, w), colour-bar label)``; values are in transformed units (standardised
    log-ratios under the default transform).
    """
    window_input = np.asarray(window_input, dtype=np.float32)
    if window_input.ndim != 3:
        raise ValueError(f"window input must be shaped (channels, w, w), got {window_input.shape}")
    if len(names) != window_input.shape[0]:
        raise ValueError(f"{len(names)} names for {window_input.shape[0]} channels")
    if element is None:
        return window_input.mean(axis=0), f"mean of {len(names)} channels (transformed units)"
    if element not in names:
        raise GkdcnError(f"element {element!r} is not a model channel ({', '.join(names)})")
    return window_input[list(names).index(element)], f"{element} (transformed units)"


def window_extent(size: int) -> tuple[float, float, float, float]:
    """Imshow extent putting the window centre at (0, 0), rows downwards (north-up grids: south)."""
    half = size // 2
    return (-half - 0.5, half + 0.5, half + 0.5, -half - 0.5)


def plot_site_cam(
    window_input: np.ndarray,
    cam: np.ndarray,
    names: Sequence[str],
    site_id: str,
    x: float,
    y: float,
    element: str | None = None,
    *,
    layer: str = "conv2",
    cam_vmax: float | None = None,
) -> Figure:
    """The site's window (mean channel or ``element``) beside its Grad-CAM, on the w x w grid.

    Both panels are centred on the site (offsets in cells; rows increase downwards, i.e. south on
    a north-up grid). ``cam_vmax`` fixes the CAM colour scale so several sites share it.
    """
    cam = np.asarray(cam, dtype=np.float32)
    image, label = window_background(window_input, names, element)
    if cam.shape != image.shape:
        raise ValueError(f"CAM of shape {cam.shape} does not match the {image.shape} window")
    extent = window_extent(image.shape[0])
    fig = Figure(figsize=(10.0, 4.2), dpi=150)
    ax_in, ax_cam = fig.subplots(1, 2)
    lim = float(np.nanmax(np.abs(image))) or 1.0
    im = ax_in.imshow(image, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent)
    fig.colorbar(im, ax=ax_in, label=label)
    ax_in.set_title("Input window")
    vmax = cam_vmax if cam_vmax is not None and cam_vmax > 0 else float(np.nanmax(cam)) or 1.0
    im = ax_cam.imshow(cam, cmap="inferno", vmin=0.0, vmax=vmax, extent=extent)
    fig.colorbar(im, ax=ax_cam, label=f"Grad-CAM ({CAM_UNITS})")
    ax_cam.set_title(f"Grad-CAM at {layer}")
    for ax in (ax_in, ax_cam):
        ax.plot(0, 0, marker="+", color="lime", markersize=12, mew=2, label="site")
        ax.set_xlabel("column offset (cells, east +)")
        ax.set_ylabel("row offset (cells, south +)")
    fig.suptitle(f"Site {site_id} at x = {x:,.1f}, y = {y:,.1f} (map units)")
    # Fixed margins: tight_layout doubles the drawing cost, and there is one figure per site.
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.13, top=0.86, wspace=0.5)
    return fig
