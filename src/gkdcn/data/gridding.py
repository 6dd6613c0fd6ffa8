"""Point geochemistry (sample tables) to element grids: one single-band GeoTIFF per element.

Survey geochemistry arrives as samples: rows with coordinates and dozens of element columns, with
codes for "not analysed" and "below detection", units in the column names and values compiled
from several surveys. :func:`read_samples` reads a CSV / TSV, an Excel workbook (through
``openpyxl``, the optional extra ``gkdcn[excel]``) or any point vector file, and states every rule
it applies:

- coordinates: the ``x`` / ``y`` columns matched ignoring case, in ``crs``; geographic ones are
  reprojected to the UTM zone of their centre (or ``to_crs``);
- columns: identifiers and codes are never gridded, judged by name and by content
  (:func:`identifier_reason`), nor are detection-limit columns (``Au_DL``, ``DL_Au``, ...),
  which give the censoring rule each sample's limit;
- censoring: :mod:`gkdcn.data.censoring` (zeros, negatives, ``<d``, ``BDL`` words, repeated-digit
  no-value codes such as ``-9999``; half the detection limit by default); zeros and negative
  numbers are below-detection codes only in a concentration (an element or oxide name, a unit
  in the name, or ``<d`` / ``BDL`` cells), elsewhere (``Eh_mV``, ``pH``) data; a column without
  a detected value is not gridded;
- units: :mod:`gkdcn.data.units` converts every column with a unit in its name to ppm and names
  its layer without the unit; columns measuring the same element (``Fe_ppm``, ``Fe2O3_pct``) give
  one layer, the one with the most detected values (the element on a tie);
- surveys: with ``survey_column``, a warning when the survey medians of a column differ by more
  than 10x, and levelling by ``level`` (:mod:`gkdcn.data.levelling`);
- samples that share coordinates are merged by averaging.

:func:`grid_samples` interpolates each element onto a grid (:func:`target_grid`: a cell size
snapped to round coordinates, or the grid of an existing raster), in log10 space for strictly
positive concentrations, and leaves cells farther than ``max_distance`` from any sample as
nodata; a grid with no cell near a sample is a one-line error. A k-fold cross-validated error
per element says which elements are mapped well. :func:`write_grids` writes a folder that is
directly an ``[elements]`` folder of a study config.

Two interpolators:

- ``"idw"`` (default): inverse-distance weighting of the nearest samples with SciPy's KD-tree;
  fast on any number of samples;
- ``"verde-spline"``: verde's biharmonic spline (``verde.Spline``), smoother, cubic in the number
  of samples (block-reduced to one sample per cell first when there are many).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from scipy.spatial import cKDTree

from gkdcn.data.censoring import (
    CENSOR_POLICIES,
    RULE_TEXT,
    Censored,
    CensorPolicy,
    ParsedCells,
    censor,
    parse_cells,
    substitution_text,
)
from gkdcn.data.levelling import (
    LEVEL_METHODS,
    MEDIAN_SPREAD,
    MIN_SURVEY_SAMPLES,
    LevelMethod,
    level,
    median_spread,
)
from gkdcn.data.units import is_analyte, parse_column
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import atomic_dir, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import grid_of, write_geotiff
from gkdcn.io.vectors import read_points

GridMethod = Literal["idw", "verde-spline"]
BelowDetection = CensorPolicy
GRID_METHODS: tuple[GridMethod, ...] = ("idw", "verde-spline")
BELOW_DETECTION: tuple[BelowDetection, ...] = CENSOR_POLICIES

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
_TABLE_SUFFIXES = (".csv", ".txt", ".tsv")
_EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")
# Detection-limit columns: "<column>_DL", "DL_<column>", ... (compared in lower case).
_DL_SUFFIXES = ("_dl", "_lod", "_ldl", "_detlim", "_det_limit", "_detection_limit", " dl", " lod")
_DL_PREFIXES = ("dl_", "lod_", "ldl_")
# Coordinate column pairs suggested when --x / --y name no column.
_COORDINATE_PAIRS = (
    (("lon", "long", "longitude"), ("lat", "latitude")),
    (("easting", "east", "e"), ("northing", "north", "n")),
)
_MAX_CELLS = 50_000_000
# A rule's line on screen names at most this many columns (the cross-validation table has all).
_LISTED = 12
# verde's spline solves a dense N x N system: beyond this many samples use IDW.
_SPLINE_MAX_SAMPLES = 2000


@dataclass(frozen=True)
class GriddingOptions:
    """Everything :func:`grid_file` needs besides the input and output paths.

    ``nodata`` are codes that mean "no value" in the sample table; ``below_detection`` is the
    censoring policy of :mod:`gkdcn.data.censoring` (``"half"``: below-detection values become
    half their limit; ``"nodata"``: dropped; ``"keep"``: negative numbers and zeros kept as
    they are, for columns that can be negative). ``survey_column`` names the column of survey
    codes and ``level`` the levelling of :mod:`gkdcn.data.levelling`. ``max_distance`` and
    ``cell`` default to multiples of the median nearest-neighbour spacing of the samples
    (stated in the notes).
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
    survey_column: str | None = None
    level: LevelMethod = "none"
    power: float = 2.0
    neighbours: int = 12
    folds: int = 5
    seed: int = 0


@dataclass
class ColumnInfo:
    """Where a layer came from: its ``source`` column, ``unit`` (``"ppm"`` or ``"as
    reported"``), how many samples were ``censored`` (below detection) and ``detected``, which
    samples were below detection (``below``), the survey levelling applied, and ``rules``: each
    censoring rule that touched the column with its count (``"negative 16 (<0.001); zero 15"``)."""

    source: str
    unit: str
    censored: int
    detected: int
    below: np.ndarray
    levelled: str = "none"
    rules: str = ""


@dataclass
class SampleTable:
    """Samples in a projected CRS: coordinates and one float64 column per element (NaN = none).

    ``notes`` state every rule applied, ``warnings`` the guesses to check; ``info`` describes
    each element column (:class:`ColumnInfo`)."""

    path: Path
    crs: CRS | None
    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, ColumnInfo] = field(default_factory=dict)

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
    """Read a sample table and apply every rule of the module docstring.

    In this order: coordinates (``options.x`` / ``options.y``, matched case-insensitively, in ``options.crs``;
    or a point vector file), reprojection of geographic coordinates, the columns to grid (by
    name and by content: identifiers, codes and detection-limit columns are never gridded),
    censoring (:mod:`gkdcn.data.censoring`), units to ppm and one layer per element
    (:mod:`gkdcn.data.units`), survey levelling (:mod:`gkdcn.data.levelling`) and the merging of
    samples that share coordinates. Every rule applied is a line of ``notes``; guesses the user
    should check are lines of ``warnings``.
    """
    path = Path(path)
    notes: list[str] = []
    warns: list[str] = []
    frame, x, y, crs = _read_locations(path, options)
    places = len(np.unique(np.column_stack([x, y]), axis=0))
    if places < 3:
        if places == 1 and len(frame) > 1:
            raise InputError(path, f"all {len(frame)} samples lie at one location: nothing to grid")
        raise InputError(path, f"{places} sample location(s): gridding needs at least 3")
    if options.to_crs is not None or crs.is_geographic:
        target = options.to_crs or _utm_of(x, y)
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
        x, y = _project(x, y, crs, target_crs, options.like or path)
        crs = target_crs
    surveys, survey_name = _survey_codes(frame, path, options)
    columns, limit_columns = _columns_to_grid(frame, path, options, survey_name, notes)
    values, info = _element_columns(frame, columns, limit_columns, path, options, notes, warns)
    if surveys is not None and survey_name is not None:
        _level_surveys(values, info, surveys, survey_name, options, notes, warns)
    x, y, values = _merge_duplicates(x, y, values, notes)
    return SampleTable(
        path=path, crs=crs, x=x, y=y, values=values, notes=notes, warnings=warns, info=info
    )


def _utm_of(x: np.ndarray, y: np.ndarray) -> str:
    """EPSG code of the UTM zone holding the centre of geographic points."""
    lon = (float(np.min(x)) + float(np.max(x))) / 2
    lat = (float(np.min(y)) + float(np.max(y))) / 2
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _project(
    x: np.ndarray, y: np.ndarray, source: CRS, target: CRS, named: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``target``; samples that do not project (outside its area) are an error
    naming ``named`` (the ``--like`` raster whose CRS it is, or the samples)."""
    from pyproj import Transformer

    transformer = Transformer.from_crs(source.to_wkt(), target.to_wkt(), always_xy=True)
    px, py = (np.asarray(a, dtype=float) for a in transformer.transform(x, y))
    bad = ~(np.isfinite(px) & np.isfinite(py))
    if bad.any():
        raise InputError(
            named,
            f"{int(bad.sum())} of {bad.size} samples cannot be projected to "
            f"{target.to_string()} (they lie outside its area of use: is it the right CRS?)",
        )
    return px, py


# --------------------------------------------------------------------------------------------
# the table and its coordinates


def read_table(path: Path) -> pd.DataFrame:
    """A CSV / TSV / TXT (delimiter sniffed, Excel's UTF-8 byte-order mark dropped) or an Excel
    workbook (first sheet; needs ``openpyxl``, the optional extra ``gkdcn[excel]``)."""
    if not path.exists():
        raise InputError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in _EXCEL_SUFFIXES:
        engine = "xlrd" if suffix == ".xls" else "openpyxl"
        if importlib.util.find_spec(engine) is None:
            raise InputError(
                path,
                f"reading {suffix} workbooks needs the package {engine} (pip install {engine}"
                + (", or gkdcn[excel]" if engine == "openpyxl" else "")
                + "), or save the sheet as CSV",
            )
        try:
            frame = pd.read_excel(path, sheet_name=0, engine=cast("Any", engine))
        except Exception as exc:  # openpyxl / zipfile raise many types; all mean "cannot read"
            text = str(exc).strip().splitlines()
            raise InputError(
                path, f"cannot read as a workbook ({text[0] if text else exc})"
            ) from None
    else:
        sep = "\t" if suffix == ".tsv" else None
        try:
            frame = pd.read_csv(path, sep=sep, engine="python", encoding="utf-8-sig")
        except (pd.errors.EmptyDataError, csv.Error):
            if path.stat().st_size == 0 or not path.read_bytes().strip():
                raise InputError(path, "no samples in the file (it is empty)") from None
            raise InputError(path, "cannot read as CSV (no delimiter found)") from None
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
            text = str(exc).strip().splitlines()
            raise InputError(path, f"cannot read as CSV ({text[0] if text else exc})") from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise InputError(path, "no samples in the file (header only)")
    return frame


def find_column(columns: Sequence[str], name: str) -> str | None:
    """The column called ``name``: exactly, else the one column equal to it ignoring case and
    surrounding spaces; None when there is none (or several that differ only in case)."""
    if name in columns:
        return name
    matches = [c for c in columns if c.strip().lower() == name.strip().lower()]
    return matches[0] if len(matches) == 1 else None


def _coordinate_hint(columns: Sequence[str]) -> str:
    lows = {c.strip().lower(): c for c in columns}
    for xs, ys in _COORDINATE_PAIRS:
        cx = next((lows[n] for n in xs if n in lows), None)
        cy = next((lows[n] for n in ys if n in lows), None)
        if cx is not None and cy is not None:
            return f" (perhaps --x {cx} --y {cy})"
    return ""


def _read_locations(
    path: Path, options: GriddingOptions
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, CRS]:
    """The attribute table (coordinates dropped), the coordinates and their CRS."""
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES + _EXCEL_SUFFIXES:
        try:
            gdf = read_points(path, crs=options.crs)
        except InputError as exc:
            if exc.problem.startswith("has no CRS"):  # worded for a config; grid has a flag
                raise InputError(path, "has no CRS: give it with --crs") from None
            raise
        x = gdf.geometry.x.to_numpy(dtype=float)
        y = gdf.geometry.y.to_numpy(dtype=float)
        frame = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name, "site_id"]))
        frame.columns = [str(c) for c in frame.columns]
        return frame, x, y, CRS.from_user_input(gdf.crs.to_wkt())
    frame = read_table(path)
    names = list(frame.columns)
    found = {flag: find_column(names, name) for flag, name in (("x", options.x), ("y", options.y))}
    missing = [f"'{getattr(options, flag)}'" for flag, col in found.items() if col is None]
    if missing:
        raise InputError(
            path,
            f"coordinate column(s) {', '.join(missing)} not found (columns: {', '.join(names)}); "
            f"name them with --x and --y{_coordinate_hint(names)}",
        )
    xcol, ycol = str(found["x"]), str(found["y"])
    coords = []
    for col in (xcol, ycol):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad)[:5])
            raise InputError(path, f"column '{col}' is not a number in line(s) {rows}")
        coords.append(values)
    x, y = coords
    if options.crs is None:
        degrees = np.abs(x).max() <= 360 and np.abs(y).max() <= 90
        hint = (
            "the values look like longitude/latitude in degrees: --crs EPSG:4326"
            if degrees
            else "e.g. --crs EPSG:32750 for UTM zone 50 south"
        )
        raise InputError(path, f"no CRS for the sample coordinates: give it with --crs ({hint})")
    try:
        crs = CRS.from_user_input(options.crs)
    except CRSError as exc:
        raise InputError(path, f"bad --crs {options.crs!r} ({exc})") from None
    if crs.is_geographic:
        if np.abs(y).max() > 90:
            swapped = " (are --x and --y swapped?)" if np.abs(x).max() <= 90 else ""
            raise InputError(
                path, f"column '{ycol}' holds values beyond ±90, not latitudes{swapped}"
            )
        if np.abs(x).max() > 360:
            raise InputError(path, f"column '{xcol}' holds values beyond ±360, not longitudes")
    return frame.drop(columns=[xcol, ycol]), x, y, crs


def _survey_codes(
    frame: pd.DataFrame, path: Path, options: GriddingOptions
) -> tuple[np.ndarray | None, str | None]:
    if options.level not in LEVEL_METHODS:
        raise GkdcnError(
            f"--level must be one of {', '.join(LEVEL_METHODS)}, not {options.level!r}"
        )
    if options.survey_column is None:
        if options.level != "none":
            raise GkdcnError(f"--level {options.level} needs --survey-column")
        return None, None
    name = find_column(list(frame.columns), options.survey_column)
    if name is None:
        raise InputError(
            path,
            f"--survey-column '{options.survey_column}' not found "
            f"(columns: {', '.join(frame.columns)})",
        )
    codes = frame[name].astype(object).where(frame[name].notna(), "(none)")
    return np.asarray([str(c) for c in codes], dtype=object), name


# --------------------------------------------------------------------------------------------
# which columns: by name and by content


def _limit_columns(columns: Sequence[str]) -> dict[str, str]:
    """Detection-limit columns (``Au_DL``, ``Au_ppm_LOD``, ``DL_Au``) by the column they serve."""
    out: dict[str, str] = {}
    lows = {c.strip().lower(): c for c in columns}
    labels = {parse_column(c).label.lower(): c for c in columns}
    for col in columns:
        low = col.strip().lower()
        stem = None
        for suffix in _DL_SUFFIXES:
            if low.endswith(suffix) and len(low) > len(suffix):
                stem = low[: -len(suffix)].rstrip(" _-")
        for prefix in _DL_PREFIXES:
            if low.startswith(prefix) and len(low) > len(prefix):
                stem = low[len(prefix) :].lstrip(" _-")
        if stem is None:
            continue
        served = lows.get(stem) or labels.get(stem) or labels.get(parse_column(stem).label.lower())
        if served is not None and served != col:
            out[served] = col
    return out


def identifier_reason(name: str, series: pd.Series) -> str | None:
    """Why a column is an identifier or code, never an element (None when it may be one).

    By name: the usual identifier names (``id``, ``sample_id``, ``objectid``, ``*_id``, ...). By
    content, for a column whose name is not an element, oxide or concentration unit (those are
    always measurements): integers that are unique or nearly so (>= 90 % distinct: sample or
    object numbers), integers in increasing or decreasing order (row numbers), or few distinct
    integers (at most 20, and at most a fifth of the samples: survey, report or batch codes).
    """
    low = name.strip().lower()
    if low in _ID_NAMES or low.endswith("_id") or low.rstrip("_xy") in _ID_NAMES:
        return "identifier name"
    if is_analyte(name):
        return None
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = numbers[np.isfinite(numbers)]
    if finite.size < 5 or finite.size < 0.5 * len(series):
        return None
    if not (finite == np.round(finite)).all():
        return None
    distinct = np.unique(finite).size
    if distinct < 2:
        return None
    if distinct >= 0.9 * finite.size:
        return "unique integers"
    steps = np.diff(finite)
    if (steps > 0).all() or (steps < 0).all():
        return "monotonic integers"
    if distinct <= 20 and distinct <= 0.2 * finite.size:
        return f"{distinct} distinct integers, a code"
    return None


def _columns_to_grid(
    frame: pd.DataFrame,
    path: Path,
    options: GriddingOptions,
    survey: str | None,
    notes: list[str],
) -> tuple[list[str], dict[str, str]]:
    names = list(frame.columns)
    limits = _limit_columns(names)
    if options.columns:
        chosen = {c: find_column(names, c) for c in options.columns}
        missing = [c for c, found in chosen.items() if found is None]
        if missing:
            raise InputError(
                path, f"column(s) not found: {', '.join(missing)} (columns: {', '.join(names)})"
            )
        return [str(found) for found in chosen.values()], limits
    skipped: dict[str, str] = {}
    wanted: list[str] = []
    for name in names:
        if name == survey:
            continue
        if name in limits.values():
            skipped[name] = "detection limits"
            continue
        reason = identifier_reason(name, frame[name])
        if reason is not None:
            skipped[name] = reason
            continue
        wanted.append(name)
    if limits:
        pairs = ", ".join(f"{dl} for {col}" for col, dl in limits.items())
        notes.append(f"detection-limit columns (never gridded): {pairs}")
    ids = {n: r for n, r in skipped.items() if r != "detection limits"}
    if ids:
        notes.append(
            "identifier and code columns, not gridded (judged by name or content; grid one "
            "anyway with --columns): " + ", ".join(f"{n} ({r})" for n, r in ids.items())
        )
    if survey is None:
        codes = [n for n, r in ids.items() if r.endswith("a code")]
        if codes:
            notes.append(
                f"{codes[0]} looks like a survey code: level values by survey with "
                f"--survey-column {codes[0]} --level quantile (or robust-z)"
            )
    return wanted, limits


# --------------------------------------------------------------------------------------------
# values: censoring, units, one layer per element


def _cells(series: pd.Series) -> ParsedCells | None:
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        none = np.zeros(values.size, dtype=bool)
        return ParsedCells(values, none, none, none)
    return parse_cells(series.tolist())


def _element_columns(
    frame: pd.DataFrame,
    columns: list[str],
    limit_columns: dict[str, str],
    path: Path,
    options: GriddingOptions,
    notes: list[str],
    warns: list[str],
) -> tuple[dict[str, np.ndarray], dict[str, ColumnInfo]]:
    """Censor, convert and choose the element columns; ``(values, info)`` by layer name."""
    explicit = bool(options.columns)
    per_rule: dict[str, list[str]] = {rule: [] for rule in RULE_TEXT}
    skipped: list[str] = []
    unknown: dict[str, int] = {}
    results: dict[str, Censored] = {}
    rules: dict[str, list[str]] = {}
    measured: list[str] = []
    for name in columns:
        cells = _cells(frame[name])
        if cells is None:
            if explicit:
                raise InputError(path, f"column '{name}' is not numeric")
            skipped.append(name)
            continue
        limits = None
        if name in limit_columns:
            limits = pd.to_numeric(frame[limit_columns[name]], errors="coerce").to_numpy(
                dtype=float, na_value=np.nan
            )
        # Zeros and negatives mean "below detection" only in a concentration: an element, an
        # oxide, a column with a unit, or one whose cells say "<d" / "BDL" themselves.
        concentration = (
            is_analyte(name) or bool(cells.less_than.any()) or bool(cells.below_text.any())
        )
        if not concentration and bool((cells.values <= 0).any()):
            measured.append(name)
        result = censor(
            cells.values, less_than=cells.less_than, below_text=cells.below_text,
            greater=cells.greater, limits=limits, nodata=options.nodata,
            policy=options.below_detection if concentration else "keep",
        )  # fmt: skip
        if cells.missing_text:
            result.counts["missing_text"] = cells.missing_text
        if cells.unknown_text:
            result.counts["unknown_text"] = sum(cells.unknown_text.values())
            for text, n in cells.unknown_text.items():
                unknown[text] = unknown.get(text, 0) + n
        results[name] = result
        for rule, n in result.counts.items():
            item = f"{n}"
            if rule in result.rule_limits:
                item += f" (<{_range_text(np.array(result.rule_limits[rule]))})"
            if rule == "code":
                item += f" ({', '.join(f'{c:g}' for c in result.codes)})"
            per_rule[rule].append(f"{name} {item}")
            rules.setdefault(name, []).append(f"{rule} {item}")
    for rule, items in per_rule.items():
        if not items:
            continue
        line = f"{RULE_TEXT[rule]}: {_listed(items)}"
        if rule == "unknown_text":
            words = ", ".join(f"'{t}' x{n}" for t, n in list(unknown.items())[:8])
            line = f"{RULE_TEXT[rule]} ({words}): {_listed(items)}"
        (warns if rule == "code" else notes).append(line)
    if any(r.censored for r in results.values()):
        notes.append(substitution_text(options.below_detection))
    if measured:
        notes.append(
            "not an element, oxide or unit in the name, so zeros and negative values are kept "
            f"as data (add a unit such as _ppm to censor them): {_listed(measured)}"
        )
    if skipped:
        notes.append(f"not numeric, not gridded: {', '.join(skipped)}")
    if not results:
        raise InputError(
            path,
            "no numeric element columns to grid "
            f"(columns: {', '.join(map(str, frame.columns))}); name them with --columns",
        )
    values, info = _choose_layers(results, path, explicit, notes, warns)
    for about in info.values():
        about.rules = "; ".join(rules.get(about.source, []))
    return values, info


def _choose_layers(
    results: dict[str, Censored], path: Path, explicit: bool, notes: list[str], warns: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, ColumnInfo]]:
    """Drop columns with nothing to grid, convert units to ppm, keep one layer per element."""
    empty = [n for n, r in results.items() if not np.isfinite(r.values).any() and r.censored == 0]
    all_below = [n for n, r in results.items() if r.detected == 0 and r.censored > 0]
    few = [n for n, r in results.items() if 0 < r.detected < 3 and n not in all_below]
    constant = [
        n
        for n, r in results.items()
        if r.detected >= 3 and np.unique(r.values[np.isfinite(r.values)]).size == 1
    ]
    if empty:
        notes.append(f"no value in any sample, not gridded: {', '.join(empty)}")
    if all_below:
        items = [
            f"{n} ({results[n].censored}"
            + (f", <{_range_text(np.array(results[n].limits))}" if results[n].limits else "")
            + ")"
            for n in all_below
        ]
        warns.append(
            "every value below detection, not gridded (a constant layer carries nothing): "
            + ", ".join(items)
        )
    if few:
        notes.append(f"fewer than 3 detected values, not gridded: {', '.join(few)}")
    if constant:
        notes.append(f"one value in every sample, not gridded: {', '.join(constant)}")
    dropped = set(empty) | set(all_below) | set(few) | set(constant)
    kept = {n: r for n, r in results.items() if n not in dropped}
    if not kept:
        raise InputError(
            path,
            "no column has detected values to grid"
            + (f" (every value below detection: {', '.join(all_below)})" if all_below else "")
            + ("" if explicit else "; name the element columns with --columns"),
        )
    analytes = {n: parse_column(n) for n in kept}
    groups: dict[str, list[str]] = {}
    for n, a in analytes.items():
        groups.setdefault(a.group, []).append(n)
    duplicates: list[str] = []
    for group, members in groups.items():
        if len(members) < 2:
            continue
        # Most detected values first; on a tie the element itself, then the column order.
        ranked = sorted(members, key=lambda n: (-kept[n].detected, analytes[n].oxide))
        if explicit:
            duplicates.append(f"{group}: {', '.join(members)} all kept (named in --columns)")
            continue
        duplicates.append(
            f"{group}: {ranked[0]} ({kept[ranked[0]].detected} detected) kept, "
            + ", ".join(f"{n} ({kept[n].detected})" for n in ranked[1:])
            + " dropped"
        )
        for n in ranked[1:]:
            del kept[n]
    if duplicates:
        notes.append(
            "columns measuring the same element (element, oxides, other units), one layer each: "
            "the one with the most detected values, the element on a tie: " + "; ".join(duplicates)
        )
    values: dict[str, np.ndarray] = {}
    info: dict[str, ColumnInfo] = {}
    converted: list[str] = []
    as_reported: list[str] = []
    for n, result in kept.items():
        a = analytes[n]
        layer = n
        data = result.values
        if a.factor is not None:
            layer = a.element if a.element is not None and not a.oxide else a.label
            data = data * a.factor
            if a.factor != 1.0:
                converted.append(f"{n} x {a.factor:g}")
        else:
            as_reported.append(n)
        if layer in values:  # a label taken by another column (no unit): keep the name
            layer = n
        values[layer] = data
        info[layer] = ColumnInfo(
            source=n,
            unit="ppm" if a.factor is not None else "as reported",
            censored=result.censored,
            detected=result.detected,
            below=result.below.copy(),
        )
    renamed = [f"{i.source} -> {layer}" for layer, i in info.items() if layer != i.source]
    if renamed or converted:
        text = "units from the column names, every layer in ppm"
        if converted:
            text += f" (converted: {', '.join(converted)})"
        if renamed:
            text += f"; layers named without the unit: {', '.join(renamed)}"
        notes.append(text)
        if any(str(analytes[i.source].unit).lower() == "ppt" for i in info.values()):
            notes.append("ppt read as parts per trillion (x 1e-6 to ppm)")
    if as_reported and (renamed or converted):
        notes.append(f"no unit in the column name, values as reported: {', '.join(as_reported)}")
    return values, info


def _level_surveys(
    values: dict[str, np.ndarray],
    info: dict[str, ColumnInfo],
    surveys: np.ndarray,
    survey_name: str,
    options: GriddingOptions,
    notes: list[str],
    warns: list[str],
) -> None:
    """Warn about survey medians more than 10x apart, and level every column (in place)."""
    spread: list[str] = []
    for layer, column in values.items():
        detected = np.where(info[layer].below, np.nan, column)
        found = median_spread(detected, surveys)
        if found is not None and found.ratio > MEDIAN_SPREAD:
            spread.append(
                f"{layer} {found.ratio:.0f}x ({found.low[0]}: {found.low[1]:.3g}, "
                f"{found.high[0]}: {found.high[1]:.3g})"
            )
    n_surveys = len(set(surveys.tolist()))
    if spread:
        advice = (
            "; level them with --level quantile or robust-z"
            if options.level == "none"
            else f"; levelled (--level {options.level})"
        )
        warns.append(
            f"survey medians ({survey_name}) differ by more than {MEDIAN_SPREAD:g}x in "
            f"{len(spread)} column(s): {', '.join(spread)}{advice}"
        )
    if options.level == "none":
        notes.append(f"surveys ({survey_name}, {n_surveys} codes) not levelled (--level none)")
        return
    small: set[str] = set()
    flat: set[str] = set()
    for layer, column in values.items():
        result = level(column, surveys, options.level)
        values[layer] = result.values
        info[layer].levelled = options.level
        small.update(result.too_small)
        flat.update(f"{layer} {code}" for code in result.shift_only)
    how = (
        "quantile matching to the pooled distribution of all surveys"
        if options.level == "quantile"
        else "robust z-score (log10 median and MAD) put back on the pooled median and MAD"
    )
    notes.append(f"levelled by survey ({survey_name}, {n_surveys} codes): {how}")
    if small:
        notes.append(
            f"surveys with fewer than {MIN_SURVEY_SAMPLES} values of a column kept as they are: "
            + ", ".join(sorted(small))
        )
    if flat:
        notes.append(
            f"MAD 0 (mostly one value): only shifted to the pooled median: {', '.join(sorted(flat))}"
        )


def _listed(items: Sequence[str]) -> str:
    """Items joined by commas, at most :data:`_LISTED` of them (then how many more): a rule's
    line stays readable; the cross-validation table names every column."""
    if len(items) <= _LISTED:
        return ", ".join(items)
    return ", ".join([*items[:_LISTED], f"and {len(items) - _LISTED} more"])


def _range_text(values: np.ndarray) -> str:
    low, high = f"{float(np.nanmin(values)):g}", f"{float(np.nanmax(values)):g}"
    return low if low == high else f"{low}-{high}"


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
        raise InputError(samples.path, f"--cell must be a positive number, not {cell}")
    left = math.floor(samples.x.min() / cell) * cell
    right = math.ceil(samples.x.max() / cell) * cell
    bottom = math.floor(samples.y.min() / cell) * cell
    top = math.ceil(samples.y.max() / cell) * cell
    width = max(1, round((right - left) / cell))
    height = max(1, round((top - bottom) / cell))
    if width * height > _MAX_CELLS:
        raise InputError(
            samples.path,
            f"a grid of {height} x {width} cells of {cell:g} is too large; give a larger --cell",
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
    elif max_distance < 0.5 * min(grid.cell_size):
        raise InputError(
            samples.path,
            f"--max-distance {max_distance:g} is less than half the cell size "
            f"{min(grid.cell_size):g}: most cells holding a sample would be nodata (the median "
            f"sample spacing is {spacing:.6g}; give at least {0.5 * min(grid.cell_size):g})",
        )
    interpolate = _interpolator(options, max_distance)
    rows, cols = np.indices(grid.shape)
    qx, qy = grid.xy(rows.ravel(), cols.ravel())
    _check_coverage(samples, grid, qx, qy, max_distance, options)
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
        if not np.isfinite(est).any():
            notes.append(f"{name}: no cell within the max distance of its samples; not gridded")
            continue
        layers[name] = est.astype(np.float32)
        cv = cross_validate(xs, ys, space, interpolate, options.folds, options.seed)
        about = samples.info.get(name)
        records.append(
            {
                "element": name,
                "source_column": about.source if about else name,
                "unit": about.unit if about else "as reported",
                "values": about.censored + about.detected if about else int(v.size),
                "censored": about.censored if about else 0,
                "censoring": about.rules if about else "",
                "levelled": about.levelled if about else "none",
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


def _check_coverage(
    samples: SampleTable,
    grid: Grid,
    qx: np.ndarray,
    qy: np.ndarray,
    max_distance: float,
    options: GriddingOptions,
) -> None:
    """A one-line error when no cell of ``grid`` lies within ``max_distance`` of a sample (a
    ``--like`` raster of another area, or a distance far below the spacing)."""
    tree = cKDTree(np.column_stack([samples.x, samples.y]))
    d, _ = tree.query(np.column_stack([qx, qy]), k=1, distance_upper_bound=max_distance)
    if np.isfinite(d).any():
        return
    left, bottom, right, top = grid.bounds
    span = (
        f"the samples span x {samples.x.min():.6g}..{samples.x.max():.6g}, "
        f"y {samples.y.min():.6g}..{samples.y.max():.6g}; the grid x {left:.6g}..{right:.6g}, "
        f"y {bottom:.6g}..{top:.6g}"
    )
    if options.like is not None:
        raise InputError(
            options.like,
            f"no cell of its grid lies within {max_distance:.6g} map units of a sample ({span}): "
            "is it a raster of another area, or in another CRS?",
        )
    raise InputError(
        samples.path,
        f"no grid cell lies within --max-distance {max_distance:.6g} of a sample ({span})",
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
    rows = result.cross_validation.set_index("element")
    space = rows["space"].to_dict()
    empty = [name for name, band in result.layers.items() if not np.isfinite(band).any()]
    if empty:
        raise GkdcnError(f"{out_dir}: no valid cell in layer(s) {', '.join(empty)}; not written")
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
                        "source_column": str(rows["source_column"].get(name, name)),
                        "unit": str(rows["unit"].get(name, "as reported")),
                        "censored_samples": str(rows["censored"].get(name, 0)),
                        "levelled": str(rows["levelled"].get(name, "none")),
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
    warn: Callable[[str], None] | None = None,
) -> GriddingResult:
    """Read, grid and write in one call (what ``gkdcn grid`` runs); notes go to ``log``,
    guesses to check (a no-value code found, surveys far apart) to ``warn`` (default ``log``)."""
    say = log or (lambda _text: None)
    caution = warn or say
    inputs = [Path(samples_path)] + ([Path(options.like)] if options.like is not None else [])
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
        if like_crs is not None and like_crs.is_geographic:
            raise InputError(
                options.like,
                "its grid is in degrees (a geographic CRS): grids need map units; give a raster "
                "in a projected CRS, or --to-crs",
            )
        if like_crs is not None:
            # Samples go onto the given grid: reproject them to its CRS (a no-op when they match).
            options = replace(options, to_crs=like_crs.to_wkt())
    samples = read_samples(samples_path, options)
    say(f"{len(samples)} sample locations, {len(samples.values)} element column(s)")
    for note in samples.notes:
        say(note)
    for text in samples.warnings:
        caution(f"{samples.path}: {text}")
    grid, notes = target_grid(samples, options)
    for note in notes:
        say(note)
    result = grid_samples(samples, grid, options)
    for note in result.notes:
        say(note)
    write_grids(result, out_dir, options, overwrite=overwrite)
    return result


def format_cross_validation(table: pd.DataFrame) -> str:
    """The cross-validation table as aligned text (worst-mapped elements last): per element its
    source column, unit, censored values out of the values before merging duplicates, samples
    (locations) gridded, the space interpolated in, the cross-validated R² and RMSE, and the
    censoring rules that touched its column (their counts are in :data:`CV_FILE`)."""
    frame = table.sort_values("cv_r2", ascending=False, na_position="last")
    lines = [
        f"{'element':<10} {'source':<12} {'unit':>11} {'censored':>11} {'samples':>7} "
        f"{'space':>6} {'cv r2':>7} {'cv rmse':>9}  rules"
    ]
    for row in frame.itertuples(index=False):
        censored = f"{row.censored}/{row.values}"
        text = str(row.censoring) if isinstance(row.censoring, str) else ""
        rules = "+".join(part.split()[0] for part in text.split("; ") if part)
        lines.append(
            f"{row.element:<10} {row.source_column:<12} {row.unit:>11} {censored:>11} "
            f"{row.samples:>7d} {row.space:>6} {row.cv_r2:>7.3f} "
            f"{row.cv_rmse:>9.4g}  {rules or '-'}"
        )
    return "\n".join(lines)


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """``"Au,As, Cu"`` -> ``("Au", "As", "Cu")``; None or empty -> None (all numeric columns)."""
    if not text:
        return None
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    return names or None
