"""Guess a study from a folder of data: what ``gkdcn init`` writes as a commented ``study.toml``.

The guesses, each stated in the file and returned as a note:

- **elements**: the folder holding the most single-band GeoTIFFs on one grid (or the multi-band
  GeoTIFF with the most named bands); rasters whose names say they are labels, truth, weights or
  model outputs are never elements, and layers on another grid are excluded by name;
- **deposits**: point files (CSV with coordinate columns, or vector files) whose names say
  deposit / occurrence / mine / prospect / showing; names with non-deposit / barren / negative
  give the non-deposits; a point file with many numeric columns is a sample table (grid it with
  ``gkdcn grid``), never sites;
- **faults**: the line file whose name says fault (else the only line file), or a weight raster.

A CSV without a CRS is taken to be in the element grid's CRS; lon/lat columns in EPSG:4326.
Distances in the written config (negative sampling, fault rings) scale with the cell size.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import RasterioError

from gkdcn.compare.layout import RunLayout
from gkdcn.config import load_config
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.toml import to_toml

_RASTER = (".tif", ".tiff")
_TABLE = (".csv", ".txt", ".tsv")
_VECTOR = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml")
_COORDS = (
    ("x", "y"),
    ("easting", "northing"),
    ("east", "north"),
    ("lon", "lat"),
    ("longitude", "latitude"),
    ("long", "lat"),
)
_GEOGRAPHIC = {"lon", "longitude", "long"}
_NOT_ELEMENTS = re.compile(
    r"truth|label|deposit|occurrence|mine|weight|proximity|distance|fault|probab|uncert|gradcam"
    r"|attribution|valid|mask|knowledge|stack"
    # Coordinates gridded as if they were layers (Idw_xx, Idw_yy). Case matters: "Y" is yttrium.
    r"|(?-i:(?:^|[_\W])(?:x|y|xx|yy|XX|YY|easting|northing|lon|lat|longitude|latitude)$)",
    re.I,
)
_NON_DEPOSIT = re.compile(r"non[\W_]?deposit|barren|negative|background", re.I)
_DEPOSIT = re.compile(r"deposit|occurrence|mine|prospect|showing", re.I)
_FAULT = re.compile(r"fault|lineament|structur|shear", re.I)
_WEIGHT = re.compile(r"weight|proximity", re.I)
_ID_COLUMNS = ("site_id", "id", "deposit_id", "name", "deposit", "site", "fid")
_SKIP_DIRS = {"runs", "__pycache__", "node_modules"}
# A point table with more numeric columns than this (besides coordinates) is a sample table.
_MAX_SITE_NUMERIC = 3


@dataclass
class PointFile:
    """A point file found in the folder."""

    path: Path
    x: str | None = None
    y: str | None = None
    crs: str | None = None
    id: str | None = None
    numeric: int = 0


@dataclass
class Discovery:
    """What :func:`discover` found; ``config`` is the study as plain data, paths relative."""

    folder: Path
    config: dict[str, Any]
    comments: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _files(folder: Path, depth: int = 3) -> list[Path]:
    out: list[Path] = []

    def walk(d: Path, level: int) -> None:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                # A prepared dataset or run folder holds outputs, not inputs.
                if (
                    level < depth
                    and entry.name not in _SKIP_DIRS
                    and (
                        not (entry / "metadata.json").exists()
                        and not (entry / RunLayout.SUMMARY).exists()
                    )
                ):
                    walk(entry, level + 1)
            else:
                out.append(entry)

    walk(folder, 1)
    return out


def _raster_info(path: Path) -> tuple[Grid, int, list[str], str] | None:
    try:
        with rasterio.open(path) as ds:
            grid = Grid(crs=ds.crs, transform=ds.transform, height=ds.height, width=ds.width)
            return grid, ds.count, [d or "" for d in ds.descriptions], ds.dtypes[0]
    except (RasterioError, OSError):
        return None


def _grid_key(grid: Grid) -> tuple[Any, ...]:
    t = grid.transform
    crs = grid.crs.to_wkt() if grid.crs is not None else None
    return (crs, round(t.a, 9), round(t.e, 9), round(t.c, 6), round(t.f, 6), grid.shape)


def _crs_text(grid: Grid) -> str | None:
    if grid.crs is None:
        return None
    epsg = grid.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else grid.crs.to_wkt()


def _elements(
    folder: Path, rasters: dict[Path, tuple[Grid, int, list[str], str]], notes: list[str]
) -> tuple[dict[str, Any], Grid, list[str]] | None:
    """The element layers: the best folder of single-band rasters or a multi-band file."""
    best: tuple[int, int, dict[str, Any], Grid, list[str]] | None = None
    by_dir: dict[Path, list[Path]] = {}
    for path, (_grid, count, descriptions, _dtype) in rasters.items():
        if _NOT_ELEMENTS.search(path.stem):
            continue
        if count == 1:
            by_dir.setdefault(path.parent, []).append(path)
        elif all(descriptions) and len(set(descriptions)) == count:
            score = (count, 0)
            if best is None or score > best[:2]:
                comment = [
                    f"guessed: {_rel(path, folder)} holds {count} named bands, used as the "
                    "element layers"
                ]
                best = (*score, {"path": _rel(path, folder)}, rasters[path][0], comment)
    for d, paths in by_dir.items():
        groups: dict[tuple[Any, ...], list[Path]] = {}
        for p in paths:
            groups.setdefault(_grid_key(rasters[p][0]), []).append(p)
        members = max(groups.values(), key=len)
        if len(members) < 2:
            continue
        # Prefer the folder named for its content when two folders hold as many layers.
        named = 1 if re.search(r"element|geochem|grid|layer", d.name, re.I) else 0
        score = (len(members), named)
        if best is not None and score <= best[:2]:
            continue
        where = _rel(d, folder) if d != folder else "."
        section: dict[str, Any] = {"path": where}
        comment = [
            f"guessed: the {len(members)} single-band GeoTIFFs on one grid in {where}/ are the "
            "element layers (file name = layer name)"
        ]
        # Every other GeoTIFF in the folder is excluded by name: the study reads all of them
        # but these, and a label or fault raster must never become an element layer.
        elsewhere = sorted(p.stem for p in paths if p not in members)
        not_elements = sorted(
            p.stem for p in rasters if p.parent == d and p not in paths and p not in members
        )
        if elsewhere or not_elements:
            section["exclude"] = sorted([*elsewhere, *not_elements])
            if elsewhere:
                comment.append(f"excluded: {', '.join(elsewhere)} (on another grid)")
            if not_elements:
                comment.append(
                    f"excluded: {', '.join(not_elements)} (their names say they are not "
                    "element layers)"
                )
        best = (*score, section, rasters[members[0]][0], comment)
    if best is None:
        return None
    return best[2], best[3], best[4]


def _point_table(path: Path) -> PointFile | None:
    sep = "\t" if path.suffix.lower() == ".tsv" else None
    try:
        frame = pd.read_csv(path, sep=sep, engine="python", nrows=200)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    lower = {str(c).strip().lower(): str(c) for c in frame.columns}
    for cx, cy in _COORDS:
        if cx in lower and cy in lower:
            x, y = lower[cx], lower[cy]
            numeric = sum(
                1
                for c in frame.columns
                if str(c) not in (x, y) and pd.api.types.is_numeric_dtype(frame[c])
            )
            crs = "EPSG:4326" if cx in _GEOGRAPHIC else None
            return PointFile(path, x=x, y=y, crs=crs, id=_id_column(frame), numeric=numeric)
    return None


def _id_column(frame: pd.DataFrame) -> str | None:
    lower = {str(c).strip().lower(): str(c) for c in frame.columns}
    for name in _ID_COLUMNS:
        if name in lower:
            col = frame[lower[name]]
            if col.notna().all() and col.astype(str).is_unique:
                return lower[name]
    return None


def _vector_kind(path: Path) -> str | None:
    try:
        import pyogrio

        info = pyogrio.read_info(path)
    except Exception:  # pyogrio raises many types; any of them means "not a vector file"
        return None
    kind = str(info.get("geometry_type") or "")
    if "Point" in kind:
        return "points"
    if "Line" in kind:
        return "lines"
    return None


def discover(folder: str | Path) -> Discovery:
    """Look through ``folder`` (three levels deep) and guess a study (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    folder = folder.resolve()
    notes: list[str] = []
    comments: dict[str, list[str]] = {}
    files = _files(folder)
    rasters = {p: info for p in files if p.suffix.lower() in _RASTER if (info := _raster_info(p))}
    points: list[PointFile] = []
    lines: list[Path] = []
    for p in files:
        suffix = p.suffix.lower()
        if suffix in _TABLE:
            found = _point_table(p)
            if found is not None:
                points.append(found)
        elif suffix in _VECTOR:
            kind = _vector_kind(p)
            if kind == "points":
                points.append(PointFile(p))
            elif kind == "lines":
                lines.append(p)
    samples = [p for p in points if p.numeric > _MAX_SITE_NUMERIC]
    sites = [p for p in points if p.numeric <= _MAX_SITE_NUMERIC]

    elements = _elements(folder, rasters, notes)
    if elements is None:
        hint = ""
        if samples:
            first = _rel(samples[0].path, folder)
            hint = (
                f"; {first} looks like point samples: grid them first "
                f"(gkdcn grid {first} --out elements)"
            )
        raise InputError(folder, f"no element grids found (two or more GeoTIFFs on one grid){hint}")
    elements_section, grid, comments["elements"] = elements
    comments["elements"] += _gridding_quality(folder / elements_section["path"])
    for s in samples:
        notes.append(
            f"{_rel(s.path, folder)} has {s.numeric} numeric columns: a sample table, not sites "
            "(grid it with gkdcn grid)"
        )

    non_deposits = [p for p in sites if _NON_DEPOSIT.search(p.path.stem)]
    deposits = [p for p in sites if p not in non_deposits and _DEPOSIT.search(p.path.stem)]
    sites_section: dict[str, Any] = {}
    comments["sites.deposits"] = []
    if deposits:
        chosen = deposits[0]
        comments["sites.deposits"].append(
            f"guessed: {_rel(chosen.path, folder)} (its name says deposits)"
        )
        if len(deposits) > 1:
            others = ", ".join(_rel(p.path, folder) for p in deposits[1:])
            comments["sites.deposits"].append(f"also found, not used: {others}")
    elif len([p for p in sites if p not in non_deposits]) == 1:
        chosen = next(p for p in sites if p not in non_deposits)
        comments["sites.deposits"].append(
            f"guessed: {_rel(chosen.path, folder)} (the only point file; its name does not say "
            "deposits: check it)"
        )
    else:
        label = [p for p in rasters if _DEPOSIT.search(p.stem) and not _NON_DEPOSIT.search(p.stem)]
        if not label:
            raise InputError(
                folder,
                "no deposit file found (a point file or raster with deposit, occurrence, mine, "
                "prospect or showing in its name)",
            )
        chosen = None
        sites_section["deposits"] = _raster_section(
            label[0], folder, grid, rasters, comments["sites.deposits"], "deposits"
        )
    if chosen is not None:
        sites_section["deposits"] = _points_section(
            chosen, folder, grid, comments["sites.deposits"]
        )
    if non_deposits:
        comments["sites.non_deposits"] = [
            f"guessed: {_rel(non_deposits[0].path, folder)} (its name says non-deposits)"
        ]
        sites_section["non_deposits"] = _points_section(
            non_deposits[0], folder, grid, comments["sites.non_deposits"]
        )
    negative_rasters = [p for p in rasters if _NON_DEPOSIT.search(p.stem)]
    if not non_deposits and negative_rasters:
        comments["sites.non_deposits"] = []
        sites_section["non_deposits"] = _raster_section(
            negative_rasters[0], folder, grid, rasters, comments["sites.non_deposits"],
            "non-deposits",
        )  # fmt: skip
    cell = min(grid.cell_size)
    if "non_deposits" not in sites_section:
        sites_section["negatives"] = {"min_distance": 3 * cell, "seed": 0}
        comments["sites.negatives"] = [
            "no non-deposit file found: as many non-deposit cells as deposits are drawn at "
            f"random, at least 3 cells ({3 * cell:g} map units) from any deposit"
        ]

    knowledge: dict[str, Any] = {}
    faults = sorted(lines, key=lambda p: (not _FAULT.search(p.stem), str(p)))
    comments["knowledge"] = []
    if faults:
        knowledge["faults"] = _rel(faults[0], folder)
        why = "its name says faults" if _FAULT.search(faults[0].stem) else "the only line file"
        comments["knowledge"].append(f"guessed: {knowledge['faults']} are the faults ({why})")
        if len(faults) > 1:
            comments["knowledge"].append(
                f"also found, not used: {', '.join(_rel(p, folder) for p in faults[1:])}"
            )
    else:
        weights = [p for p in rasters if _WEIGHT.search(p.stem)]
        if weights:
            knowledge["weights"] = _rel(weights[0], folder)
            comments["knowledge"].append(f"guessed: {knowledge['weights']} is the fault weight")
            comments["knowledge"] += _grid_warning(rasters[weights[0]][0], grid)
        else:
            comments["knowledge"].append(
                'no fault file found: GK-CNN and GK-DCN need faults = "..." or weights = "..."'
            )

    config: dict[str, Any] = {
        "name": re.sub(r"\s+", "-", folder.name) or "study",
        "align": "strict",
        "elements": elements_section,
        "sites": sites_section,
    }
    deposit_cells = _deposit_cells(sites_section.get("deposits", {}), folder, grid)
    if faults:
        knowledge["decay"], decay_comment = _guess_decay(folder / knowledge["faults"], grid)
        comments["knowledge"] += decay_comment
    if knowledge:
        knowledge["as_channel"] = True
        comments["knowledge"].append(
            "as_channel = true: the weight is also an input channel of the networks (the "
            "recommended setting; false keeps it to the GK loss)"
        )
        config["knowledge"] = knowledge
    if any(
        line.startswith(_RESAMPLE_NOTE) and 'align = "resample" is set' in line
        for lines in comments.values()
        for line in lines
    ):
        config["align"] = "resample"
    split, comments["split"] = _guess_split(deposit_cells, grid)
    if split:
        config["split"] = split
    config["transform"] = {"method": "clr", "scaling": "standard"}
    comments["transform"] = ["centred log-ratio then standard scaling, fitted on training windows"]
    return Discovery(folder=folder, config=config, comments=comments, notes=notes)


WINDOW = 9
"""The default window (``[samples] window``): the footprint the split settings are derived from."""


def _deposit_cells(
    section: dict[str, Any], folder: Path, grid: Grid
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns on the element grid of the guessed deposits (None where unreadable)."""
    try:
        if "raster" in section:
            from gkdcn.data.sites import sites_from_raster

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # prepare states them; here only cells count
                sites = sites_from_raster(
                    folder / section["raster"], grid, "resample", section["value"], 1, "D"
                )
            return sites.rows, sites.cols
        if "points" in section:
            found = PointFile(folder / section["points"], section.get("x"), section.get("y"))
            xy = _read_xy(found)
            if xy is None:
                return None
            x, y = xy
            crs = section.get("crs")
            if crs is not None and grid.crs is not None:
                from rasterio.crs import CRS
                from rasterio.warp import transform

                if CRS.from_user_input(crs) != grid.crs:
                    x, y = (np.asarray(v) for v in transform(crs, grid.crs, x, y))
            rows, cols = grid.rowcol(x, y)
            inside = grid.inside(rows, cols)
            return rows[inside], cols[inside]
    except (GkdcnError, RasterioError, OSError, ValueError, KeyError):
        return None
    return None


def _guess_split(
    cells: tuple[np.ndarray, np.ndarray] | None, grid: Grid
) -> tuple[dict[str, Any], list[str]]:
    """Exclusion radius and block size derived from the window footprint and the deposits.

    The radius is half the window footprint: a training window centred further from a held-out
    deposit never holds its cell. The block edge is the largest of extent / 2, / 3, ... that
    puts the deposits in at least five blocks (the default folds), and never below the window
    footprint; a district whose deposits fit in fewer blocks keeps the default and says so.
    """
    cell = float(min(grid.cell_size))
    radius = (WINDOW // 2) * cell
    split: dict[str, Any] = {"exclusion_radius": radius}
    comments = [
        f"exclusion_radius = {radius:g}: half the {WINDOW}-cell window footprint, so no training "
        "window of a held-out fold holds the held-out deposit's cell"
    ]
    if cells is None or len(cells[0]) == 0:
        comments.append("deposits not read here: block_size stays at its default")
        return split, comments
    rows, cols = cells
    unique = np.unique(np.stack([rows, cols], axis=1), axis=0)
    if len(unique) > 1:
        diff = unique[:, None, :] - unique[None, :, :]
        dist = np.sqrt((diff.astype(np.float64) ** 2).sum(axis=2)) * cell
        np.fill_diagonal(dist, np.inf)
        spacing = float(np.median(dist.min(axis=1)))
        comments.append(
            f"deposits {spacing:g} map units apart (median nearest neighbour)"
            + (
                ": closer than the exclusion radius, so neighbours of a held-out deposit leave "
                "training with it; grouped or block folds rank them more fairly"
                if spacing < radius
                else ""
            )
        )
    extent = max(grid.height, grid.width) * cell
    footprint = WINDOW * cell
    for parts in range(2, 41):
        size = extent / parts
        if size < footprint:
            break
        blocks = {(int(r * cell // size), int(c * cell // size)) for r, c in unique}
        if len(blocks) >= 5:
            split["block_size"] = float(f"{size:.4g}")
            comments.append(
                f"block_size = {split['block_size']:g}: the largest of extent / 2, / 3, ... "
                f"that puts the {len(unique)} deposit cells in {len(blocks)} blocks "
                "(at least 5, one per fold)"
            )
            return split, comments
    comments.append(
        "block_size stays at its default: no block edge above the window footprint puts the "
        "deposits in 5 blocks (spatial blocks need deposits spread over 5 blocks)"
    )
    return split, comments


def _guess_decay(faults: Path, grid: Grid) -> tuple[dict[str, Any], list[str]]:
    """A continuous decay scaled by how far the grid's cells lie from the faults.

    ``exponential`` with the e-folding distance at the median distance of a cell to the nearest
    fault: the weight falls smoothly with distance everywhere (it ranks like the distance itself,
    with no plateau at 0 or 1), about 0.37 at the median cell. Where the faults cannot be read
    here the rings of the authors' release are kept (2 cells wide, 0 beyond 12 rings).
    """
    from gkdcn.data.knowledge import distance_to_lines
    from gkdcn.io.vectors import read_lines

    cell = float(min(grid.cell_size))
    try:
        distance = distance_to_lines(read_lines(faults, target_crs=grid.crs), grid)
    except (GkdcnError, OSError, ValueError):
        decay = {"kind": "rings", "ring_width": 2 * cell, "rings": 12, "exponent": 0.46}
        return decay, [
            f"fault-proximity weight in rings of 2 cells ({2 * cell:g} map units), 0 beyond "
            "12 rings (the faults could not be read here to scale it)"
        ]
    scale = float(f"{max(float(np.median(distance)), cell):.4g}")
    return {"kind": "exponential", "scale": scale}, [
        f"fault-proximity weight exp(-distance / {scale:g}): {scale:g} map units is the median "
        "distance of a cell to the nearest fault (weight 0.37 there, falling smoothly beyond; "
        "no plateau, so it ranks cells like the distance itself)"
    ]


def _gridding_quality(elements: Path, poor: float = 0.5) -> list[str]:
    """Comments on a folder written by ``gkdcn grid``: which elements its cross-validation
    says are mapped poorly (R² below ``poor``), so the user can decide to exclude them."""
    from gkdcn.data.gridding import CV_FILE

    table_path = elements / CV_FILE
    if not elements.is_dir() or not table_path.exists():
        return []
    try:
        table = pd.read_csv(table_path)
        r2 = dict(zip(table["element"].astype(str), table["cv_r2"].astype(float), strict=True))
    except (OSError, KeyError, ValueError, pd.errors.ParserError):
        return []
    text = f"gridded from point samples ({CV_FILE}: cross-validated R² per element)"
    weak = [f"{name} {value:.2f}" for name, value in r2.items() if not value >= poor]
    if weak:
        text += f"; mapped poorly (R² < {poor:g}): {', '.join(weak)}; consider exclude = [...]"
    return [text]


def _marker(path: Path) -> tuple[float, int] | None:
    """The rarest value of a label raster (its site marker) and how many cells hold it."""
    import numpy as np

    try:
        with rasterio.open(path) as ds:
            data = ds.read(1, masked=True)
    except (RasterioError, OSError):
        return None
    values, counts = np.unique(data.compressed(), return_counts=True)
    if values.size < 2:
        return None
    i = int(np.argmin(counts))
    return float(values[i]), int(counts[i])


_RESAMPLE_NOTE = "its grid differs from the element grid"


def _grid_warning(own: Grid, grid: Grid) -> list[str]:
    differences = grid.differences(own)
    if not differences:
        return []
    if own.shape == grid.shape and own.crs == grid.crs:
        return [
            f"{_RESAMPLE_NOTE} ({'; '.join(differences)}) but has its shape: if the two line up "
            'by array index (as in some published data sets), set align = "index" above'
        ]
    return [
        f'{_RESAMPLE_NOTE} ({"; ".join(differences)}): align = "resample" is set above '
        "(weights warped by nearest neighbour; each marked cell of a label raster goes to the "
        "element cell holding its centre, so none is lost)"
    ]


def _raster_section(
    path: Path,
    folder: Path,
    grid: Grid,
    rasters: dict[Path, tuple[Grid, int, list[str], str]],
    comment: list[str],
    what: str,
) -> dict[str, Any]:
    marker = _marker(path)
    value = marker[0] if marker is not None else 1.0
    value_out: float | int = int(value) if float(value).is_integer() else value
    how = f"its rarest value, on {marker[1]} cells" if marker is not None else "the default value"
    comment.append(f"guessed: {_rel(path, folder)} marks {what} with value {value_out:g} ({how})")
    comment += _grid_warning(rasters[path][0], grid)
    return {"raster": _rel(path, folder), "value": value_out}


def _read_xy(found: PointFile) -> tuple[np.ndarray, np.ndarray] | None:
    """The finite x / y values of a point table, or None where they cannot be read."""
    if found.x is None or found.y is None:
        return None
    sep = "\t" if found.path.suffix.lower() == ".tsv" else None
    try:
        frame = pd.read_csv(found.path, sep=sep, engine="python", usecols=[found.x, found.y])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    except ValueError:
        return None
    x = pd.to_numeric(frame[found.x], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(frame[found.y], errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return (x[keep], y[keep]) if keep.any() else None


def _looks_geographic(found: PointFile, grid: Grid) -> bool:
    """Whether a point table's coordinates are degrees although the element grid is projected."""
    if grid.crs is None or not grid.crs.is_projected:
        return False
    xy = _read_xy(found)
    if xy is None:
        return False
    x, y = xy
    in_range = bool(np.all(np.abs(x) <= 180) and np.all(np.abs(y) <= 90))
    left, bottom, right, top = grid.bounds
    on_grid = bool(np.any((x >= left) & (x <= right) & (y >= bottom) & (y <= top)))
    return in_range and not on_grid


def _points_section(
    found: PointFile, folder: Path, grid: Grid, comment: list[str]
) -> dict[str, Any]:
    section: dict[str, Any] = {"points": _rel(found.path, folder)}
    if found.x is not None and found.y is not None:
        section["x"], section["y"] = found.x, found.y
        by_values = found.crs is None and _looks_geographic(found, grid)
        if by_values:
            found.crs = "EPSG:4326"
            comment.append(
                f"columns {found.x}/{found.y} hold degrees (all within longitude/latitude "
                "range and none on the projected element grid): read as EPSG:4326"
            )
        crs = found.crs or _crs_text(grid)
        if crs is not None:
            section["crs"] = crs
            if found.crs is None:
                comment.append(f"its coordinates are taken to be in the element grid's CRS ({crs})")
            elif not by_values:
                comment.append(f"columns {found.x}/{found.y} read as longitude/latitude ({crs})")
    if found.id is not None:
        section["id"] = found.id
    return section


_HEADER = """\
# Study config written by `gkdcn init` from the files in this folder.
# Every guess is stated beside its setting: check them, then run `gkdcn prepare {name}`.
# Paths are relative to this file's folder. Every setting: docs/config.md (gkdcn.config).
# Settings not written here take their defaults (window 9, site split, 60 epochs, ...).
"""


def render_toml(discovery: Discovery, file_name: str = "study.toml") -> str:
    """The commented TOML text of a discovery (:func:`gkdcn.io.toml.to_toml` for the values,
    comments around them)."""
    config = discovery.config
    parts = [_HEADER.format(name=file_name)]
    scalars = {k: v for k, v in config.items() if not isinstance(v, dict)}
    parts.append(to_toml(scalars))
    for key, value in config.items():
        if not isinstance(value, dict):
            continue
        if key == "sites":
            for sub, table in value.items():
                parts.append(_block(f"sites.{sub}", {"sites": {sub: table}}, discovery))
        else:
            parts.append(_block(key, {key: value}, discovery))
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def _block(key: str, data: dict[str, Any], discovery: Discovery) -> str:
    lines = [f"# {line}" for line in discovery.comments.get(key, [])]
    return "\n".join([*lines, to_toml(data).strip("\n")])


def found_inputs(discovery: Discovery) -> list[Path]:
    """Every existing file or folder the guessed config names (the inputs it will read)."""
    found: list[Path] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str) and value:
            with contextlib.suppress(OSError, ValueError):
                path = discovery.folder / value
                # The folder itself (elements in ".") holds the config by design: not an input.
                if path.exists() and path.resolve() != discovery.folder.resolve():
                    found.append(path)

    visit(discovery.config)
    return found


def write_study(
    discovery: Discovery, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write the commented config (default ``<folder>/study.toml``), checked by
    :func:`gkdcn.config.load_config` before it is moved into place."""
    path = Path(out) if out is not None else discovery.folder / "study.toml"
    check_writable(path, overwrite, inputs=found_inputs(discovery))
    if path.parent.resolve() != discovery.folder:
        # Paths in the config are relative to its folder: rebase them.
        raise GkdcnError(
            f"{path}: the config must be written into {discovery.folder} (its paths are "
            "relative to that folder)"
        )
    text = render_toml(discovery, path.name)
    with atomic_path(path, overwrite, inputs=found_inputs(discovery)) as tmp:
        tmp.write_text(text, encoding="utf-8")
        load_config(tmp)  # round trip: what we write must load
    return path
