"""Points (deposit / non-deposit sites) and lines (ore-controlling faults) from CSV or vector files."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj.exceptions import CRSError

from gkdcn.errors import InputError
from gkdcn.io.atomic import file_mode

CrsLike = Any  # anything geopandas accepts as a CRS: "EPSG:32645", a rasterio/pyproj CRS, WKT

_CSV_SUFFIXES = (".csv", ".txt", ".tsv")
_LINE_TYPES = ("LineString", "MultiLineString")


def _crs_text(crs: CrsLike) -> Any:
    # rasterio CRS objects are not pyproj ones; WKT is understood by both.
    return crs.to_wkt() if hasattr(crs, "to_wkt") and not isinstance(crs, str) else crs


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio/fiona raise many types; all mean "cannot read"
        text = str(exc).strip().splitlines()
        raise InputError(
            path, f"cannot read as a vector file ({text[0] if text else exc})"
        ) from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf._geometry_column_name not in gdf:
        # a table read as a vector file (a lone .dbf, a CSV given where lines are expected)
        raise InputError(
            path, "holds a table without geometry (give a vector file with points or lines)"
        )
    return gdf


def _to_crs(gdf: gpd.GeoDataFrame, target_crs: CrsLike | None, path: Path) -> gpd.GeoDataFrame:
    if target_crs is None:
        return gdf
    try:
        return gdf.to_crs(_crs_text(target_crs))
    except (CRSError, ValueError) as exc:
        raise InputError(path, f"cannot reproject to the element grid's CRS ({exc})") from None


def _site_ids(frame: pd.DataFrame, id: str | None, path: Path) -> np.ndarray:
    if id is None:
        # 1-based row numbers: what a user sees counting rows in a spreadsheet or attribute table.
        return np.array([str(i + 1) for i in range(len(frame))], dtype=object)
    if id not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise InputError(path, f"id column '{id}' not found (columns: {columns})")
    values = frame[id]
    if values.isna().any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(values.isna().to_numpy())[:5])
        raise InputError(path, f"id column '{id}' is empty in row(s) {rows}")
    ids = values.astype(str).to_numpy(dtype=object)
    dupes = sorted(name for name, n in Counter(ids.tolist()).items() if n > 1)
    if dupes:
        raise InputError(path, f"site ids repeat in column '{id}': {', '.join(dupes[:5])}")
    return ids


def read_points(
    path: str | Path,
    *,
    x: str = "x",
    y: str = "y",
    crs: CrsLike | None = None,
    id: str | None = None,
    target_crs: CrsLike | None = None,
) -> gpd.GeoDataFrame:
    """Read sites as points with a ``site_id`` column, reprojected to ``target_crs`` when given.

    A CSV needs numeric columns ``x`` and ``y`` in ``crs`` (default ``target_crs``); any other file
    is read with geopandas and must hold points and a CRS (or ``crs`` must be given).
    """
    path = Path(path)
    if path.suffix.lower() in _CSV_SUFFIXES:
        gdf = _read_csv_points(path, x, y, crs if crs is not None else target_crs)
    else:
        gdf = _read_vector(path)
        if len(gdf) == 0:
            raise InputError(path, "no points in the file")
        geoms = gdf.geometry
        missing = geoms.isna() | geoms.is_empty
        if missing.any():
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(missing.to_numpy())[:5])
            raise InputError(path, f"feature(s) {rows} have no geometry")
        kinds = sorted(set(geoms.geom_type) - {"Point"})
        if kinds:
            raise InputError(path, f"expected points, found {', '.join(kinds)}")
        if gdf.crs is None:
            if crs is None:
                raise InputError(path, "has no CRS: give the sites' 'crs' in the config")
            gdf = gdf.set_crs(_crs_text(crs))
        elif crs is not None:
            # An explicit crs overrides a wrong header, as a user would in QGIS ("Set CRS").
            gdf = gdf.set_crs(_crs_text(crs), allow_override=True)
    gdf = gdf.copy()
    gdf["site_id"] = _site_ids(gdf, id, path)
    if gdf.crs is not None:
        gdf = _to_crs(gdf, target_crs, path)
    return gdf


def _read_csv_points(path: Path, x: str, y: str, crs: CrsLike | None) -> gpd.GeoDataFrame:
    if not path.exists():
        raise InputError(path, "file not found")
    sep = "\t" if path.suffix.lower() == ".tsv" else None
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would join the first
        # column's name
        frame = pd.read_csv(path, sep=sep, engine="python", encoding="utf-8-sig")
    except (pd.errors.EmptyDataError, csv.Error):  # the sniffer of an empty file: csv.Error
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise InputError(path, "no points in the file (it is empty)") from None
        raise InputError(path, "cannot read as CSV (no delimiter found)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise InputError(path, f"cannot read as CSV ({text[0] if text else exc})") from None
    missing = [c for c in (x, y) if c not in frame.columns]
    if missing:
        raise InputError(
            path,
            f"coordinate column(s) {', '.join(repr(c) for c in missing)} not found "
            f"(columns: {', '.join(map(str, frame.columns))}); set 'x' and 'y' in the config",
        )
    if len(frame) == 0:
        raise InputError(path, "no points in the file (header only)")
    coords = {}
    for name in (x, y):
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:5])
            raise InputError(path, f"column '{name}' is not a number in line(s) {rows}")
        coords[name] = values.to_numpy(dtype=float)
    try:
        return gpd.GeoDataFrame(
            frame,
            geometry=gpd.points_from_xy(coords[x], coords[y]),
            crs=None if crs is None else _crs_text(crs),
        )
    except (CRSError, ValueError) as exc:
        raise InputError(path, f"bad CRS {crs!r} ({exc})") from None


def read_lines(path: str | Path, target_crs: CrsLike | None = None) -> gpd.GeoDataFrame:
    """Read fault traces: the LineString / MultiLineString features of a vector file.

    Other geometry types are dropped; a file with no line at all is an error. Reprojected to
    ``target_crs`` when given (the file must then have a CRS).
    """
    path = Path(path)
    gdf = _read_vector(path)
    geoms = gdf.geometry
    keep = geoms.notna() & ~geoms.is_empty & geoms.geom_type.isin(_LINE_TYPES)
    if not keep.any():
        found = sorted(set(geoms.dropna().geom_type)) if len(gdf) else []
        what = f" (found {', '.join(found)})" if found else ""
        raise InputError(path, f"no lines in the file{what}")
    gdf = gdf[keep.to_numpy()].reset_index(drop=True)
    if target_crs is not None and gdf.crs is None:
        raise InputError(
            path, "has no CRS: assign one (e.g. in QGIS, Layer > Set CRS) and save it again"
        )
    return _to_crs(gdf, target_crs, path)


def write_vector(frame: gpd.GeoDataFrame, path: str | Path, **kwargs: Any) -> Path:
    """``frame.to_file(path, **kwargs)`` with the mode ``open()`` would give under the umask.

    GDAL's SQLite-based formats such as GeoPackage create their files 0644 whatever it is.
    """
    path = Path(path)
    frame.to_file(path, **kwargs)
    path.chmod(file_mode())
    return path
