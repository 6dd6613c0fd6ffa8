"""The element grid: CRS, affine transform and shape, and conversions between cells and map units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid. Cell (row, col) covers ``transform * (col, row)`` .. ``(col+1, row+1)``."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in cells."""
        return (self.height, self.width)

    @property
    def cell_size(self) -> tuple[float, float]:
        """(cell width, cell height) in map units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in map units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    def xy(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of cell centres."""
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        t = self.transform
        x = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
        y = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
        return x, y

    def rowcol(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices containing map coordinates (may lie outside the grid)."""
        inv = ~self.transform
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        cols = inv.a * x + inv.b * y + inv.c
        rows = inv.d * x + inv.e * y + inv.f
        return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)

    def inside(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Boolean mask of indices that fall on the grid."""
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        return (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)

    def differences(self, other: Grid, tolerance: float = 1e-6) -> list[str]:
        """Human-readable list of what differs between two grids (empty when they match)."""
        out: list[str] = []
        if (self.crs is None) != (other.crs is None) or (
            self.crs is not None and other.crs is not None and self.crs != other.crs
        ):
            out.append(f"CRS {_crs_name(other.crs)} vs {_crs_name(self.crs)}")
        if not np.allclose(other.cell_size, self.cell_size, rtol=tolerance, atol=0):
            out.append(f"cell size {_pair(other.cell_size)} vs {_pair(self.cell_size)}")
        cw, ch = self.cell_size
        ox, oy = other.transform.c, other.transform.f
        sx, sy = self.transform.c, self.transform.f
        if abs(ox - sx) > tolerance * cw or abs(oy - sy) > tolerance * ch:
            out.append(f"origin ({ox:.2f}, {oy:.2f}) vs ({sx:.2f}, {sy:.2f})")
        if other.shape != self.shape:
            out.append(f"shape {other.height} x {other.width} vs {self.height} x {self.width}")
        if abs(other.transform.b) > 0 or abs(other.transform.d) > 0:
            out.append("rotated grid")
        return out

    def overlaps(self, other: Grid) -> bool:
        """True when the two footprints share some area (assumes the same CRS)."""
        a = self.bounds
        b = other.bounds
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    def describe(self) -> str:
        """The grid in words: size, cell size, CRS and origin."""
        cw, ch = self.cell_size
        return (
            f"{self.height} x {self.width} cells of {cw:g} x {ch:g}, {_crs_name(self.crs)}, "
            f"origin ({self.transform.c:.2f}, {self.transform.f:.2f})"
        )


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _pair(values: tuple[float, float]) -> str:
    return f"{values[0]:g} x {values[1]:g}"
