"""Streaming full-map prediction: the anomaly probability of every valid cell of the element grid.

The map is processed in blocks of ``block_rows`` grid rows. For each block the rows
``[r0 - halo, r1 + halo)`` (``halo = window // 2``) of every model channel are read through
rasterio windows (:meth:`gkdcn.io.rasters.ElementSource.read`), put in the model's channel order,
transformed with the model's own :class:`~gkdcn.data.transforms.ChannelTransform` and padded at
the **map's** true edges exactly as training pads (:func:`gkdcn.data.samples.padded_index`: ``zero``
or numpy ``reflect`` about the map's edge cell, never the block's). The block's windows are a
zero-copy ``unfold`` view of that padded block; only valid centres are gathered, ``batch_size`` at
a time, and run through the network under :func:`torch.inference_mode`. Memory is bounded by
``block_rows`` and ``batch_size`` (plus the output maps and a GDAL block cache sized to two rows
of file blocks), not by the size of the grid, and the result equals cutting every window from the
fully transformed map with :func:`gkdcn.data.samples.extract_windows`.

Uncertainty comes from Monte Carlo dropout (``mc_dropout=K``: dropout active, BatchNorm in eval;
the convolutional features are computed once per window and only the head, which holds the
dropout, is sampled ``K`` times, which is exactly ``K`` full stochastic passes) and/or from an
ensemble of model files (e.g. several seeds) and/or of the members of one model file (``gkdcn train
--seeds N``): every member of every file is one model. The mean and the standard deviation
(``ddof=0``) of the probability over all ``models x K`` samples are returned.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.errors
import torch
from rasterio.windows import Window
from rich.progress import Progress
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from gkdcn.config import Align, PredictConfig, StudyConfig, load_config
from gkdcn.data.knowledge import knowledge_channel
from gkdcn.data.samples import Padding, padded_index
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, InputError, Note
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.qml import qml_path
from gkdcn.io.rasters import (
    NO_COMMON_CELL,
    PROBABILITY_NODATA,
    ElementSource,
    check_valid_cells,
    is_georeferenced,
    layer_names,
    open_elements,
    write_probability_map,
)
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.deform import DeformConv2d
from gkdcn.models.nets import AnomalyNet
from gkdcn.runtime import resolve_device, torch_threads

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
NODATA = PROBABILITY_NODATA  # one nodata for every probability map gkdcn writes
MAX_MC_DROPOUT = 1000  # passes; more add nothing to a std estimate and only exhaust memory
_CSV_CHUNK = 200_000
_TRANSFORM_CELLS = 32_768


@dataclass
class PredictionResult:
    """A probability map on the element grid.

    ``mean`` is the anomaly probability ``(H, W)`` float32 (the mean over models and Monte Carlo
    passes), NaN on invalid cells; ``std`` its standard deviation over those samples, or None
    when there was a single deterministic pass; ``valid`` the ``(H, W)`` bool mask of cells where
    every model channel has data; ``names`` the channels used, in the model's order.
    """

    mean: np.ndarray
    std: np.ndarray | None
    valid: np.ndarray
    grid: Grid
    names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        """Number of cells that received a probability."""
        return int(self.valid.sum())

    @property
    def uncertainty(self) -> bool:
        return self.std is not None


def members_of(bundles: Sequence[ModelBundle]) -> list[ModelBundle]:
    """Every member of every bundle, in order: the models a prediction averages."""
    return [member for bundle in bundles for member in bundle.members]


def check_compatible(bundles: Sequence[ModelBundle]) -> None:
    """An ensemble must share channels (same order), window and padding; else a one-line error."""
    if not bundles:
        raise GkdcnError("no model given")
    first = bundles[0]
    for i, other in enumerate(bundles[1:], start=2):
        problems = []
        if other.channels != first.channels:
            problems.append("channels differ")
        if other.window != first.window:
            problems.append(f"window {other.window} vs {first.window}")
        if other.padding != first.padding:
            problems.append(f"padding {other.padding!r} vs {first.padding!r}")
        if problems:
            raise GkdcnError(
                f"model {i} cannot be averaged with model 1: {'; '.join(problems)} "
                "(an ensemble needs the same channels, window and padding)"
            )


def _check_grid(grid: Grid, window: int) -> None:
    if grid.height < window or grid.width < window:
        raise GkdcnError(
            f"the element grid ({grid.height} x {grid.width} cells) is smaller than the model's "
            f"{window} x {window} window"
        )


CELL_SIZE_TOLERANCE = 0.01  # relative: a model's window covers the area it was trained on


def check_model_grid(bundles: Sequence[ModelBundle], grid: Grid, where: str | Path) -> None:
    """Refuse a grid the models were not trained for: one without georeferencing (unless they
    were trained on one too), or one of another cell size, on which every window covers another
    area than in training. Model files that do not record their training grid only get a
    warning for a grid without georeferencing."""
    for bundle in bundles:
        georeferenced = bundle.georeferenced
        if georeferenced is not False and not is_georeferenced(grid):
            problem = (
                "the layers have no georeferencing (no CRS and no geotransform): the map would "
                "have none either; give the layers their CRS and transform"
            )
            if georeferenced is None:  # a model file that does not say what it was trained on
                warnings.warn(f"{where}: {problem}", UserWarning, stacklevel=2)
                continue
            raise InputError(where, problem)
        trained = bundle.cell_size
        if trained is None or georeferenced is False:
            continue
        if any(
            abs(a - b) > CELL_SIZE_TOLERANCE * abs(b)
            for a, b in zip(grid.cell_size, trained, strict=True)
        ):
            raise InputError(
                where,
                f"cells of {grid.cell_size[0]:g} x {grid.cell_size[1]:g} map units, but the model "
                f"was trained on cells of {trained[0]:g} x {trained[1]:g}: its "
                f"{bundle.window} x {bundle.window} window would cover another area; resample "
                "the layers to the training cell size",
            )


def _source_label(source: ElementSource) -> str | Path:
    """The folder (or multi-band file) the element layers come from, for error messages."""
    paths = list(getattr(source, "paths", []) or [])
    if not paths:
        return "element layers"
    return paths[0] if len(set(paths)) == 1 else paths[0].parent


def _channel_order(bundle: ModelBundle, source: ElementSource) -> list[int]:
    """Indices into ``source.names`` in the model's channel order.

    Layers the model does not use are ignored (selected away); missing ones are a one-line
    :class:`~gkdcn.errors.InputError` naming them (raised by :meth:`ModelBundle.channel_order`).
    """
    names = list(source.names)
    if any(c not in names for c in bundle.channels):
        from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL

        try:
            bundle.channel_order(names, _source_label(source))  # raises, naming the missing layers
        except InputError as exc:
            if KNOWLEDGE_CHANNEL in bundle.channels and KNOWLEDGE_CHANNEL not in names:
                raise InputError(
                    exc.path,
                    f"{exc.problem} (the model takes the knowledge weight as a channel: predict "
                    "from the study config, or add that layer)",
                ) from None
            raise
    return [names.index(c) for c in bundle.channels]


def _gdal_cache_bytes(source: ElementSource) -> int:
    """A GDAL block cache that holds two rows of file blocks of every layer, and no more.

    Blocks of ``block_rows`` rows are read top to bottom, so caching more than the file blocks
    under the current read only lets GDAL's default cache (5% of RAM) grow with the map; caching
    less re-decompresses each tile several times.
    """
    floor, ceiling = 64 << 20, 1 << 30
    width = source.grid.width
    if 8 * len(source.names) * source.grid.height * width <= floor:
        return floor  # the whole map fits: no need to look at the files' block layout
    total = 0
    for path in dict.fromkeys(getattr(source, "paths", []) or []):
        try:
            with rasterio.open(path) as ds:
                block_h = max(h for h, _ in ds.block_shapes)
                itemsize = max(np.dtype(dt).itemsize for dt in ds.dtypes)
                total += 2 * ds.count * block_h * max(width, ds.width) * itemsize
        except (rasterio.errors.RasterioError, OSError, ValueError):
            total += 2 * 256 * width * 8
    return int(min(max(1.25 * total + (16 << 20), floor), ceiling))


def _transform_key(bundle: ModelBundle) -> str:
    return json.dumps(bundle.transform.to_dict(), sort_keys=True)


def _inference_network(bundle: ModelBundle, device: torch.device) -> AnomalyNet:
    """The bundle's network for inference: eval, BatchNorm folded, ReLU in place, channels-last.

    :class:`~gkdcn.models.nets.AnomalyNet` applies ``bn_k`` right after ``conv_k`` (plain or
    deformable, both linear in their weight), so in eval mode ``bn_k(conv_k(x))`` is ``conv_k``
    with scaled weight and shifted bias. The exactness test (tests/test_predict.py) compares
    against the unmodified network.
    """
    net = bundle.network(device)
    for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
        conv = getattr(net, conv_name, None)
        bn = getattr(net, bn_name, None)
        if not isinstance(bn, torch.nn.BatchNorm2d) or not bn.track_running_stats:
            continue
        if isinstance(conv, torch.nn.Conv2d):
            setattr(net, conv_name, fuse_conv_bn_eval(conv, bn))
        elif isinstance(conv, DeformConv2d):
            # For fixed sampling positions the deformable conv is linear in (weight, bias), and
            # its offset/mask convs read the layer's input, not its output, so they stay as they
            # are: torch's weight folding applies to weight and bias unchanged.
            assert bn.running_var is not None and bn.running_mean is not None
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
            )
        else:
            continue
        setattr(net, bn_name, torch.nn.Identity())
    for module in net.modules():
        if isinstance(module, torch.nn.ReLU):
            # Every ReLU follows a layer whose output nothing else reads; in place avoids a new
            # (batch, 64, w, w) buffer per call (out-of-place ReLU on channels-last is also slow).
            module.inplace = True
    # Module.to accepts memory_format at run time; torch's overloads for it omit the keyword.
    return net.to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]


def _set_mc_dropout(net: AnomalyNet) -> None:
    """Eval mode everywhere (BatchNorm uses running stats) except Dropout, which samples."""
    net.eval()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train()


def _apply_in_chunks(transform: ChannelTransform, raw: np.ndarray) -> np.ndarray:
    """``transform.apply(raw)`` for ``(C, h, W)``, a few columns at a time.

    The transform works per cell in float64 with several temporaries; chunking keeps those at
    about ``_TRANSFORM_CELLS`` cells whatever the grid's width. The result is identical.
    """
    _, rows, width = raw.shape
    step = max(1, _TRANSFORM_CELLS // max(rows, 1))
    if step >= width:
        return transform.apply(raw)
    out = np.empty(raw.shape, dtype=np.float32)
    for c0 in range(0, width, step):
        out[:, :, c0 : c0 + step] = transform.apply(raw[:, :, c0 : c0 + step])
    return out


def _padded_block(
    features: np.ndarray,
    row_idx: np.ndarray,
    row_ok: np.ndarray,
    col_idx: np.ndarray,
    col_ok: np.ndarray,
) -> np.ndarray:
    """The padded block channels-last, ``(len(row_idx), len(col_idx), C)``, padding cells zeroed.

    Channels-last makes every window a channels-last NCHW tensor, the layout the CPU convolution
    kernels run fastest on, without any extra copy.
    """
    out = features.transpose(1, 2, 0)[row_idx[:, None], col_idx[None, :]]
    if not row_ok.all():
        out[~row_ok] = 0.0
    if not col_ok.all():
        out[:, ~col_ok] = 0.0
    return out


def row_blocks(height: int, block_rows: int) -> list[tuple[int, int]]:
    """The ``[r0, r1)`` row blocks a map of ``height`` rows is predicted in, top to bottom."""
    return [(r0, min(height, r0 + block_rows)) for r0 in range(0, height, block_rows)]


@dataclass
class BlockPrediction:
    """One row block ``[r0, r1)`` of a map: ``valid``, ``mean`` and ``std`` are ``(r1 - r0, W)``."""

    r0: int
    r1: int
    valid: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    windows: int


@dataclass
class BlockPlan:
    """What every row block of one prediction shares: networks, transforms, padding indices.

    A block depends only on the raw rows it reads (:meth:`read_rows`, the block plus the
    window's halo, clipped to the map) and on the seed, never on the blocks before it, so blocks
    can be predicted in any order or on other machines (:mod:`gkdcn.cluster`) with the same
    result as :func:`predict_map`.
    """

    nets: list[AnomalyNet]
    keys: list[str]
    transforms: dict[str, ChannelTransform]
    order: list[int] | None  # indices into the source's layers; None: already the model's order
    height: int
    width: int
    window: int
    padding: Padding
    passes: int
    n_samples: int
    device: torch.device
    col_idx: np.ndarray = field(repr=False)
    col_ok: np.ndarray = field(repr=False)

    def read_rows(self, r0: int, r1: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the source that block ``[r0, r1)`` reads (block plus halo)."""
        half = self.window // 2
        row_idx, _ = padded_index(np.arange(r0 - half, r1 + half), self.height, self.padding)
        return int(row_idx.min()), int(row_idx.max()) + 1

    def predict_block(
        self, raw: np.ndarray, r0: int, r1: int, batch_size: int, seed: int = 0
    ) -> BlockPrediction:
        """Predict rows ``[r0, r1)`` from ``raw``, the source's rows :meth:`read_rows` ``(C, h, W)``.

        Monte Carlo dropout masks are drawn from ``torch.manual_seed(seed + r0)`` (the RNG state
        outside is left as it was), so each block is reproducible on its own.
        """
        half, width, window, dev = self.window // 2, self.width, self.window, self.device
        row_idx, row_ok = padded_index(np.arange(r0 - half, r1 + half), self.height, self.padding)
        lo = int(row_idx.min())
        if self.order is not None:
            raw = raw[self.order]
        block_valid = np.isfinite(raw[:, r0 - lo : r1 - lo]).all(axis=0)
        mean = np.full((r1 - r0, width), np.nan, dtype=np.float32)
        std = np.full((r1 - r0, width), np.nan, dtype=np.float32) if self.n_samples > 1 else None
        rr, cc = np.nonzero(block_valid)
        if not rr.size:
            return BlockPrediction(r0, r1, block_valid, mean, std, 0)
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed + r0)
            views = {}
            for key, transform in self.transforms.items():
                feats = _padded_block(
                    _apply_in_chunks(transform, raw),
                    row_idx - lo,
                    row_ok,
                    self.col_idx,
                    self.col_ok,
                )
                block = torch.from_numpy(feats).to(dev)
                # (rows+2h, W+2h, C) -> (rows, W, w, w, C): a strided view, no copy.
                views[key] = block.unfold(0, window, 1).unfold(1, window, 1).permute(0, 1, 3, 4, 2)
            del raw
            rr_t = torch.from_numpy(rr).to(dev)
            cc_t = torch.from_numpy(cc).to(dev)
            for b0 in range(0, rr.size, batch_size):
                b1 = min(rr.size, b0 + batch_size)
                probs = _batch_probabilities(
                    self.nets, self.keys, views, rr_t[b0:b1], cc_t[b0:b1], self.passes
                )
                mean[rr[b0:b1], cc[b0:b1]] = probs.mean(axis=0)
                if std is not None:
                    std[rr[b0:b1], cc[b0:b1]] = probs.std(axis=0)
        return BlockPrediction(r0, r1, block_valid, mean, std, int(rr.size))


def block_plan(
    bundles: Sequence[ModelBundle],
    names: Sequence[str],
    grid: Grid,
    *,
    mc_dropout: int = 0,
    device: DeviceName | str | torch.device = "cpu",
) -> BlockPlan:
    """The shared part of a prediction of ``bundles`` (each member one model) on layers
    ``names`` over ``grid``."""
    bundles = members_of(bundles)
    first = bundles[0]
    dev = resolve_device(device)
    order = [list(names).index(c) for c in first.channels]
    nets = [_inference_network(b, dev) for b in bundles]
    for net in nets:
        if mc_dropout:
            _set_mc_dropout(net)
    keys = [_transform_key(b) for b in bundles]
    half = first.window // 2
    col_idx, col_ok = padded_index(np.arange(-half, grid.width + half), grid.width, first.padding)
    passes = max(mc_dropout, 1)
    return BlockPlan(
        nets=nets,
        keys=keys,
        transforms={k: b.transform for k, b in zip(keys, bundles, strict=True)},
        order=None if order == list(range(len(names))) else order,
        height=grid.height,
        width=grid.width,
        window=first.window,
        padding=first.padding,
        passes=passes,
        n_samples=passes * len(bundles),
        device=dev,
        col_idx=col_idx,
        col_ok=col_ok,
    )


def prepare_prediction(
    bundles: Sequence[ModelBundle],
    source: ElementSource,
    *,
    batch_size: int,
    block_rows: int,
    mc_dropout: int = 0,
    device: DeviceName | str | torch.device = "cpu",
) -> BlockPlan:
    """Check a prediction request (one-line errors before any work) and build its block plan."""
    bundles = members_of(bundles)
    check_compatible(bundles)
    if batch_size < 1:
        raise GkdcnError(f"batch size must be at least 1, got {batch_size}")
    if block_rows < 1:
        raise GkdcnError(f"block rows must be at least 1, got {block_rows}")
    if mc_dropout < 0 or mc_dropout == 1:
        raise GkdcnError(f"mc_dropout must be 0 (off) or at least 2 passes, got {mc_dropout}")
    first = bundles[0]
    _channel_order(first, source)  # a missing layer is a one-line error naming it
    if mc_dropout and any(b.spec.dropout <= 0 for b in bundles):
        raise GkdcnError("mc_dropout needs a model trained with dropout > 0")
    _check_grid(source.grid, first.window)
    return block_plan(bundles, source.names, source.grid, mc_dropout=mc_dropout, device=device)


def predict_map(
    bundle_or_bundles: ModelBundle | Sequence[ModelBundle],
    source: ElementSource,
    *,
    batch_size: int = 1024,
    block_rows: int = 64,
    device: DeviceName | str = "cpu",
    mc_dropout: int = 0,
    seed: int = 0,
    threads: int | None = None,
    progress: Progress | None = None,
) -> PredictionResult:
    """Anomaly probability of every valid cell of ``source``'s grid, streamed block by block.

    ``bundle_or_bundles``: one model, or several (an ensemble) sharing channels, window and
    padding; each applies its own transform. ``mc_dropout=K`` (K >= 2) samples the dropout layer
    ``K`` times per model. With more than one sample per cell, ``std`` holds the standard deviation
    of the probability. Border cells are predicted with the training padding; invalid cells (any
    model channel NaN) are NaN in ``mean`` / ``std`` and False in ``valid``. On the CPU torch
    uses ``threads`` threads for this call (default: torch's own setting, all physical cores; on
    a machine busy with other work, fewer threads can be much faster).
    """
    bundles = (
        [bundle_or_bundles]
        if isinstance(bundle_or_bundles, ModelBundle)
        else list(bundle_or_bundles)
    )
    if threads is not None and threads < 1:
        raise GkdcnError(f"threads must be at least 1, got {threads}")
    plan = prepare_prediction(
        bundles, source, batch_size=batch_size, block_rows=block_rows, mc_dropout=mc_dropout,
        device=device,
    )  # fmt: skip
    first, grid, dev = bundles[0], source.grid, plan.device
    height, width = grid.shape
    mean = np.full((height, width), np.nan, dtype=np.float32)
    std = np.full((height, width), np.nan, dtype=np.float32) if plan.n_samples > 1 else None
    valid = np.zeros((height, width), dtype=bool)
    n_windows = 0
    started = time.perf_counter()
    task = progress.add_task("predicting", total=height, info="") if progress is not None else None
    cache = _gdal_cache_bytes(source)
    with torch_threads(threads), rasterio.Env(GDAL_CACHEMAX=cache):
        for r0, r1 in row_blocks(height, block_rows):
            lo, hi = plan.read_rows(r0, r1)
            block = plan.predict_block(
                source.read(Window(0, lo, width, hi - lo)), r0, r1, batch_size, seed
            )
            valid[r0:r1] = block.valid
            mean[r0:r1] = block.mean
            if std is not None:
                std[r0:r1] = block.std
            n_windows += block.windows
            if progress is not None and task is not None:
                progress.update(task, advance=r1 - r0, info=f"{n_windows} cells")
    seconds = time.perf_counter() - started
    info = {
        "models": len(members_of(bundles)),
        "kind": first.kind,
        "mc_dropout": mc_dropout,
        "samples_per_cell": plan.n_samples,
        "window": plan.window,
        "padding": plan.padding,
        "device": str(dev),
        "threads": threads or torch.get_num_threads(),
        "batch_size": batch_size,
        "block_rows": block_rows,
        "windows": n_windows,
        "seconds": seconds,
        "windows_per_second": n_windows / seconds if seconds > 0 else float("nan"),
    }
    return PredictionResult(
        mean=mean, std=std, valid=valid, grid=grid, names=list(first.channels), info=info
    )


def _batch_probabilities(
    nets: Sequence[AnomalyNet],
    keys: Sequence[str],
    views: dict[str, torch.Tensor],
    rr: torch.Tensor,
    cc: torch.Tensor,
    passes: int,
) -> np.ndarray:
    """``(models * passes, n)`` float64 probabilities for the windows centred at ``(rr, cc)``."""
    out = []
    gathered: dict[str, torch.Tensor] = {}
    for net, key in zip(nets, keys, strict=True):
        if key not in gathered:
            # (n, w, w, C) contiguous: the batch's only copy; as NCHW it is channels-last.
            gathered[key] = views[key][rr, cc].permute(0, 3, 1, 2)
        x = gathered[key]
        if passes == 1:
            out.append(torch.sigmoid(net(x)))
        else:
            feats = net.features(x)
            out.extend(torch.sigmoid(net.head(feats).squeeze(1)) for _ in range(passes))
    return torch.stack(out).cpu().numpy().astype(np.float64)  # MPS has no float64


def write_prediction(
    result: PredictionResult,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    csv_path: str | Path | None = None,
    cog: bool = False,
) -> Path:
    """Write the map as a tiled, DEFLATE-compressed float32 GeoTIFF (and optionally a CSV).

    Band 1 is "probability", band 2 "std" when the result has uncertainty; invalid cells hold
    nodata -9999. Internal overviews (``cog``: a Cloud-Optimized GeoTIFF) and a QGIS style
    ``<map>.qml`` beside it (band 1 on a 0-1 ramp, nodata transparent) open it ready in QGIS.
    The CSV (the authors' format) has one row per valid cell: ``x, y`` of the cell centre in the grid's CRS, ``probability`` (and ``std``). Both files are written atomically;
    if the CSV fails, the new GeoTIFF is removed again.
    """
    out_path = Path(out_path)
    check_output_names(out_path, csv_path)
    check_writable(out_path, overwrite)
    if csv_path is not None:
        csv_path = Path(csv_path)
        check_writable(csv_path, overwrite)
    bands = [result.mean]
    names = ["probability"]
    if result.std is not None:
        bands.append(result.std)
        names.append("std")
    stack = np.stack(bands).astype(np.float32)
    stack[:, ~result.valid] = NODATA
    write_probability_map(
        out_path, stack, result.grid, descriptions=names, overwrite=overwrite, cog=cog
    )
    if csv_path is not None:
        try:
            write_prediction_csv(result, csv_path, overwrite=overwrite)
        except BaseException:
            out_path.unlink(missing_ok=True)
            qml_path(out_path).unlink(missing_ok=True)
            raise
    return out_path


def check_output_names(out: str | Path, csv_path: str | Path | None) -> None:
    """The map, its QGIS style (``<map>.qml``, written beside it) and the CSV must be three
    different files: checked before any work, so none overwrites another."""
    out, style = Path(out), qml_path(out)
    if out.resolve() == style.resolve():
        raise InputError(
            out, "the map cannot be a .qml file: its QGIS style is written beside it as <map>.qml"
        )
    if csv_path is None:
        return
    if Path(csv_path).resolve() == out.resolve():
        raise InputError(csv_path, "the CSV and the GeoTIFF must be different files")
    if Path(csv_path).resolve() == style.resolve():
        raise InputError(csv_path, f"the CSV cannot be {style.name}, the map's QGIS style")


def write_prediction_csv(
    result: PredictionResult, csv_path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write ``x, y, probability[, std]`` for every valid cell (cell centres), atomically."""
    csv_path = Path(csv_path)
    rows, cols = np.nonzero(result.valid)
    header = ["x", "y", "probability"] + (["std"] if result.std is not None else [])
    with atomic_path(csv_path, overwrite) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(header)
        for start in range(0, rows.size, _CSV_CHUNK):
            r = rows[start : start + _CSV_CHUNK]
            c = cols[start : start + _CSV_CHUNK]
            x, y = result.grid.xy(r, c)
            columns = [x, y, result.mean[r, c].astype(np.float64)]
            if result.std is not None:
                columns.append(result.std[r, c].astype(np.float64))
            fmt = ["%.10g", "%.10g"] + ["%.7g"] * (len(columns) - 2)
            np.savetxt(fh, np.column_stack(columns), fmt=fmt, delimiter=",")
    return csv_path


def open_prediction_source(
    data: str | Path,
    channels: Sequence[str],
    *,
    align: Align | None = None,
    data_dir: str | Path | None = None,
) -> tuple[ElementSource, PredictConfig | None]:
    """Open the element layers a model needs from a study config (``.toml``) or from the data.

    ``data`` is a study config (its ``elements`` and ``align`` are used, and its ``[predict]``
    settings are returned), a folder of single-band GeoTIFFs or a multi-band GeoTIFF. Only the
    model's ``channels`` are opened, in the model's order; other layers are ignored and a missing
    one is a one-line error naming it. ``align`` overrides the config's (default ``"strict"``).
    """
    from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL

    path = Path(data)
    if path.suffix.lower() != ".toml":
        if KNOWLEDGE_CHANNEL in channels and KNOWLEDGE_CHANNEL not in layer_names(path):
            raise InputError(
                path,
                f"the model takes the knowledge weight '{KNOWLEDGE_CHANNEL}' as a channel, "
                "which element layers alone do not give: predict from the study config (its "
                "[knowledge] faults or weights make the channel), not from the element data",
            )
        source = open_elements(path, layers=list(channels), align=align or "strict")
        _note_unused(path, channels)
        return source, None
    cfg = load_config(path, data_dir)
    align = align or cfg.align
    wants_knowledge = KNOWLEDGE_CHANNEL in channels
    layers = [c for c in channels if c != KNOWLEDGE_CHANNEL] if wants_knowledge else list(channels)
    source = open_elements(
        cfg.resolve(cfg.elements.path), layers=layers, align=align, nodata=cfg.elements.nodata,
        valid_range=cfg.elements.valid_range,
    )  # fmt: skip
    _note_unused(cfg.resolve(cfg.elements.path), channels)
    if not wants_knowledge:
        return source, cfg.predict
    try:
        return _KnowledgeChannelSource(source, cfg, KNOWLEDGE_CHANNEL), cfg.predict
    except BaseException:
        source.close()
        raise


def _note_unused(path: Path, channels: Sequence[str]) -> None:
    """The one rule of every command: a model's channels are picked by name from a larger grid,
    and a note names the layers it does not use (missing ones were refused already)."""
    unused = [n for n in layer_names(path) if n not in channels]
    if unused:
        warnings.warn(
            f"{path}: the model uses {len(channels)} of the layers; "
            f"{len(unused)} unused: {', '.join(unused)}",
            Note,
            stacklevel=2,
        )


class _KnowledgeChannelSource(ElementSource):
    """Element layers plus the study's knowledge weight as one more channel (``as_channel``).

    The weight map ``(H, W)`` is computed once from the config's faults or weight raster exactly
    as :func:`gkdcn.data.study.load_study` does for training; :meth:`read` appends its window.
    """

    def __init__(self, source: ElementSource, cfg: StudyConfig, name: str) -> None:
        from gkdcn.data.knowledge import load_knowledge_weight

        super().__init__([*source.names, name], source.grid, source.paths, [])
        self._source = source
        weight, _ = load_knowledge_weight(cfg, source.grid, np.ones(source.grid.shape, bool))
        if weight is None:
            raise InputError(
                cfg.base_dir,
                f"the model uses the knowledge channel '{name}' but the config has no "
                "[knowledge] faults or weights",
            )
        self._weight = weight

    def read(self, window: Window | None = None) -> np.ndarray:
        data = self._source.read(window)
        if window is None:
            extra = self._weight
        else:
            r0, c0 = round(window.row_off), round(window.col_off)
            extra = self._weight[r0 : r0 + data.shape[1], c0 : c0 + data.shape[2]]
        return np.concatenate([data, knowledge_channel(extra)], axis=0)

    def close(self) -> None:
        self._source.close()


def predict_to_file(
    models: str | Path | ModelBundle | Sequence[str | Path | ModelBundle],
    source: ElementSource | str | Path,
    out: str | Path,
    *,
    csv_path: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int | None = None,
    block_rows: int | None = None,
    device: DeviceName | str = "cpu",
    mc_dropout: int = 0,
    seed: int = 0,
    align: Align | None = None,
    data_dir: str | Path | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    engine: Callable[..., PredictionResult] | None = None,
    cog: bool = False,
) -> list[Path]:
    """Check the outputs can be written, load the model(s), predict, write; the written paths.

    The CLI's path. ``models``: model files or loaded bundles (several: an ensemble). ``source``
    is an open :class:`~gkdcn.io.rasters.ElementSource` or a path for
    :func:`open_prediction_source` (study config or element data; then ``batch_size`` and
    ``block_rows`` default to the config's ``[predict]`` settings). Every check that can fail
    (outputs writable, models readable and compatible, channels present, grid large enough)
    happens before the long computation; on any error no output file is left behind. Returns
    ``[GeoTIFF]`` or ``[GeoTIFF, CSV]`` (the QGIS style beside the GeoTIFF is not listed); use :func:`predict_map` and :func:`write_prediction` to
    keep the :class:`PredictionResult` in memory as well. ``engine`` computes the map
    (default :func:`predict_map`; e.g. :func:`gkdcn.cluster.predict_map_on_cluster` bound to a
    Dask client runs its blocks on a cluster).
    """
    items = [models] if isinstance(models, str | Path | ModelBundle) else list(models)
    if not items:
        raise GkdcnError("no model file given")
    inputs = _input_paths(items, source, data_dir)
    check_output_names(out, csv_path)
    check_writable(out, overwrite, inputs=inputs)
    check_writable(qml_path(out), overwrite, inputs=inputs)
    if csv_path is not None:
        check_writable(csv_path, overwrite, inputs=inputs)
    bundles = [m if isinstance(m, ModelBundle) else ModelBundle.load(m) for m in items]
    check_compatible(bundles)
    settings: PredictConfig | None = None
    opened: ElementSource | None = None
    if not isinstance(source, ElementSource):
        with warnings.catch_warnings():
            # check_model_grid says it in one line, naming the layers
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            opened, settings = open_prediction_source(
                source, bundles[0].channels, align=align, data_dir=data_dir
            )
        source = opened
    defaults = settings or PredictConfig()
    try:
        where = _source_label(source)
        check_model_grid(bundles, source.grid, where)
        check_valid_cells(source, where, f"{NO_COMMON_CELL[:-1]}: the map would be all nodata)")
        _warn_far_outside(bundles[0], source)
        result = (engine or predict_map)(
            bundles,
            source,
            batch_size=defaults.batch_size if batch_size is None else batch_size,
            block_rows=defaults.block_rows if block_rows is None else block_rows,
            device=device,
            mc_dropout=mc_dropout,
            seed=seed,
            threads=threads,
            progress=progress,
        )
    finally:
        if opened is not None:
            opened.close()
    write_prediction(result, out, overwrite=overwrite, csv_path=csv_path, cog=cog)
    return [Path(out)] + ([Path(csv_path)] if csv_path is not None else [])


FAR_OUTSIDE = 25.0  # standard deviations of the training data, in scaled space


def _warn_far_outside(bundle: ModelBundle, source: ElementSource, rows: int = 64) -> None:
    """Warn (once per layer) when the data lie far outside what the model was trained on.

    A sample of ``rows`` evenly spaced grid rows is transformed as the model sees it; a channel
    beyond :data:`FAR_OUTSIDE` standard deviations (a unit mix-up, an undeclared sentinel) gives
    probabilities that are extrapolation. Only meaningful with standard or robust scaling.
    """
    if bundle.transform.scaling not in ("standard", "robust"):
        return
    grid = source.grid
    picks = np.unique(np.linspace(0, grid.height - 1, min(rows, grid.height)).astype(int))
    order = _channel_order(bundle, source)
    sample = np.concatenate(
        [source.read(Window(0, int(r), grid.width, 1))[order] for r in picks], axis=1
    )
    with np.errstate(all="ignore"):
        z = np.abs(bundle.transform.apply(sample))
    for name, reach in zip(bundle.channels, z.reshape(len(order), -1).max(axis=1), strict=True):
        if reach > FAR_OUTSIDE:
            warnings.warn(
                f"layer '{name}': values reach {reach:.3g} standard deviations from the model's "
                "training data (different units or an undeclared nodata value?); probabilities "
                "there are extrapolation",
                UserWarning,
                stacklevel=2,
            )


def _input_paths(
    items: Sequence[str | Path | ModelBundle],
    source: ElementSource | str | Path,
    data_dir: str | Path | None,
) -> list[Path]:
    """What a prediction reads (model files, config and its paths, element data): never an output."""
    paths = [Path(m) for m in items if not isinstance(m, ModelBundle)]
    if isinstance(source, ElementSource):
        return paths + list(getattr(source, "paths", []) or [])
    source = Path(source)
    paths.append(source)
    if source.suffix.lower() == ".toml" and source.is_file():
        paths += load_config(source, data_dir).input_paths()
    return paths


def predict_cells(
    bundle: ModelBundle,
    raw: np.ndarray,
    names: Sequence[str],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    batch_size: int = 1024,
    device: DeviceName | str = "cpu",
) -> np.ndarray:
    """Probability at chosen cells of an in-memory raw stack ``(C, H, W)``.

    Windows are cut with :func:`gkdcn.data.samples.extract_windows` from the transformed stack,
    so a cell gets exactly the value the full map gives it; used where only some cells matter
    (held-out deposits ranked against a background sample). A model file with several members
    gives the mean of their probabilities, as :func:`predict_map` does.
    """
    members = bundle.members
    if len(members) > 1:
        return np.mean(
            [
                predict_cells(m, raw, names, rows, cols, batch_size=batch_size, device=device)
                for m in members
            ],
            axis=0,
        )
    return _member_cells(bundle, raw, names, rows, cols, batch_size=batch_size, device=device)


def _member_cells(
    bundle: ModelBundle,
    raw: np.ndarray,
    names: Sequence[str],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    batch_size: int,
    device: DeviceName | str,
) -> np.ndarray:
    from gkdcn.data.samples import extract_windows

    order = bundle.channel_order(list(names))
    features = bundle.transform.apply(raw[order])
    dev = resolve_device(device)
    net = _inference_network(bundle, dev)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            sl = slice(start, start + batch_size)
            x = extract_windows(features, rows[sl], cols[sl], bundle.window, bundle.padding)
            logits = net(torch.from_numpy(x).to(dev))  # channels-last inside the network
            out[sl] = torch.sigmoid(logits).float().cpu().numpy()  # MPS has no float64
    return out
