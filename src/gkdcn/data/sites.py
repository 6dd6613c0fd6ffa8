"""Deposit and non-deposit sites as cells of the element grid.

Sites are never moved: a point outside the grid or on a nodata cell is skipped and reported, and of
two points in one cell the first is kept and the other reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt

from gkdcn.config import Align
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import ALIGN_HINT, read_layer_on_grid

DEPOSIT = 1
NON_DEPOSIT = 0


@dataclass(frozen=True)
class SiteTable:
    """Sites on the element grid: string ids, labels (1 deposit, 0 non-deposit), rows, cols."""

    ids: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    def __post_init__(self) -> None:
        # Normalise dtypes once so every consumer can rely on them.
        object.__setattr__(self, "ids", np.asarray(self.ids).astype(str))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int8))
        object.__setattr__(self, "rows", np.asarray(self.rows, dtype=np.int64))
        object.__setattr__(self, "cols", np.asarray(self.cols, dtype=np.int64))
        n = {len(self.ids), len(self.labels), len(self.rows), len(self.cols)}
        if len(n) != 1:
            raise ValueError("ids, labels, rows and cols must have the same length")
        if not np.isin(self.labels, (NON_DEPOSIT, DEPOSIT)).all():
            raise ValueError("labels must be 0 (non-deposit) or 1 (deposit)")

    @classmethod
    def empty(cls) -> SiteTable:
        """A table with no sites."""
        return cls(np.array([], dtype=str), np.array([]), np.array([]), np.array([]))

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> SiteTable:
        """Sites selected by a boolean mask or an index array."""
        return SiteTable(self.ids[mask], self.labels[mask], self.rows[mask], self.cols[mask])

    def deposits(self) -> SiteTable:
        """Only the deposit sites (label 1)."""
        return self.subset(self.labels == DEPOSIT)

    def non_deposits(self) -> SiteTable:
        """Only the non-deposit sites (label 0)."""
        return self.subset(self.labels == NON_DEPOSIT)

    def concat(self, other: SiteTable) -> SiteTable:
        """This table followed by ``other``."""
        return SiteTable(
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.labels, other.labels]),
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.cols, other.cols]),
        )

    def to_frame(self, grid: Grid) -> pd.DataFrame:
        """site_id, label, row, col and the cell centre's x, y in map units."""
        x, y = grid.xy(self.rows, self.cols)
        return pd.DataFrame(
            {
                "site_id": self.ids.astype(str),
                "label": self.labels,
                "row": self.rows,
                "col": self.cols,
                "x": x,
                "y": y,
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SiteTable:
        """Inverse of :meth:`to_frame` (x, y are ignored: cells are the truth)."""
        return cls(
            frame["site_id"].astype(str).to_numpy(),
            frame["label"].to_numpy(),
            frame["row"].to_numpy(),
            frame["col"].to_numpy(),
        )


def _numbered(prefix: str, count: int) -> np.ndarray:
    width = max(2, len(str(count)))
    return np.array([f"{prefix}{i + 1:0{width}d}" for i in range(count)], dtype=object)


def sites_from_raster(
    path: str | Path,
    grid: Grid,
    align: Align,
    value: float,
    label: int,
    id_prefix: str,
) -> SiteTable:
    """Sites at the cells of a label raster equal to ``value``, ids ``{prefix}01..`` by row, col.

    With ``align = "resample"`` each marked cell of the label raster belongs to the element cell
    holding its centre (reprojected when the CRSs differ), so a finer label raster loses no site;
    several marked cells in one element cell make one site (a warning says how many merged).
    Marked cells whose centre lies off the element grid are dropped with a warning. The raster's
    own nodata cells are never sites.
    """
    if align == "resample":
        rows, cols = _marked_cell_centres(Path(path), grid, value)
    else:
        data = read_layer_on_grid(path, grid, align, resampling="nearest")
        rows, cols = np.nonzero(data == value)  # row-major: sorted by row then col
    return SiteTable(_numbered(id_prefix, len(rows)), np.full(len(rows), label), rows, cols)


def _marked_cell_centres(path: Path, grid: Grid, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Element-grid cells holding the centres of a label raster's cells equal to ``value``.

    Unique, sorted by row then column.
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.transform import xy
    from rasterio.warp import transform as warp_points

    try:
        with rasterio.open(path) as ds:
            band = ds.read(1, masked=True)
            own_transform, own_crs = ds.transform, ds.crs
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    marked_rows, marked_cols = np.nonzero((band.data == value) & ~np.ma.getmaskarray(band))
    native = len(marked_rows)
    if native == 0:
        return marked_rows, marked_cols
    x, y = (np.asarray(v, dtype=np.float64) for v in xy(own_transform, marked_rows, marked_cols))
    if own_crs is not None and grid.crs is not None and own_crs != grid.crs:
        x, y = (np.asarray(v, dtype=np.float64) for v in warp_points(own_crs, grid.crs, x, y))
    rows, cols = grid.rowcol(x, y)
    inside = grid.inside(rows, cols)
    cells = np.unique(np.stack([rows[inside], cols[inside]], axis=1), axis=0)
    off, merged = int((~inside).sum()), int(inside.sum()) - len(cells)
    problems = []
    if off:
        problems.append(f"{off} of the {native} cells equal to {value:g} lie off the element grid")
    if merged:
        problems.append(
            f"{merged + len(cells)} marked cells fall into {len(cells)} element cells "
            "(cells of the finer label raster that share an element cell make one site)"
        )
    if len(cells) == 0:
        raise InputError(
            path, f"none of the {native} cells equal to {value:g} lies on the element grid"
        )
    if problems:
        warnings.warn(f"{path}: {'; '.join(problems)}", UserWarning, stacklevel=3)
    return cells[:, 0], cells[:, 1]


def drop_invalid(sites: SiteTable, valid: np.ndarray) -> tuple[SiteTable, list[str]]:
    """Remove sites on invalid (nodata) element cells; report each by id."""
    ok = valid[sites.rows, sites.cols]
    messages = [
        f"site {sites.ids[i]} at row {sites.rows[i]}, col {sites.cols[i]} falls on a nodata "
        "cell of the element data; skipped"
        for i in np.flatnonzero(~ok)
    ]
    return sites.subset(ok), messages


def sites_from_points(
    gdf: gpd.GeoDataFrame, grid: Grid, valid: np.ndarray, label: int
) -> tuple[SiteTable, list[str]]:
    """Cells of points (already in the grid's CRS) with their ``site_id``; skipped ones reported.

    Points outside the grid or on nodata cells are skipped, never moved; when two points share a
    cell the first is kept.
    """
    x = gdf.geometry.x.to_numpy(dtype=float)
    y = gdf.geometry.y.to_numpy(dtype=float)
    ids = gdf["site_id"].astype(str).to_numpy()
    rows, cols = grid.rowcol(x, y)
    inside = grid.inside(rows, cols)
    messages: list[str] = []
    keep = np.zeros(len(ids), dtype=bool)
    taken: dict[tuple[int, int], str] = {}
    for i in range(len(ids)):
        where = f"site {ids[i]} at ({x[i]:.10g}, {y[i]:.10g})"
        if not inside[i]:
            messages.append(f"{where} lies outside the element grid; skipped")
            continue
        cell = (int(rows[i]), int(cols[i]))
        if not valid[cell]:
            messages.append(
                f"{where} falls on a nodata cell (row {cell[0]}, col {cell[1]}); skipped"
            )
            continue
        if cell in taken:
            messages.append(
                f"{where} shares cell (row {cell[0]}, col {cell[1]}) with site {taken[cell]}; skipped"
            )
            continue
        taken[cell] = ids[i]
        keep[i] = True
    table = SiteTable(ids[keep], np.full(int(keep.sum()), label), rows[keep], cols[keep])
    return table, messages


def placement_hint(gdf: gpd.GeoDataFrame, grid: Grid, crs: object | None) -> str:
    """Where points lie relative to the grid, and which CRS their coordinates were read in.

    For the message when sites fall off the grid: a CRS mix-up (lon/lat read as metres, another
    UTM zone) or sites of another district shows at once in the two extents.
    """
    x = gdf.geometry.x.to_numpy(dtype=float)
    y = gdf.geometry.y.to_numpy(dtype=float)
    left, bottom, right, top = grid.bounds
    grid_crs = grid.describe().split(",")[0] if grid.crs is None else _crs_label(grid.crs)
    read_as = (
        f"coordinates read as {crs}"
        if crs is not None
        else f"no crs given, so coordinates were read as the grid's CRS ({grid_crs})"
    )
    return (
        f"{read_as}; the points span x {x.min():.10g} .. {x.max():.10g}, "
        f"y {y.min():.10g} .. {y.max():.10g} ({grid_crs}) but the grid covers "
        f"x {left:.10g} .. {right:.10g}, y {bottom:.10g} .. {top:.10g}"
    )


def _crs_label(crs: object) -> str:
    epsg = getattr(crs, "to_epsg", lambda: None)()
    return f"EPSG:{epsg}" if epsg else str(crs)[:60]


def sample_negatives(
    deposits: SiteTable,
    valid: np.ndarray,
    grid: Grid,
    count: int,
    min_distance: float,
    seed: int,
) -> SiteTable:
    """Draw ``count`` random valid cells at least ``min_distance`` map units from every deposit.

    Distances are between cell centres. Ids ``R01..`` ordered by row then col; label 0.
    """
    if count < 1:
        raise GkdcnError(f"cannot sample {count} non-deposit sites")
    candidates = valid.copy()
    if len(deposits):
        marks = np.ones(grid.shape, dtype=bool)
        marks[deposits.rows, deposits.cols] = False
        cw, ch = grid.cell_size
        distance = distance_transform_edt(marks, sampling=(ch, cw))
        candidates &= (distance >= min_distance) & marks
    flat = np.flatnonzero(candidates)
    if len(flat) < count:
        raise InputError(
            "sites.negatives",
            f"only {len(flat)} valid cells lie at least {min_distance:g} map units from every "
            f"deposit, {count} needed: lower 'min_distance' or 'count'",
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(flat, size=count, replace=False))
    rows, cols = np.unravel_index(chosen, grid.shape)
    return SiteTable(_numbered("R", count), np.zeros(count), rows, cols)


def deposit_cells(
    sites: str | Path,
    grid: Grid,
    valid: np.ndarray,
    *,
    data_dir: str | Path | None = None,
    x: str = "x",
    y: str = "y",
    crs: str | None = None,
    value: float = 1,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Deposit cells ``(rows, cols, notes)`` on ``grid`` from a study config (``.toml``: its
    deposits and alignment), a deposit raster (``.tif``: cells equal to ``value``) or points
    (CSV with ``x``/``y`` columns in ``crs``, or a vector file). ``notes`` name skipped points.
    """
    from collections.abc import Callable

    from gkdcn.config import PointSitesConfig, RasterSitesConfig, load_config
    from gkdcn.io.vectors import read_points

    sites = Path(sites)
    align: Align = "strict"
    source: PointSitesConfig | RasterSitesConfig
    resolve: Callable[[Path], Path] = Path
    if sites.suffix.lower() == ".toml":
        cfg = load_config(sites, data_dir=data_dir)
        source = cfg.sites.deposits
        align = cfg.align
        resolve = cfg.resolve
    elif sites.suffix.lower() in (".tif", ".tiff"):
        source = RasterSitesConfig(raster=sites, value=value)
    else:
        source = PointSitesConfig(points=sites, x=x, y=y, crs=crs)
    if isinstance(source, RasterSitesConfig):
        raster = resolve(source.raster)
        try:
            table = sites_from_raster(raster, grid, align, source.value, 1, "D")
        except InputError as exc:
            if raster != sites or ALIGN_HINT not in exc.problem:
                raise
            # A bare raster has no `align` setting to change: say what does work.
            hint = (
                "a deposit raster must be on the map's grid; give the deposits as points, or a "
                "study config whose align setting brings the raster onto the map's grid"
            )
            problem = exc.problem.replace(ALIGN_HINT, hint)
            raise InputError(
                exc.path, problem.replace("the element grid", "the map's grid")
            ) from None
        if len(table) == 0:
            setting = "--value" if raster == sites else f"[sites.deposits] value in {sites}"
            raise InputError(
                raster,
                f"no cell equals {source.value:g}, the value that marks a deposit ({setting}): "
                "no deposits",
            )
        return table.rows, table.cols, []
    gdf = read_points(
        resolve(source.points), x=source.x, y=source.y, crs=source.crs, id=source.id,
        target_crs=grid.crs,
    )  # fmt: skip
    table, notes = sites_from_points(gdf, grid, valid, 1)
    rows, cols = grid.rowcol(gdf.geometry.x.to_numpy(float), gdf.geometry.y.to_numpy(float))
    outside = int((~grid.inside(rows, cols)).sum())
    if outside and 2 * outside > len(gdf):  # most sites elsewhere: another district or CRS
        raise InputError(
            sites,
            f"{outside} of {len(gdf)} deposits lie outside the map's grid (sites of another "
            f"district, or a CRS mix-up?): {placement_hint(gdf, grid, source.crs)}",
        )
    if outside:
        notes.append(f"{outside} of {len(gdf)} deposits lie outside the map's grid; not scored")
    if len(table) == 0:
        raise InputError(sites, "no deposit falls on a valid cell of the map")
    return table.rows, table.cols, notes
