"""GeoTIFF input and output on the element grid, and the one alignment rule for every other raster.

Every raster a study uses (element layers, label rasters, knowledge weights) is brought onto the
**element grid** (the grid of the first element layer) by :func:`read_layer_on_grid` or, lazily
and window by window, by :class:`ElementSource`. A raster whose grid differs is handled by the
study's ``align`` setting:

- ``"strict"``: refuse, naming the file and what differs;
- ``"resample"``: warp it onto the element grid (the footprints must overlap);
- ``"index"``: ignore its header and line it up by array index from the top-left cell (what the
  GK-DCN authors' code does with the Tianshan rasters), cropping or padding with NaN; an
  :class:`AlignmentWarning` says by how much the header is ignored.

Invalid cells (the raster's nodata, internal masks, non-finite values) come back as NaN.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.shutil import copy as rio_copy
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from gkdcn.config import Align
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.qml import QmlStyle, area_class_style, qml_path, write_qml

ResamplingName = Literal["nearest", "bilinear"]

_TIF_SUFFIXES = (".tif", ".tiff")
#: How a study config brings a raster of another grid onto the element grid (its `align`).
ALIGN_HINT = (
    'set align = "resample" to warp it onto the element grid (footprints must overlap) '
    'or align = "index" to line it up by array index from the top-left cell'
)


class AlignmentWarning(UserWarning):
    """A raster was lined up by array index although its georeferenced header says otherwise."""


class NodataWarning(UserWarning):
    """A layer holds float sentinels (|value| >= 1e30) that no nodata declares; read as nodata."""


#: Values this large are "no value" markers in float rasters, never data (e.g. -3.4e38).
SENTINEL = 1e30
#: Key of a per-layer nodata table that applies to the layers it does not name.
NODATA_DEFAULT_KEY = "default"


@contextlib.contextmanager
def quiet_gdal() -> Iterator[None]:
    """Keep GDAL's own messages (``ERROR 4: ...``, logged by rasterio and pyogrio) off stderr.

    Every GDAL failure that matters also raises, and is reported as one line naming the file;
    the loggers' levels are restored on exit.
    """
    loggers = [logging.getLogger(name) for name in ("rasterio", "pyogrio", "fiona")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def layer_names(path: str | Path) -> list[str]:
    """The layer names an element folder or multi-band GeoTIFF offers (sorted; nothing opened
    but the one file's header)."""
    path = Path(path)
    if path.is_dir():
        return sorted(_layer_files(path))
    with _open(path) as ds:
        return sorted(d for d in ds.descriptions if d)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _open(path: Path) -> DatasetReader:
    """Open a raster, turning every GDAL complaint into a one-line InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a GeoTIFF file")
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read as a raster ({_first_line(exc)})") from None


def _grid_of_dataset(ds: DatasetReader) -> Grid:
    return Grid(crs=ds.crs, transform=ds.transform, height=ds.height, width=ds.width)


def grid_of(path: str | Path) -> Grid:
    """The grid (CRS, transform, shape) of a raster file."""
    with _open(Path(path)) as ds:
        return _grid_of_dataset(ds)


def _window_bounds(window: Window | None, grid: Grid) -> tuple[int, int, int, int]:
    """(row0, col0, height, width) of a window that must lie on the grid."""
    if window is None:
        return 0, 0, grid.height, grid.width
    r0, c0 = round(window.row_off), round(window.col_off)
    h, w = round(window.height), round(window.width)
    if r0 < 0 or c0 < 0 or h < 0 or w < 0 or r0 + h > grid.height or c0 + w > grid.width:
        raise ValueError(f"window {window} does not lie on the {grid.height} x {grid.width} grid")
    return r0, c0, h, w


def _result_dtype(ds: DatasetReader) -> type[np.floating]:
    # float32 holds every uint8/int16/float32 value exactly; wider types keep float64.
    wide = {"float64", "int32", "uint32", "int64", "uint64"}
    return np.float64 if any(dt in wide for dt in ds.dtypes) else np.float32


class _FileReader:
    """Reads bands of one raster file on the element grid, window by window, NaN for invalid."""

    def __init__(
        self,
        path: Path,
        grid: Grid,
        align: Align,
        resampling: ResamplingName,
        check_overlap: bool = True,
        codes: Mapping[int, float] | None = None,
        ranges: Mapping[int, tuple[float, float]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        # Declared no-value codes and valid ranges by band, on top of the file's own nodata.
        self.codes = dict(codes or {})
        self.ranges = dict(ranges or {})
        self.ds = _open(self.path)
        self.vrt: WarpedVRT | None = None
        try:
            own = _grid_of_dataset(self.ds)
            self.dtype = _result_dtype(self.ds)
            self.mode: Literal["direct", "index", "warp"]
            differences = grid.differences(own)
            if not differences:
                self.mode = "direct"
            elif align == "strict":
                raise InputError(
                    self.path,
                    f"grid differs from the element grid ({'; '.join(differences)}); {ALIGN_HINT}",
                )
            elif align == "index":
                self.mode = "index"
                warnings.warn(_index_message(self.path, own, grid), AlignmentWarning, stacklevel=4)
            else:
                self.mode = "warp"
                self.vrt = self._warped_vrt(own, resampling, check_overlap)
        except BaseException:
            self.close()
            raise

    def _warped_vrt(self, own: Grid, resampling: ResamplingName, check_overlap: bool) -> WarpedVRT:
        grid = self.grid
        if (own.crs is None) != (grid.crs is None):
            which = "the file" if own.crs is None else "the element grid"
            raise InputError(self.path, f"cannot resample: {which} has no CRS")
        if own.crs is not None and grid.crs is not None and own.crs != grid.crs:
            try:
                left, bottom, right, top = transform_bounds(own.crs, grid.crs, *own.bounds)
            except (RasterioError, ValueError) as exc:
                raise InputError(self.path, f"cannot reproject ({_first_line(exc)})") from None
            footprint = (left, bottom, right, top)
        else:
            footprint = own.bounds
        g = grid.bounds
        overlap = (
            footprint[0] < g[2]
            and g[0] < footprint[2]
            and footprint[1] < g[3]
            and g[1] < footprint[3]
        )
        if check_overlap and not overlap:
            raise InputError(
                self.path,
                f"footprint {_fmt_bounds(footprint)} does not overlap the element grid "
                f"{_fmt_bounds(g)}: nothing to resample",
            )
        # GDAL needs a CRS to warp; two CRS-less grids share an (arbitrary) projected frame.
        dst_crs = grid.crs if grid.crs is not None else CRS.from_epsg(3857)
        kwargs: dict[str, object] = {}
        if own.crs is None:
            kwargs["src_crs"] = dst_crs
            kwargs["src_transform"] = own.transform
        if self.ds.count == 1 and 1 in self.codes:
            # Declared codes must not be blended into their neighbours by the resampling.
            kwargs["src_nodata"] = self.codes[1]
        try:
            return WarpedVRT(
                self.ds,
                crs=dst_crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling[resampling],
                nodata=np.nan,
                dtype="float64" if self.dtype is np.float64 else "float32",
                **kwargs,
            )
        except (RasterioError, ValueError) as exc:
            raise InputError(self.path, f"cannot resample ({_first_line(exc)})") from None

    @property
    def count(self) -> int:
        return int(self.ds.count)

    def read(self, bands: Sequence[int], window: Window | None = None) -> np.ndarray:
        """(len(bands), h, w) array on the element grid, NaN where invalid."""
        r0, c0, h, w = _window_bounds(window, self.grid)
        out = np.full((len(bands), h, w), np.nan, dtype=self.dtype)
        if h == 0 or w == 0:
            return out
        try:
            if self.mode == "warp":
                assert self.vrt is not None
                data = self.vrt.read(list(bands), window=Window(c0, r0, w, h))
                out[:] = data
                if self.vrt.nodata is None or not math.isnan(self.vrt.nodata):
                    out[data == self.vrt.nodata] = np.nan
            elif self.mode == "direct":
                self._read_native(bands, r0, c0, h, w, out)
            else:
                # Index alignment: the element-grid window maps to the same array indices here.
                hh = min(h, self.ds.height - r0)
                ww = min(w, self.ds.width - c0)
                if hh > 0 and ww > 0:
                    self._read_native(bands, r0, c0, hh, ww, out[:, :hh, :ww])
        except (RasterioError, OSError) as exc:
            raise InputError(self.path, f"cannot read ({_first_line(exc)})") from None
        for i, band in enumerate(bands):
            if band in self.codes:
                out[i][out[i] == out.dtype.type(self.codes[band])] = np.nan
            if band in self.ranges:
                low, high = self.ranges[band]
                with np.errstate(invalid="ignore"):
                    out[i][(out[i] < low) | (out[i] > high)] = np.nan
        with np.errstate(invalid="ignore"):
            out[~np.isfinite(out) | (np.abs(out) >= SENTINEL)] = np.nan
        return out

    def count_outside(self, band: int, step: int = 512) -> int:
        """Valid cells of ``band`` outside its declared valid range (0 when none is declared)."""
        if band not in self.ranges:
            return 0
        low, high = self.ranges[band]
        saved, self.ranges = self.ranges, {}
        count = 0
        try:
            for r0 in range(0, self.grid.height, step):
                win = Window(0, r0, self.grid.width, min(step, self.grid.height - r0))
                data = self.read([band], win)[0]
                with np.errstate(invalid="ignore"):
                    count += int(((data < low) | (data > high)).sum())
        finally:
            self.ranges = saved
        return count

    def scan(self, band: int, step: int = 512) -> tuple[int, float, float, int]:
        """One pass over the file's own cells of ``band``, for the notes at open time.

        Returns ``(sentinels, example, code, code_count)``: the cells holding |value| >= 1e30
        that no nodata declares (float bands only) and one such value; and the most common
        undeclared negative value with its count when it looks like a no-value code (one value
        on at least 10 cells and 0.5 % of the layer, and most of its negative cells), else NaN, 0.
        """
        floating = np.issubdtype(np.dtype(self.ds.dtypes[band - 1]), np.floating)
        declared = [c for c in (self.ds.nodata, self.codes.get(band)) if c is not None]
        count, example = 0, math.nan
        negatives: dict[float, int] = {}
        for r0 in range(0, self.ds.height, step):
            win = Window(0, r0, self.ds.width, min(step, self.ds.height - r0))
            try:
                data = self.ds.read(band, window=win)
            except (RasterioError, OSError) as exc:
                raise InputError(self.path, f"cannot read ({_first_line(exc)})") from None
            keep = np.ones(data.shape, dtype=bool)
            for code in declared:
                if not math.isnan(code):
                    native = _native_nodata(code, data.dtype)
                    if native is not None:
                        keep &= data != native
            with np.errstate(invalid="ignore"):
                big = np.abs(data) >= SENTINEL if floating else np.zeros(data.shape, bool)
                hit = keep & np.isfinite(data) & big
                negative = keep & (data < 0) & ~big
            n = int(hit.sum())
            if n:
                count += n
                example = float(data[hit][0]) if math.isnan(example) else example
            if negative.any() and len(negatives) < 10_000:
                values, counts = np.unique(data[negative], return_counts=True)
                for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                    negatives[v] = negatives.get(v, 0) + c
        code, code_count = math.nan, 0
        if negatives:
            value, top = max(negatives.items(), key=lambda item: item[1])
            cells = self.ds.height * self.ds.width
            if top >= max(10, 0.005 * cells) and top > 0.5 * sum(negatives.values()):
                code, code_count = float(value), int(top)
        return count, example, code, code_count

    def _read_native(
        self, bands: Sequence[int], r0: int, c0: int, h: int, w: int, out: np.ndarray
    ) -> None:
        win = Window(c0, r0, w, h)
        data = self.ds.read(list(bands), window=win)
        out[:] = data
        nodata = self.ds.nodata
        if nodata is not None and not math.isnan(nodata):
            # Compare in the file's own dtype: a float32 nodata like -3.4028235e38 is stored
            # rounded, so comparing against the header's float64 value would miss it.
            native = _native_nodata(nodata, data.dtype)
            if native is not None:
                out[data == native] = np.nan
        for i, band in enumerate(bands):
            flags = self.ds.mask_flag_enums[band - 1]
            if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
                mask = self.ds.read_masks(band, window=win)
                out[i][mask == 0] = np.nan

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()
            self.vrt = None
        self.ds.close()


def _native_nodata(nodata: float, dtype: np.dtype) -> np.generic | None:
    """The nodata value as the file stores it, or None when no cell of that dtype can hold it."""
    if np.issubdtype(dtype, np.floating):
        with np.errstate(over="ignore"):
            return dtype.type(nodata)
    info = np.iinfo(dtype)
    if float(nodata).is_integer() and info.min <= nodata <= info.max:
        return dtype.type(int(nodata))
    return None


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return f"({b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, {b[3]:.6g})"


def _index_message(path: Path, own: Grid, grid: Grid) -> str:
    dx = own.transform.c - grid.transform.c
    dy = own.transform.f - grid.transform.f
    cw, ch = grid.cell_size
    shape = ""
    if own.shape != grid.shape:
        bigger = own.height >= grid.height and own.width >= grid.width
        smaller = own.height <= grid.height and own.width <= grid.width
        how = "cropped" if bigger else "padded with nodata" if smaller else "cropped and padded"
        shape = f"; its {own.height} x {own.width} cells are {how} to {grid.height} x {grid.width}"
    other = [d for d in grid.differences(own) if not d.startswith(("origin", "shape"))]
    extra = f"; also ignored: {', '.join(other)}" if other else ""
    return (
        f'{path}: header ignored (align = "index"): lined up by array index from the top-left '
        f"cell although its header puts that cell {dx:+.6g}, {dy:+.6g} map units "
        f"({dx / cw:+.3g} columns, {-dy / ch:+.3g} rows) from the element grid's{shape}{extra}"
    )


def read_layer_on_grid(
    path: str | Path,
    grid: Grid,
    align: Align,
    resampling: ResamplingName = "bilinear",
    band: int = 1,
) -> np.ndarray:
    """Read one band of a raster onto ``grid`` by the alignment rule; ``(H, W)`` with NaN invalid.

    Use ``resampling="nearest"`` for labels and weights, ``"bilinear"`` for continuous layers
    (only used with ``align="resample"``). float32 unless the file holds wider values.
    """
    reader = _FileReader(Path(path), grid, align, resampling)
    try:
        if not 1 <= band <= reader.count:
            raise InputError(path, f"has {reader.count} band(s); band {band} requested")
        return reader.read([band])[0]
    finally:
        reader.close()


class ElementSource:
    """Element layers on the element grid, read lazily window by window.

    Datasets are opened once; :meth:`read` reads only the requested window of every layer, so a
    large grid can be streamed block by block. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        names: list[str],
        grid: Grid,
        paths: list[Path],
        readers: list[tuple[_FileReader, list[int], list[int]]],
    ) -> None:
        self.names = names
        self.grid = grid
        self.paths = paths
        # (reader, band indexes in the file, channel positions in the output)
        self._readers = readers

    @property
    def count(self) -> int:
        """Number of channels."""
        return len(self.names)

    def read(self, window: Window | None = None) -> np.ndarray:
        """``(C, h, w)`` float32 for ``window`` (whole grid if None), NaN where invalid."""
        r0, c0, h, w = _window_bounds(window, self.grid)
        out = np.empty((len(self.names), h, w), dtype=np.float32)
        win = Window(c0, r0, w, h)
        for reader, bands, positions in self._readers:
            out[positions] = reader.read(bands, win)
        return out

    def valid(self, window: Window | None = None) -> np.ndarray:
        """``(h, w)`` bool: cells where every channel is finite."""
        return np.isfinite(self.read(window)).all(axis=0)

    def close(self) -> None:
        """Close every open dataset."""
        for reader, _, _ in self._readers:
            reader.close()

    def __enter__(self) -> ElementSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ArraySource(ElementSource):
    """An in-memory ``(C, H, W)`` stack behind the :class:`ElementSource` interface.

    Lets code written for streamed files (prediction) run on a study already in memory.
    """

    def __init__(self, raw: np.ndarray, names: Sequence[str], grid: Grid) -> None:
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[0] != len(names) or raw.shape[1:] != grid.shape:
            raise GkdcnError(
                f"array of shape {raw.shape} does not fit {len(names)} layers on the "
                f"{grid.height} x {grid.width} grid"
            )
        super().__init__(list(names), grid, [], [])
        self._raw = raw

    def read(self, window: Window | None = None) -> np.ndarray:
        """``(C, h, w)`` float32 copy of the window, NaN where invalid."""
        r0, c0, h, w = _window_bounds(window, self.grid)
        out = self._raw[:, r0 : r0 + h, c0 : c0 + w].astype(np.float32, copy=True)
        out[~np.isfinite(out)] = np.nan
        return out


def read_probability_map(
    path: str | Path, band: int | str = "probability"
) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Read a probability map: ``(prob, valid, grid)``, prob float32 with NaN on invalid cells.

    ``band`` is a band description (default "probability", falling back to band 1 when no band
    carries it) or a 1-based band number. Values on valid cells must lie in [0, 1].
    """
    path = Path(path)
    with _open(path) as ds:
        grid = _grid_of_dataset(ds)
        descriptions = list(ds.descriptions)
        count = ds.count
    if isinstance(band, str):
        index = descriptions.index(band) + 1 if band in descriptions else 1
    else:
        index = band
    if not 1 <= index <= count:
        raise InputError(path, f"has {count} band(s); band {index} requested")
    prob = read_layer_on_grid(path, grid, "strict", "nearest", band=index).astype(np.float32)
    valid = np.isfinite(prob)
    if not valid.any():
        raise InputError(path, "no valid cell in the probability map")
    low, high = float(prob[valid].min()), float(prob[valid].max())
    if low < 0 or high > 1:
        raise InputError(
            path, f"not a probability map: values {low:.6g} .. {high:.6g} lie outside [0, 1]"
        )
    return prob, valid, grid


def _layer_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        # Dotfiles are temporaries (ours, editors', macOS resource forks), never layers.
        if entry.name.startswith(".") or entry.suffix.lower() not in _TIF_SUFFIXES:
            continue
        if entry.stem in files:
            raise InputError(
                folder,
                f"two files give layer '{entry.stem}': {files[entry.stem].name} and {entry.name}",
            )
        files[entry.stem] = entry
    if not files:
        raise InputError(folder, "no .tif files in the folder")
    return files


def _order(available: list[str], layers: list[str], exclude: list[str], where: Path) -> list[str]:
    unknown = [name for name in exclude if name not in available]
    if unknown:
        raise InputError(where, f"exclude names unknown layers: {', '.join(unknown)}")
    if layers:
        missing = [name for name in layers if name not in available]
        if missing:
            raise InputError(
                where,
                f"layers not found: {', '.join(missing)} "
                f"(available: {', '.join(sorted(available))})",
            )
        dupes = sorted({name for name in layers if layers.count(name) > 1})
        if dupes:
            raise InputError(where, f"layers listed twice: {', '.join(dupes)}")
        order = list(layers)
    else:
        # Plain code-point sort of the names: reproduces the authors' channel order.
        order = sorted(available)
    order = [name for name in order if name not in exclude]
    if not order:
        raise InputError(where, "no element layers left after 'exclude'")
    return order


#: What :func:`check_valid_cells` says by default: the study's layers share no valid cell.
NO_COMMON_CELL = "no cell has a value in every layer (their valid areas do not overlap)"


def check_valid_cells(
    data: np.ndarray | ElementSource,
    where: str | Path,
    problem: str = NO_COMMON_CELL,
    *,
    block_rows: int = 256,
) -> None:
    """The one rule of every stack gkdcn maps and every raster it writes: some cell is valid.

    ``data`` is a ``(H, W)`` bool mask of valid cells, a ``(C, H, W)`` array (a cell is valid
    where every band is finite) or an :class:`ElementSource`, read ``block_rows`` rows at a
    time until the first valid cell (one pass over the layers when there is none). Raises
    :class:`InputError` ``where: problem`` when no cell is valid, e.g. layers whose valid
    areas do not overlap, which would otherwise give an all-nodata map.
    """
    if isinstance(data, ElementSource):
        grid = data.grid
        for r0 in range(0, grid.height, block_rows):
            rows = min(block_rows, grid.height - r0)
            if data.valid(Window(0, r0, grid.width, rows)).any():
                return
    else:
        array = np.asarray(data)
        valid = array if array.dtype == bool else np.isfinite(array)
        if valid.ndim == 3:
            valid = valid.all(axis=0)
        if valid.any():
            return
    raise InputError(where, problem)


def is_georeferenced(grid: Grid) -> bool:
    """Whether a grid has a CRS or a geotransform (rasterio gives a plain TIFF without either
    the identity transform: cells of 1 x 1 "units" from (0, 0))."""
    return grid.crs is not None or grid.transform != Affine.identity()


def _check_not_empty(reader: _FileReader, band: int, name: str, grid: Grid) -> None:
    """Refuse a layer with no valid cell on the element grid; cheap when the layer has data."""
    step = 256
    for r0 in range(0, grid.height, step):
        for c0 in range(0, grid.width, step):
            win = Window(c0, r0, min(step, grid.width - c0), min(step, grid.height - r0))
            if np.isfinite(reader.read([band], win)).any():
                return
    raise InputError(
        reader.path, f"layer '{name}' has no valid cell on the element grid (all nodata)"
    )


def layer_nodata(
    nodata: float | Mapping[str, float] | None, available: Sequence[str], where: Path
) -> dict[str, float]:
    """Declared no-value code per layer name from a config's ``elements.nodata``.

    ``nodata`` is one number for every layer, or a table by layer name whose key ``"default"``
    applies to the layers it does not name. A name that is no layer is a one-line error.
    """
    if nodata is None:
        return {}
    if not isinstance(nodata, Mapping):
        return {name: float(nodata) for name in available}
    return {
        name: float(code) for name, code in _per_layer(nodata, available, where, "nodata").items()
    }


def _per_layer(
    table: Mapping[str, Any], available: Sequence[str], where: Path, key: str
) -> dict[str, Any]:
    """A config table by layer name (key ``"default"`` for the layers it does not name) as
    one entry per named or defaulted layer; a name that is no layer is a one-line error."""
    unknown = [k for k in table if k != NODATA_DEFAULT_KEY and k not in available]
    if unknown:
        raise InputError(
            where,
            f"elements.{key} names unknown layers: {', '.join(unknown)} "
            f"(available: {', '.join(sorted(available))})",
        )
    default = table.get(NODATA_DEFAULT_KEY)
    out = {name: table[name] for name in available if name in table}
    if default is not None:
        out = {name: out.get(name, default) for name in available}
    return out


def _warn_sentinels(reader: _FileReader, band: int, name: str) -> None:
    count, example, code, code_count = reader.scan(band)
    if code_count:
        warnings.warn(
            f"{reader.path}: layer '{name}': {code_count} cells hold {code:g}, which looks like a "
            f"no-value code; if it is one, declare it: [elements] nodata = {{ {name} = {code:g} }}",
            NodataWarning,
            stacklevel=3,
        )
    if count:
        warnings.warn(
            f"{reader.path}: layer '{name}': {count} cells hold {example:.3g} "
            "(|value| >= 1e30, a float no-value marker) that no nodata declares; read as nodata",
            NodataWarning,
            stacklevel=3,
        )
    outside = reader.count_outside(band)
    if outside:
        low, high = reader.ranges[band]
        warnings.warn(
            f"{reader.path}: layer '{name}': {outside} cells outside its valid range "
            f"[{low:g}, {high:g}]; read as nodata",
            NodataWarning,
            stacklevel=3,
        )


def layer_ranges(
    ranges: Mapping[str, tuple[float, float]] | None, available: Sequence[str], where: Path
) -> dict[str, tuple[float, float]]:
    """Valid range per layer name from a config's ``elements.valid_range`` (key ``"default"``
    for the layers it does not name); a name that is no layer is a one-line error."""
    if not ranges:
        return {}
    out = _per_layer(ranges, available, where, "valid_range")
    return {name: (float(r[0]), float(r[1])) for name, r in out.items()}


# GDAL block cache while open_elements checks the layers (one pass each: a larger cache only
# keeps blocks that are not read again).
SCAN_CACHE_BYTES = 16 << 20


def open_elements(
    path: str | Path,
    layers: Sequence[str] = (),
    exclude: Sequence[str] = (),
    align: Align = "strict",
    nodata: float | Mapping[str, float] | None = None,
    valid_range: Mapping[str, tuple[float, float]] | None = None,
) -> ElementSource:
    """Open element layers: a folder of single-band GeoTIFFs (name = file stem) or one multi-band
    GeoTIFF whose band descriptions name the layers.

    Channel order is ``layers`` when given, else the sorted names. The first layer in that order
    defines the element grid; others are aligned to it by ``align`` (see the module docstring).
    ``nodata`` declares no-value codes besides each file's own (see :func:`layer_nodata`); float
    sentinels (|value| >= 1e30) are always nodata, with a :class:`NodataWarning` naming the layer
    and the count where nothing declares them; values outside a layer's ``valid_range``
    (see :func:`layer_ranges`) are nodata too, with a warning giving the count.
    """
    path = Path(path)
    layers = list(layers)
    exclude = list(exclude)
    if not path.exists():
        raise InputError(path, "element data not found (expected a GeoTIFF folder or file)")
    opened: list[_FileReader] = []
    try:
        if path.is_dir():
            files = _layer_files(path)
            order = _order(list(files), layers, exclude, path)
            codes = layer_nodata(nodata, list(files), path)
            limits = layer_ranges(valid_range, list(files), path)
            first = _open(files[order[0]])
            grid = _grid_of_dataset(first)
            first.close()
            readers: list[tuple[_FileReader, list[int], list[int]]] = []
            for pos, name in enumerate(order):
                reader = _FileReader(
                    files[name], grid, align, "bilinear",
                    codes={1: codes[name]} if name in codes else None,
                    ranges={1: limits[name]} if name in limits else None,
                )  # fmt: skip
                opened.append(reader)
                if reader.count != 1:
                    raise InputError(
                        files[name],
                        f"has {reader.count} bands; "
                        "a folder of element layers needs single-band files",
                    )
                readers.append((reader, [1], [pos]))
            paths = [files[name] for name in order]
        else:
            reader = _FileReader(path, grid_of(path), "strict", "bilinear")
            opened.append(reader)
            grid = reader.grid
            descriptions = list(reader.ds.descriptions)
            if reader.count == 1 and not descriptions[0]:
                descriptions = [path.stem]
            if any(not d for d in descriptions):
                raise InputError(
                    path,
                    "bands have no descriptions: a multi-band element file needs band descriptions "
                    "naming the layers (or use a folder of single-band GeoTIFFs)",
                )
            dupes = sorted({d for d in descriptions if descriptions.count(d) > 1})
            if dupes:
                raise InputError(path, f"band descriptions repeat: {', '.join(dupes)}")
            order = _order(descriptions, layers, exclude, path)
            codes = layer_nodata(nodata, descriptions, path)
            reader.codes = {descriptions.index(n) + 1: code for n, code in codes.items()}
            limits = layer_ranges(valid_range, descriptions, path)
            reader.ranges = {descriptions.index(n) + 1: r for n, r in limits.items()}
            bands = [descriptions.index(name) + 1 for name in order]
            readers = [(reader, bands, list(range(len(order))))]
            paths = [path] * len(order)
        # The open-time checks read every layer once; through GDAL's default block cache (5 %
        # of RAM) their blocks would stay in memory after them: 0.64 GB for a 2000 x 2000 x 39
        # grid before a map's streaming prediction had read a row.
        with rasterio.Env(GDAL_CACHEMAX=SCAN_CACHE_BYTES):
            for reader, bands, positions in readers:
                for band, pos in zip(bands, positions, strict=True):
                    _warn_sentinels(reader, band, order[pos])
                    _check_not_empty(reader, band, order[pos], grid)
    except BaseException:
        for reader in opened:
            reader.close()
        raise
    return ElementSource(order, grid, paths, readers)


def write_geotiff(
    path: str | Path,
    bands: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None,
    descriptions: Sequence[str] | None = None,
    tags: Sequence[Mapping[str, str]] | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
    overviews: bool = False,
    cog: bool = False,
    style: QmlStyle | None = None,
) -> None:
    """Write ``(B, H, W)`` or ``(H, W)`` bands on ``grid`` as a GeoTIFF, atomically.

    DEFLATE-compressed, tiled in 256-cell blocks when the raster is big enough, band descriptions,
    per-band metadata ``tags`` (e.g. ``{"unit": "ppm"}``) and nodata set. Non-finite cells are
    written as ``nodata`` whenever it is a number, so GIS tools see one nodata value.

    ``overviews`` adds internal overviews (averages, halving until under 256 cells) to rasters
    larger than 256 cells, so large maps pan fast; ``cog`` writes a Cloud-Optimized GeoTIFF
    (GDAL's COG driver, overviews included); ``style`` also writes a QGIS ``.qml`` beside it.
    """
    path = Path(path)
    if style is not None:
        check_writable(qml_path(path), overwrite)
    data = np.asarray(bands)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3 or data.shape[1:] != grid.shape:
        raise ValueError(
            f"{path}: bands of shape {np.asarray(bands).shape} do not fit the "
            f"{grid.height} x {grid.width} grid"
        )
    for what, per_band in (("descriptions", descriptions), ("tag sets", tags)):
        if per_band is not None and len(per_band) != data.shape[0]:
            raise ValueError(f"{path}: {len(per_band)} {what} for {data.shape[0]} bands")
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer) and nodata is not None and math.isnan(nodata):
        raise ValueError(f"{path}: NaN nodata needs a float dtype, not {dtype}")
    if np.issubdtype(data.dtype, np.floating):
        missing = ~np.isfinite(data)
        if missing.any():
            if nodata is None and np.issubdtype(target, np.integer):
                raise ValueError(f"{path}: NaN cells but no nodata value for {dtype}")
            if nodata is not None and not math.isnan(nodata):
                data = np.where(missing, nodata, data)
    # A raster of nodata only is no result: refuse it rather than write an empty map.
    floating = np.issubdtype(data.dtype, np.floating)
    written = np.isfinite(data) if floating else np.ones(data.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        written &= data != nodata
    check_valid_cells(
        np.asarray(written.any(axis=0)), path, "would hold no valid cell (every cell nodata)"
    )
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": grid.height,
        "width": grid.width,
        "count": data.shape[0],
        "dtype": target.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if np.issubdtype(target, np.floating) else 2,
        "BIGTIFF": "IF_SAFER",
    }
    # Always tiled (GIS software reads a window of a tiled file without whole strips): 256 x 256
    # tiles, or for a small grid the smallest multiple of 16 (TIFF's rule) that covers it.
    block = min(256, 16 * math.ceil(max(grid.height, grid.width) / 16))
    profile.update(tiled=True, blockxsize=block, blockysize=block)
    factors = _overview_factors(grid) if overviews and not cog else []
    with atomic_path(path, overwrite) as tmp:
        plain = tmp.with_name(f"{tmp.stem}.plain.tif") if cog else tmp
        try:
            with rasterio.open(plain, "w", **profile) as dst:
                dst.write(data.astype(target, copy=False))
                if descriptions is not None:
                    for i, text in enumerate(descriptions, start=1):
                        dst.set_band_description(i, str(text))
                if tags is not None:
                    for i, band_tags in enumerate(tags, start=1):
                        if band_tags:
                            dst.update_tags(i, **band_tags)
                if factors:
                    dst.build_overviews(factors, Resampling.average)
                    dst.update_tags(ns="rio_overview", resampling="average")
            if cog:
                rio_copy(
                    plain, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                    OVERVIEWS="IF_NEEDED", RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER",
                )  # fmt: skip
        except (RasterioError, OSError) as exc:
            raise GkdcnError(f"{path}: cannot write ({_first_line(exc)})") from None
        finally:
            if cog:
                plain.unlink(missing_ok=True)
    if style is not None:
        try:
            write_qml(path, style, overwrite=overwrite)
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def _overview_factors(grid: Grid, smallest: int = 256) -> list[int]:
    """Overview decimation factors 2, 4, 8, ... until the overview fits in ``smallest`` cells."""
    factors: list[int] = []
    factor = 2
    while max(grid.height, grid.width) / (factor / 2) > smallest:
        factors.append(factor)
        factor *= 2
    return factors


#: The nodata value of every probability GeoTIFF gkdcn writes (in memory: NaN).
PROBABILITY_NODATA = -9999.0


def write_probability_map(
    path: str | Path,
    bands: np.ndarray,
    grid: Grid,
    *,
    descriptions: Sequence[str] = ("probability",),
    overwrite: bool = False,
    cog: bool = False,
    style: Literal["area", "ramp"] = "area",
) -> Path:
    """Write probability bands (``(H, W)`` or ``(B, H, W)``, NaN = no data) as float32 GeoTIFF
    with nodata :data:`PROBABILITY_NODATA`: the one convention of every probability map.

    QGIS-ready: internal overviews (``cog``: a Cloud-Optimized GeoTIFF instead) and a ``.qml``
    style beside it for band 1, nodata transparent: ``style="area"`` the top 1 / 2 / 5 / 10 /
    20 % of the mapped area as classes (:func:`gkdcn.io.qml.area_class_style`), ``"ramp"`` a
    0-1 colour ramp.
    """
    data = np.asarray(bands, dtype=np.float32)
    first = data if data.ndim == 2 else data[0]
    mapped = np.where(first == PROBABILITY_NODATA, np.nan, first)
    name = str(descriptions[0])
    qml = area_class_style(name, mapped) if style == "area" else QmlStyle(name, 0.0, 1.0)
    write_geotiff(
        path,
        data,
        grid,
        nodata=PROBABILITY_NODATA,
        descriptions=list(descriptions),
        overwrite=overwrite,
        overviews=True,
        cog=cog,
        style=qml,
    )
    return Path(path)
