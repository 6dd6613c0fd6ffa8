"""Per-element attribution: integrated gradients of the logit, summed over each window.

Integrated gradients (Sundararajan et al. 2017, captum's ``IntegratedGradients``) attribute
``f(x) - f(baseline)`` to the inputs; the baseline here is the all-zero window, i.e. 0 in
transformed space: the value that invalid and padded cells get, which is the training mean under
standard scaling (the median under robust scaling). Summing a window's attributions per channel
gives each element's contribution to the logit, in logit units; the contributions of a window
add up to ``logit - baseline_logit`` (completeness) up to the reported convergence delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients
from matplotlib.figure import Figure
from torch import nn

from gkdcn.errors import GkdcnError
from gkdcn.explain.gradcam import (
    as_windows,
    check_map_inputs,
    eval_mode,
    map_windows,
    net_device,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from gkdcn.models.bundle import ModelBundle

IG_UNITS = "logit units"
# Integrated gradients multiplies the batch by n_steps; this bounds one forward pass (in windows).
INTERNAL_BATCH = 2048


@dataclass
class ElementAttribution:
    """Integrated-gradients contributions of each element, one row per window.

    ``values``: DataFrame, rows = windows (index = window ids), columns = elements, logit units.
    ``delta``: captum's convergence delta per window, ``values.sum(axis=1) - (logit - baseline)``.
    ``logit`` / ``baseline_logit``: the network's logit for the window and for the zero window.
    """

    values: pd.DataFrame
    delta: np.ndarray
    logit: np.ndarray
    baseline_logit: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """The element columns plus ``logit``, ``baseline_logit`` and ``convergence_delta``."""
        frame = self.values.copy()
        frame["logit"] = self.logit
        frame["baseline_logit"] = self.baseline_logit
        frame["convergence_delta"] = self.delta
        return frame


def integrated_gradients(
    net: nn.Module,
    windows: torch.Tensor | np.ndarray,
    *,
    n_steps: int = 50,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of the logit from the zero window: ``(attr (N, C, w, w), delta (N,))``.

    ``net`` maps ``(N, C, w, w)`` to logits ``(N,)`` and runs in eval mode (modes restored).
    """
    if n_steps < 1 or batch_size < 1:
        raise GkdcnError(f"n_steps and batch_size must be >= 1, got {n_steps} and {batch_size}")
    x = as_windows(windows)
    device = net_device(net)
    ig = IntegratedGradients(net)
    attr = np.empty(tuple(x.shape), dtype=np.float32)
    delta = np.empty(x.shape[0], dtype=np.float32)
    with eval_mode(net):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            a, d = ig.attribute(
                xb,
                baselines=torch.zeros_like(xb),
                target=None,
                n_steps=n_steps,
                internal_batch_size=max(INTERNAL_BATCH, len(xb)),
                return_convergence_delta=True,
            )
            attr[start : start + len(xb)] = a.detach().cpu().numpy()
            delta[start : start + len(xb)] = d.detach().cpu().numpy()
    return attr, delta


def element_attribution(
    net: nn.Module,
    windows: torch.Tensor | np.ndarray,
    names: Sequence[str],
    n_steps: int = 50,
    *,
    ids: Sequence[str] | None = None,
    batch_size: int = 64,
) -> ElementAttribution:
    """Each element's contribution to the logit of each window (integrated gradients, summed).

    ``names`` are the channel names in the windows' channel order; ``ids`` label the rows
    (default ``0..N-1``).
    """
    x = as_windows(windows)
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} element names for windows with {x.shape[1]} channels")
    if ids is not None and len(ids) != x.shape[0]:
        raise ValueError(f"{len(ids)} ids for {x.shape[0]} windows")
    attr, delta = integrated_gradients(net, x, n_steps=n_steps, batch_size=batch_size)
    with torch.no_grad(), eval_mode(net):
        device = net_device(net)
        logit = torch.cat(
            [net(x[i : i + 1024].to(device)).cpu() for i in range(0, x.shape[0], 1024)]
        ).numpy()
        base = net(torch.zeros((1, *x.shape[1:]), device=device)).cpu().numpy()
    values = pd.DataFrame(
        attr.sum(axis=(2, 3), dtype=np.float64),
        columns=list(names),
        index=pd.Index([str(i) for i in ids] if ids is not None else range(x.shape[0]), name="id"),
    )
    return ElementAttribution(
        values=values,
        delta=delta.astype(np.float64),
        logit=logit.astype(np.float64),
        baseline_logit=np.full(x.shape[0], float(base[0])),
    )


def rank_elements(values: pd.DataFrame) -> list[str]:
    """Elements ordered by mean contribution, largest (most pro-deposit) first."""
    means = values.mean(axis=0)
    return [str(n) for n in means.sort_values(ascending=False, kind="stable").index]


def plot_element_ranking(values: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Ranked horizontal bars: mean contribution per element with ± 1 SD, one dot per window.

    ``values`` is :attr:`ElementAttribution.values` (rows = deposits, columns = elements).
    Positive contributions push the logit towards "deposit"; the top element is at the top.
    """
    if values.empty or values.shape[1] == 0:
        raise GkdcnError("no attributions to rank (no windows or no elements)")
    order = rank_elements(values)
    data = values[order].to_numpy(dtype=np.float64)
    means = data.mean(axis=0)
    spread = data.std(axis=0, ddof=1) if data.shape[0] > 1 else np.zeros_like(means)
    ypos = np.arange(len(order))[::-1]  # the first-ranked element at the top
    fig = Figure(figsize=(7.0, max(2.5, 0.35 * len(order) + 1.4)), dpi=150)
    ax = fig.subplots()
    colours = np.where(means >= 0, "#c0392b", "#2e6da4")
    ax.barh(ypos, means, xerr=spread, color=colours, alpha=0.75, capsize=3, label="mean ± 1 SD")
    # Deterministic jitter so dots of one element do not sit on one line.
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, size=data.shape)
    ax.scatter(
        data.ravel(),
        (ypos[None, :] + jitter).ravel(),
        s=9,
        color="black",
        alpha=0.6,
        zorder=3,
        label="one window",
    )
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(ypos, order)
    ax.set_xlabel(f"integrated gradients, summed over the window ({IG_UNITS})")
    ax.set_ylabel("element")
    ax.legend(frameon=False, loc="lower right", fontsize="small")
    ax.set_title(title or f"Element contributions to the deposit logit ({data.shape[0]} windows)")
    fig.tight_layout()
    return fig


def attribution_maps(
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    names: Sequence[str],
    top_k: int | None = 3,
    *,
    elements: Sequence[str] | None = None,
    n_steps: int = 16,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Maps ``(H, W)`` of each element's window-summed contribution, NaN at invalid cells.

    Every valid cell gets the integrated gradients of the window centred on it (``n_steps``
    steps: fewer than for site explanations, since this runs once per cell). One pass yields all
    channels; the result keeps ``elements`` if given, else the ``top_k`` elements by mean
    contribution over the valid cells (all of them for ``top_k=None``), in ranked order.
    Cost: ``n_steps`` forward and backward passes per valid cell.
    """
    features = np.asarray(features)
    valid = check_map_inputs(bundle, features, valid)
    names = [str(n) for n in names]
    if len(names) != features.shape[0]:
        raise ValueError(f"{len(names)} element names for {features.shape[0]} channels")
    if elements is not None:
        unknown = [e for e in elements if e not in names]
        if unknown:
            raise GkdcnError(f"unknown element(s) {', '.join(unknown)} ({', '.join(names)})")
    if top_k is not None and top_k < 1:
        raise GkdcnError(f"top_k must be >= 1, got {top_k}")
    rows, cols = np.nonzero(valid)
    maps = np.full((len(names), *valid.shape), np.nan, dtype=np.float32)
    net = bundle.network()
    for r, c, win in map_windows(
        bundle, features, rows, cols, batch_size, progress, "attribution maps"
    ):
        attr, _ = integrated_gradients(net, win, n_steps=n_steps, batch_size=batch_size)
        maps[:, r, c] = attr.sum(axis=(2, 3)).T
    if elements is not None:
        keep = list(dict.fromkeys(elements))
    else:
        means = np.nanmean(maps[:, valid], axis=1) if rows.size else np.zeros(len(names))
        order = [names[i] for i in np.argsort(-means, kind="stable")]
        keep = order if top_k is None else order[:top_k]
    return {name: maps[names.index(name)] for name in keep}
