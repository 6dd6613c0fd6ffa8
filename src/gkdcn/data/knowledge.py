"""Geological knowledge: ore-controlling faults -> distance on the element grid -> proximity weight.

The GK-DCN paper guides the network with a weight that decays with distance from ore-controlling
faults. The authors' release (tianshan ``geology_weights.tif``) uses rings of equal width around the
faults and a min-max scaled power law of the ring index,

    w_i = (i^-p - n^-p) / (1 - n^-p)   for ring i = 1 .. n-1,   w_i = 0 for i >= n,

with ring 1 holding the fault cells themselves (weight 1). We also offer a plain exponential decay.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from rasterio.features import rasterize
from scipy.ndimage import distance_transform_edt

from gkdcn.config import DecayConfig, StudyConfig
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import read_layer_on_grid
from gkdcn.io.vectors import read_lines

_LINE_TYPES = {"LineString", "MultiLineString", "LinearRing"}

# Distances that are an exact multiple of the ring width (they are, on square grids whose cell
# size divides the ring width) must land in the outer ring even after float rounding in the EDT.
_RING_EPS = 1e-9


def fault_mask(lines: gpd.GeoDataFrame, grid: Grid) -> np.ndarray:
    """Boolean (H, W) mask of the cells any line touches (rasterio ``all_touched=True``).

    Lines must already be in the grid CRS. Raises :class:`GkdcnError` if there are no usable lines,
    if they are not lines, if their CRS differs from the grid's, or if none touches the grid.
    """
    if not isinstance(lines, gpd.GeoSeries | gpd.GeoDataFrame):
        raise TypeError(f"faults must be a GeoDataFrame of lines, got {type(lines).__name__}")
    geoms = lines.geometry if isinstance(lines, gpd.GeoDataFrame) else lines
    if lines.crs is not None and grid.crs is not None and lines.crs != grid.crs:
        raise GkdcnError(
            f"faults are in {lines.crs.to_string()[:40]} but the grid is in "
            f"{grid.crs.to_string()[:40]}: reproject the faults first"
        )
    geoms = geoms[geoms.notna() & ~geoms.is_empty]
    if len(geoms) == 0:
        raise GkdcnError("faults: no line geometries")
    bad = sorted(set(geoms.geom_type) - _LINE_TYPES)
    if bad:
        raise GkdcnError(f"faults must be lines, found {', '.join(bad)}")
    mask = rasterize(
        ((geom, 1) for geom in geoms),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        all_touched=True,
        dtype="uint8",
    ).astype(bool)
    if not mask.any():
        left, bottom, right, top = grid.bounds
        raise GkdcnError(
            f"faults: no line touches the grid (grid bounds {left:.6g}, {bottom:.6g}, "
            f"{right:.6g}, {top:.6g}; are the faults in the grid CRS?)"
        )
    return mask


def distance_to_lines(lines: gpd.GeoDataFrame, grid: Grid) -> np.ndarray:
    """Distance in map units from each cell centre to the centre of the nearest fault cell.

    Fault cells are those any line touches (see :func:`fault_mask`); their distance is 0.
    Returns a float64 (H, W) array. Lines must already be in the grid CRS.
    """
    mask = fault_mask(lines, grid)
    cell_width, cell_height = grid.cell_size
    return np.asarray(
        distance_transform_edt(~mask, sampling=(cell_height, cell_width)), dtype=np.float64
    )


def ring_weights(decay: DecayConfig) -> np.ndarray:
    """The ring weights w_1 .. w_{n-1} of a ``rings`` decay, float64 (ring n and beyond weigh 0)."""
    n = decay.rings
    p = decay.exponent
    i = np.arange(1, n, dtype=np.float64)
    return (i**-p - n**-p) / (1.0 - n**-p)


def proximity_weight(distance: np.ndarray, decay: DecayConfig) -> np.ndarray:
    """Fault-proximity weight in [0, 1] (float32, same shape as ``distance``).

    ``rings``: ring index i = floor(distance / ring_width) + 1, weight w_i from :func:`ring_weights`,
    0 for i >= rings. ``exponential``: exp(-distance / scale). NaN distance -> weight 0.
    """
    distance = np.asarray(distance, dtype=np.float64)
    finite = ~np.isnan(distance)
    if np.any(distance[finite] < 0):
        raise GkdcnError("fault distance must be non-negative")
    weight = np.zeros(distance.shape, dtype=np.float64)
    d = distance[finite]
    if decay.kind == "rings":
        n = decay.rings
        # Clip before the cast so infinite / huge distances stay in range; they get weight 0.
        ring = np.floor(np.minimum(d / decay.ring_width + _RING_EPS, n)).astype(np.int64) + 1
        table = np.concatenate([[0.0], ring_weights(decay), np.zeros(2)])  # index = ring number
        weight[finite] = table[np.minimum(ring, n)]
    elif decay.kind == "exponential":
        weight[finite] = np.exp(-d / decay.scale)
    else:  # pragma: no cover - DecayConfig validates the kind
        raise GkdcnError(f"unknown decay kind {decay.kind!r}")
    return np.clip(weight, 0.0, 1.0).astype(np.float32)


def weights_from_faults(
    lines: gpd.GeoDataFrame, grid: Grid, decay: DecayConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(weight float32, distance float64) on ``grid`` for fault ``lines`` already in the grid CRS."""
    distance = distance_to_lines(lines, grid)
    return proximity_weight(distance, decay), distance


#: Name of the knowledge weight when it is also fed to a network as a channel
#: (``[knowledge] as_channel``); training and prediction use this one rule.
KNOWLEDGE_CHANNEL = "fault_proximity"


def knowledge_channel(weight: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The knowledge weight ``(H, W)`` as one more input channel ``(1, H, W)`` float32.

    NaN off ``valid`` (when given) like every raw channel; appended after the element layers.
    """
    channel = weight if valid is None else np.where(valid, weight, np.nan)
    return np.asarray(channel, dtype=np.float32)[np.newaxis]


def load_knowledge_weight(
    config: StudyConfig, grid: Grid, valid: np.ndarray, notes: list[str] | None = None
) -> tuple[np.ndarray | None, gpd.GeoDataFrame | None]:
    """The study's knowledge weight ``(H, W)`` in [0, 1] on ``grid`` and the faults it came from.

    From ``[knowledge] faults`` (proximity weight of the distance to the lines) or a ready-made
    ``weights`` raster (cells without a weight: 0; ``valid`` says which cells must have one);
    ``(None, None)`` when the config has neither. The one rule used for training (study loading)
    and prediction (the knowledge channel). Problems go to ``notes`` when given.
    """
    notes = [] if notes is None else notes
    cfg = config.knowledge
    if cfg.faults is not None:
        path = config.resolve(cfg.faults)
        faults = read_lines(path, target_crs=grid.crs)
        try:
            distance = distance_to_lines(faults, grid)
        except GkdcnError as exc:
            problem = str(exc).removeprefix("faults: ")
            raise InputError(path, problem) from None
        return proximity_weight(distance, cfg.decay).astype(np.float32), faults
    if cfg.weights is not None:
        path = config.resolve(cfg.weights)
        weight = read_layer_on_grid(path, grid, config.align, resampling="nearest")
        finite = np.isfinite(weight)
        if finite.any():
            low, high = float(weight[finite].min()), float(weight[finite].max())
            if low < 0 or high > 1:
                raise InputError(path, f"weights must lie in [0, 1]; found {low:.6g} .. {high:.6g}")
        missing = int((valid & ~finite).sum())
        if missing == int(valid.sum()):
            raise InputError(path, "no weight on any valid cell of the element grid")
        if missing:
            notes.append(f"{path}: {missing} valid cells have no weight; set to 0")
        return np.where(finite, weight, 0.0).astype(np.float32), None
    return None, None
