"""Point geochemistry (sample tables) to element grids: one single-band GeoTIFF per element.

Survey geochemistry arrives as samples: rows with coordinates and dozens of element columns, with
codes for "not analysed" and "below detection". :func:`read_samples` reads them the way the study
config reads points (:func:`gkdcn.io.vectors.read_points`: a CSV with coordinate columns and a
CRS, or any point vector file), makes every missing-value and detection-limit rule explicit, and
merges samples that share coordinates. :func:`grid_samples` interpolates each element onto a grid
(:func:`target_grid`: a cell size snapped to round coordinates, or the grid of an existing
raster), in log10 space for strictly positive concentrations, and leaves cells farther than
``max_distance`` from any sample as nodata. A k-fold cross-validated error per element says
which elements are mapped well. :func:`write_grids` writes a folder that is directly an
``[elements]`` folder of a study config.

Two interpolators:

- ``"idw"`` (default): inverse-distance weighting of the nearest samples with SciPy's KD-tree;
  fast on any number of samples;
- ``"verde-spline"``: verde's biharmonic spline (``verde.Spline``), smoother, cubic in the number
  of samples (block-reduced to one sample per cell first when there are many).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from scipy.spatial import cKDTree

from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import atomic_dir, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import grid_of, write_geotiff
from gkdcn.io.vectors import read_points

GridMethod = Literal["idw", "verde-spline"]
BelowDetection = Literal["half", "nodata", "keep"]
GRID_METHODS: tuple[GridMethod, ...] = ("idw", "verde-spline")
BELOW_DETECTION: tuple[BelowDetection, ...] = ("half", "nodata", "keep")

#: Nodata of the written grids (float32).
NODATA = -9999.0
#: Name of the per-element cross-validation table written beside the grids.
CV_FILE = "cross_validation.csv"
#: Values this large are float sentinels ("no value"), never concentrations.
SENTINEL = 1e30

# Column names that identify samples rather than measure anything: never gridded unless asked.
_ID_NAMES = {
    "id",
    "fid",
    "objectid",
    "sample",
    "sampleid",
    "sample_id",
    "site_id",
    "name",
    "lab_id",
}
_MISSING_TEXT = {"", "na", "n/a", "n.a.", "nan", "nd", "n.d.", "-", "--", "null", "none"}
_MAX_CELLS = 50_000_000
# verde's spline solves a dense N x N system: beyond this many samples use IDW.
_SPLINE_MAX_SAMPLES = 2000


@dataclass(frozen=True)
class GriddingOptions:
    """Everything :func:`grid_file` needs besides the input and output paths.

    ``nodata`` are codes that mean "no value" in the sample table; ``below_detection`` says what
    happens to values reported below the detection limit (a negative number ``-d`` or a text
    ``<d``, both meaning "below d"): ``"half"`` replaces them with ``d / 2``, ``"nodata"`` drops
    them, ``"keep"`` keeps negative numbers as they are (for columns that can be negative) and
    still halves ``<d``. ``max_distance`` and ``cell`` default to multiples of the median
    nearest-neighbour spacing of the samples (stated in the notes).
    """

    x: str = "x"
    y: str = "y"
    crs: str | None = None
    columns: tuple[str, ...] | None = None
    cell: float | None = None
    like: Path | None = None
    to_crs: str | None = None
    method: GridMethod = "idw"
    max_distance: float | None = None
    nodata: tuple[float, ...] = ()
    below_detection: BelowDetection = "half"
    power: float = 2.0
    neighbours: int = 12
    folds: int = 5
    seed: int = 0


@dataclass
class SampleTable:
    """Samples in a projected CRS: coordinates and one float64 column per element (NaN = none)."""

    path: Path
    crs: CRS | None
    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.size)

    def spacing(self) -> float:
        """Median distance from a sample to its nearest neighbour (map units)."""
        tree = cKDTree(np.column_stack([self.x, self.y]))
        d, _ = tree.query(np.column_stack([self.x, self.y]), k=2)
        return float(np.median(np.asarray(d)[:, 1]))


@dataclass
class GriddingResult:
    """Gridded elements on ``grid``: ``layers[name]`` is ``(H, W)`` float32, NaN = nodata."""

    grid: Grid
    layers: dict[str, np.ndarray]
    cross_validation: pd.DataFrame
    max_distance: float
    method: GridMethod
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# reading


def read_samples(path: str | Path, options: GriddingOptions = GriddingOptions()) -> SampleTable:
    """Read a sample table (CSV with ``options.x``/``options.y`` and ``options.crs``, or a point
    vector file), apply the missing-value and detection-limit rules, reproject geographic
    coordinates and merge samples that share coordinates. Every rule applied is in ``notes``.
    """
    path = Path(path)
    gdf = read_points(path, x=options.x, y=options.y, crs=options.crs)
    if gdf.crs is None:
        raise InputError(
            path, "no CRS for the sample coordinates: give it with --crs (e.g. --crs EPSG:32645)"
        )
    notes: list[str] = []
    crs = CRS.from_user_input(gdf.crs.to_wkt())
    if options.to_crs is not None or crs.is_geographic:
        target = options.to_crs or _utm_of(gdf)
        try:
            target_crs = CRS.from_user_input(target)
        except CRSError as exc:
            raise InputError(path, f"bad --to-crs {target!r} ({exc})") from None
        if target_crs.is_geographic:
            raise InputError(path, f"--to-crs {target} is geographic: grids need map units")
        if options.to_crs is None:
            notes.append(
                f"samples are in geographic coordinates: gridded in {target} (the UTM zone of "
                "their centre; choose another with --to-crs)"
            )
        gdf = gdf.to_crs(target_crs.to_wkt())
        crs = target_crs
    x = gdf.geometry.x.to_numpy(dtype=float)
    y = gdf.geometry.y.to_numpy(dtype=float)
    frame = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name, "site_id"]))
    values = _element_columns(frame, path, options, notes)
    x, y, values = _merge_duplicates(x, y, values, notes)
    if len(x) < 3:
        if len(np.unique(np.column_stack([x, y]), axis=0)) == 1 and len(gdf) > 1:
            raise InputError(path, f"all {len(gdf)} samples lie at one location: nothing to grid")
        raise InputError(path, f"{len(x)} sample location(s): gridding needs at least 3")
    return SampleTable(path=path, crs=crs, x=x, y=y, values=values, notes=notes)


def _utm_of(gdf: object) -> str:
    """EPSG code of the UTM zone holding the centre of geographic points."""
    bounds = gdf.total_bounds  # type: ignore[attr-defined]
    lon = (bounds[0] + bounds[2]) / 2
    lat = (bounds[1] + bounds[3]) / 2
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _is_id_column(name: str, coords: set[str]) -> bool:
    low = name.strip().lower()
    return name in coords or low in _ID_NAMES or low.endswith("_id") or low in ("x", "y")


def _parse(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, below-limit mask) of a column, or None when it is not numeric.

    Numbers stay numbers; a text ``<d`` is "below detection limit d" (value d, mask true); empty
    cells and common "no value" words are NaN. Any other text makes the column non-numeric.
    """
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=float, na_value=np.nan), np.zeros(len(series), dtype=bool)
    values = np.full(len(series), np.nan)
    below = np.zeros(len(series), dtype=bool)
    for i, item in enumerate(series.tolist()):
        if item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        text = str(item).strip()
        if text.lower() in _MISSING_TEXT:
            continue
        if text.startswith("<"):
            text = text[1:].strip()
            below[i] = True
        try:
            values[i] = float(text)
        except ValueError:
            return None
    if not np.isfinite(values).any():
        return None
    return values, below


def _element_columns(
    frame: pd.DataFrame, path: Path, options: GriddingOptions, notes: list[str]
) -> dict[str, np.ndarray]:
    coords = {options.x, options.y}
    if options.columns:
        missing = [c for c in options.columns if c not in frame.columns]
        if missing:
            raise InputError(
                path,
                f"column(s) not found: {', '.join(missing)} "
                f"(columns: {', '.join(map(str, frame.columns))})",
            )
        wanted = list(options.columns)
    else:
        wanted = [str(c) for c in frame.columns if not _is_id_column(str(c), coords)]
    values: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    counts: dict[str, list[str]] = {rule: [] for rule in _RULE_TEXT}
    for name in wanted:
        parsed = _parse(frame[name])
        if parsed is None:
            if options.columns:
                raise InputError(path, f"column '{name}' is not numeric")
            skipped.append(name)
            continue
        values[name] = _apply_rules(name, *parsed, options, counts)
    how = {"half": "set to half the limit", "nodata": "dropped", "keep": "set to half the limit"}
    for rule, items in counts.items():
        if items:
            extra = f", {how[options.below_detection]}" if rule == "below" else ""
            notes.append(f"{_RULE_TEXT[rule]}{extra}: {', '.join(items)}")
    if skipped:
        notes.append(f"not numeric, not gridded: {', '.join(skipped)}")
    if not values:
        raise InputError(
            path,
            "no numeric element columns to grid "
            f"(columns: {', '.join(map(str, frame.columns))}); name them with --columns",
        )
    return values


def _apply_rules(
    name: str,
    raw: np.ndarray,
    below_text: np.ndarray,
    options: GriddingOptions,
    counts: dict[str, list[str]],
) -> np.ndarray:
    """Apply the missing-value and detection-limit rules to one column; ``counts[rule]``
    collects ``"<name> <count>"`` per rule for one summary line each."""
    values = raw.astype(float, copy=True)
    declared = np.zeros(values.shape, dtype=bool)
    for code in options.nodata:
        declared |= np.isclose(values, code, rtol=1e-7, atol=0) & ~below_text
    if declared.any():
        counts["nodata"].append(f"{name} {int(declared.sum())}")
    values[declared] = np.nan
    sentinel = np.abs(values) >= SENTINEL
    if sentinel.any():
        counts["sentinel"].append(f"{name} {int(sentinel.sum())}")
    values[sentinel] = np.nan
    below = below_text.copy()
    if options.below_detection != "keep":
        below |= values < 0
    if below.any():
        limits = np.abs(values[below])
        values[below] = np.nan if options.below_detection == "nodata" else limits / 2
        counts["below"].append(f"{name} {int(below.sum())} (<{_range_text(limits)})")
    return values


_RULE_TEXT = {
    "nodata": "values equal to --nodata read as no value",
    "sentinel": "values with |value| >= 1e30 (float sentinels) read as no value",
    "below": "values below detection",
}


def _range_text(values: np.ndarray) -> str:
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def _merge_duplicates(
    x: np.ndarray, y: np.ndarray, values: dict[str, np.ndarray], notes: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Average samples at identical coordinates (field or lab duplicates), with a note."""
    keys = np.column_stack([x, y])
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    if len(unique) == len(x):
        return x, y, values
    table = np.column_stack([values[name] for name in values])
    exact = pd.DataFrame(np.column_stack([keys, table])).duplicated().to_numpy()
    merged: dict[str, np.ndarray] = {}
    for j, name in enumerate(values):
        col = table[:, j]
        ok = np.isfinite(col)
        sums = np.bincount(inverse, weights=np.where(ok, col, 0.0), minlength=len(unique))
        n = np.bincount(inverse, weights=ok.astype(float), minlength=len(unique))
        with np.errstate(invalid="ignore", divide="ignore"):
            merged[name] = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    extra = int((counts - 1).sum())
    differing = extra - int(exact.sum())
    text = f"{extra} sample(s) share coordinates with another and were merged by averaging"
    parts = [f"{int(exact.sum())} exact duplicate(s)"]
    if differing:
        parts.append(f"{differing} with different values")
    notes.append(f"{text} ({', '.join(parts)})")
    return unique[:, 0].copy(), unique[:, 1].copy(), merged


# --------------------------------------------------------------------------------------------
# the target grid


def nice_cell(spacing: float) -> float:
    """Half the sample spacing rounded down to 1, 2 or 5 times a power of ten."""
    target = max(spacing / 2.0, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    for step in (5, 2, 1):
        if step * power <= target:
            return float(step * power)
    return float(power)


def target_grid(samples: SampleTable, options: GriddingOptions) -> tuple[Grid, list[str]]:
    """The grid to interpolate onto: ``options.like``'s grid, else one of ``options.cell`` (default
    :func:`nice_cell` of the sample spacing) covering the samples, snapped to multiples of the cell.
    """
    notes: list[str] = []
    if options.like is not None:
        grid = grid_of(options.like)
        if grid.crs is not None and samples.crs is not None and grid.crs != samples.crs:
            raise InputError(
                options.like,
                "its CRS differs from the samples' (reproject the samples with --to-crs "
                f"{grid.crs.to_string()})",
            )
        notes.append(f"grid of {options.like}: {grid.describe()}")
        return grid, notes
    cell = options.cell
    if cell is None:
        cell = nice_cell(samples.spacing())
        notes.append(
            f"cell size {cell:g} map units (half the median sample spacing, rounded; "
            "choose another with --cell)"
        )
    if not cell > 0 or not math.isfinite(cell):
        raise GkdcnError(f"--cell must be a positive number, not {cell}")
    left = math.floor(samples.x.min() / cell) * cell
    right = math.ceil(samples.x.max() / cell) * cell
    bottom = math.floor(samples.y.min() / cell) * cell
    top = math.ceil(samples.y.max() / cell) * cell
    width = max(1, round((right - left) / cell))
    height = max(1, round((top - bottom) / cell))
    if width * height > _MAX_CELLS:
        raise GkdcnError(
            f"a grid of {height} x {width} cells of {cell:g} is too large; give a larger --cell"
        )
    grid = Grid(
        crs=samples.crs,
        transform=Affine(cell, 0.0, left, 0.0, -cell, top),
        height=height,
        width=width,
    )
    notes.append(f"grid: {grid.describe()}")
    return grid, notes


# --------------------------------------------------------------------------------------------
# interpolation


Interpolator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def idw(
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    qx: np.ndarray,
    qy: np.ndarray,
    *,
    max_distance: float,
    neighbours: int = 12,
    power: float = 2.0,
    chunk: int = 500_000,
) -> np.ndarray:
    """Inverse-distance-weighted mean of the ``neighbours`` nearest samples within ``max_distance``
    of each query point (NaN where none is that close); a query on a sample takes its value."""
    tree = cKDTree(np.column_stack([xs, ys]))
    k = int(min(neighbours, len(xs)))
    padded = np.append(values, np.nan)  # index len(xs) = "no neighbour within the bound"
    out = np.full(qx.shape, np.nan)
    for start in range(0, qx.size, chunk):
        q = np.column_stack([qx[start : start + chunk], qy[start : start + chunk]])
        found = tree.query(q, k=k, distance_upper_bound=max_distance)
        d, idx = np.asarray(found[0]), np.asarray(found[1])
        if k == 1:
            d, idx = d[:, None], idx[:, None]
        near = np.isfinite(d)
        with np.errstate(divide="ignore"):
            w = np.where(near, 1.0 / np.maximum(d, 1e-12) ** power, 0.0)
        v = np.where(near, padded[idx], 0.0)
        with np.errstate(invalid="ignore"):
            est = (w * v).sum(axis=1) / w.sum(axis=1)
        hit = d[:, 0] <= 1e-9 * max(max_distance, 1.0)
        est[hit] = padded[idx[hit, 0]]
        est[~near[:, 0]] = np.nan
        out[start : start + chunk] = est
    return out


def _spline(
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    qx: np.ndarray,
    qy: np.ndarray,
    *,
    max_distance: float,
) -> np.ndarray:
    import verde as vd

    # A little damping keeps the dense system well conditioned on noisy survey values.
    spline = vd.Spline(damping=1e-6)
    spline.fit((xs, ys), values)
    est = np.asarray(spline.predict((qx, qy)), dtype=float)
    d, _ = cKDTree(np.column_stack([xs, ys])).query(np.column_stack([qx, qy]), k=1)
    est[d > max_distance] = np.nan
    return est


def _block_median(
    xs: np.ndarray, ys: np.ndarray, v: np.ndarray, spacing: float, name: str, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verde's usual first step: one (median) sample per block of one cell, so the spline's
    dense system has at most one unknown per cell."""
    import verde as vd

    (bx, by), bv = vd.BlockReduce(np.median, spacing=spacing).filter((xs, ys), v)
    bx, by, bv = (np.asarray(a, dtype=float).ravel() for a in (bx, by, bv))
    if bv.size < v.size:
        notes.append(f"{name}: {v.size} samples reduced to {bv.size} block medians for the spline")
    return bx, by, bv


def _interpolator(options: GriddingOptions, max_distance: float) -> Interpolator:
    if options.method == "idw":
        return lambda xs, ys, v, qx, qy: idw(
            xs, ys, v, qx, qy, max_distance=max_distance,
            neighbours=options.neighbours, power=options.power,
        )  # fmt: skip
    if options.method == "verde-spline":
        return lambda xs, ys, v, qx, qy: _spline(xs, ys, v, qx, qy, max_distance=max_distance)
    raise GkdcnError(f"--method must be one of {', '.join(GRID_METHODS)}, not {options.method!r}")


def cross_validate(
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    interpolate: Interpolator,
    folds: int,
    seed: int,
) -> dict[str, float]:
    """k-fold cross-validated error of ``interpolate`` on the samples (in the space given).

    Returns ``rmse``, ``mae``, ``r`` (Pearson correlation of prediction and sample), ``r2``
    (1 - SSE / SST) and ``scored`` (samples with a prediction: some lie too far from the rest).
    """
    n = len(values)
    folds = int(min(folds, n))
    order = np.random.default_rng(seed).permutation(n)
    pred = np.full(n, np.nan)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        if train.size == 0:
            continue
        pred[test] = interpolate(xs[train], ys[train], values[train], xs[test], ys[test])
    ok = np.isfinite(pred)
    result = {"rmse": math.nan, "mae": math.nan, "r": math.nan, "r2": math.nan, "scored": 0.0}
    if ok.sum() < 2:
        return result
    err = pred[ok] - values[ok]
    sst = float(((values[ok] - values[ok].mean()) ** 2).sum())
    result.update(
        rmse=float(np.sqrt((err**2).mean())),
        mae=float(np.abs(err).mean()),
        r=float(np.corrcoef(pred[ok], values[ok])[0, 1]) if np.std(pred[ok]) > 0 else math.nan,
        r2=1.0 - float((err**2).sum()) / sst if sst > 0 else math.nan,
        scored=float(ok.sum()),
    )
    return result


def grid_samples(
    samples: SampleTable,
    grid: Grid,
    options: GriddingOptions = GriddingOptions(),
    progress: Callable[[str], None] | None = None,
) -> GriddingResult:
    """Interpolate every element of ``samples`` onto ``grid`` (see the module docstring)."""
    notes: list[str] = []
    spacing = samples.spacing()
    max_distance = options.max_distance
    if max_distance is None:
        max_distance = 3.0 * max(spacing, min(grid.cell_size))
        notes.append(
            f"cells farther than {max_distance:.6g} map units from every sample are nodata "
            f"(3 x the median sample spacing of {spacing:.6g}; choose with --max-distance)"
        )
    elif not max_distance > 0:
        raise GkdcnError(f"--max-distance must be positive, not {max_distance}")
    interpolate = _interpolator(options, max_distance)
    rows, cols = np.indices(grid.shape)
    qx, qy = grid.xy(rows.ravel(), cols.ravel())
    layers: dict[str, np.ndarray] = {}
    records: list[dict[str, object]] = []
    for name, column in samples.values.items():
        ok = np.isfinite(column)
        xs, ys, v = samples.x[ok], samples.y[ok], column[ok]
        if v.size < 3:
            notes.append(f"{name}: only {v.size} sample(s) with a value; not gridded")
            continue
        log = bool((v > 0).all())
        space = np.log10(v) if log else v
        if options.method == "verde-spline":
            xs, ys, space = _block_median(xs, ys, space, min(grid.cell_size), name, notes)
            if space.size > _SPLINE_MAX_SAMPLES:
                raise GkdcnError(
                    f"{samples.path}: {space.size} cells with samples of {name} are too many "
                    f"for verde-spline (at most {_SPLINE_MAX_SAMPLES}); use --method idw"
                )
        if not log:
            notes.append(
                f"{name}: has zero or negative values, interpolated in linear space (if it is "
                "not a concentration, list it in [elements] auxiliary)"
            )
        if progress is not None:
            progress(name)
        est = interpolate(xs, ys, space, qx, qy).reshape(grid.shape)
        if log:
            with np.errstate(over="ignore"):
                est = 10.0**est
        layers[name] = est.astype(np.float32)
        cv = cross_validate(xs, ys, space, interpolate, options.folds, options.seed)
        records.append(
            {
                "element": name,
                "samples": int(v.size),
                "space": "log10" if log else "linear",
                "cv_rmse": cv["rmse"],
                "cv_mae": cv["mae"],
                "cv_r": cv["r"],
                "cv_r2": cv["r2"],
                "cv_scored": int(cv["scored"]),
                "valid_cells": int(np.isfinite(est).sum()),
            }
        )
    if not layers:
        raise InputError(samples.path, "no element has at least 3 samples with a value")
    table = pd.DataFrame.from_records(records)
    return GriddingResult(
        grid=grid,
        layers=layers,
        cross_validation=table,
        max_distance=float(max_distance),
        method=options.method,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# writing


def layer_file_name(name: str) -> str:
    """A file stem for a column name (letters, digits, ``_ . -``; others become ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("._") or "layer"
    return stem


def write_grids(
    result: GriddingResult,
    out_dir: str | Path,
    options: GriddingOptions = GriddingOptions(),
    overwrite: bool = False,
) -> list[Path]:
    """Write ``<element>.tif`` per layer and :data:`CV_FILE` into ``out_dir`` (built aside, then
    moved into place). The folder is directly an ``[elements]`` folder of a study config."""
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite, folder=True)
    stems: dict[str, str] = {}
    for name in result.layers:
        stem = layer_file_name(name)
        if stem in stems.values():
            raise GkdcnError(f"columns '{name}' and another both become layer file {stem}.tif")
        stems[name] = stem
    how = (
        f"idw, power {options.power:g}, {options.neighbours} neighbours"
        if result.method == "idw"
        else "verde.Spline"
    )
    written: list[Path] = []
    space = dict(
        zip(result.cross_validation["element"], result.cross_validation["space"], strict=True)
    )
    with atomic_dir(out_dir, overwrite=overwrite, command="grid") as tmp:
        for name, band in result.layers.items():
            write_geotiff(
                tmp / f"{stems[name]}.tif",
                band,
                result.grid,
                nodata=NODATA,
                descriptions=[stems[name]],
                tags=[
                    {
                        "source_column": name,
                        "gridding": f"{how}, in {space[name]} space, "
                        f"max distance {result.max_distance:.6g}",
                    }
                ],
            )
            written.append(out_dir / f"{stems[name]}.tif")
        result.cross_validation.to_csv(tmp / CV_FILE, index=False, float_format="%.6g")
        written.append(out_dir / CV_FILE)
    return written


def grid_file(
    samples_path: str | Path,
    out_dir: str | Path,
    options: GriddingOptions = GriddingOptions(),
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> GriddingResult:
    """Read, grid and write in one call (what ``gkdcn grid`` runs); notes go to ``log``."""
    say = log or (lambda _text: None)
    inputs = [samples_path, *([options.like] if options.like is not None else [])]
    check_writable(Path(out_dir), overwrite, inputs=inputs, folder=True)
    if options.method not in GRID_METHODS:
        raise GkdcnError(
            f"--method must be one of {', '.join(GRID_METHODS)}, not {options.method!r}"
        )
    if options.below_detection not in BELOW_DETECTION:
        raise GkdcnError(
            f"--below-detection must be one of {', '.join(BELOW_DETECTION)}, "
            f"not {options.below_detection!r}"
        )
    if options.like is not None and options.to_crs is None:
        like_crs = grid_of(options.like).crs
        if like_crs is not None:
            # Samples go onto the given grid: reproject them to its CRS (a no-op when they match).
            options = replace(options, to_crs=like_crs.to_wkt())
    samples = read_samples(samples_path, options)
    say(f"{len(samples)} sample locations, {len(samples.values)} element column(s)")
    for note in samples.notes:
        say(note)
    grid, notes = target_grid(samples, options)
    for note in notes:
        say(note)
    result = grid_samples(samples, grid, options)
    for note in result.notes:
        say(note)
    write_grids(result, out_dir, options, overwrite=overwrite)
    return result


def format_cross_validation(table: pd.DataFrame) -> str:
    """The cross-validation table as aligned text (worst-mapped elements last)."""
    frame = table.sort_values("cv_r2", ascending=False, na_position="last")
    lines = [f"{'element':<10} {'samples':>7} {'space':>6} {'cv r2':>7} {'cv rmse':>9}"]
    for row in frame.itertuples(index=False):
        lines.append(
            f"{row.element:<10} {row.samples:>7d} {row.space:>6} {row.cv_r2:>7.3f} "
            f"{row.cv_rmse:>9.4g}"
        )
    return "\n".join(lines)


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """``"Au,As, Cu"`` -> ``("Au", "As", "Cu")``; None or empty -> None (all numeric columns)."""
    if not text:
        return None
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    return names or None
