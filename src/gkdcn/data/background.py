"""Background (unlabelled) window centres: the valid area away from every deposit of a split.

A network trained on ~10 deposits and ~10 chosen non-deposits has never seen the map it is asked
to rank; most of that map is background. The training recipe therefore adds background windows,
many more than deposits, redrawn every epoch from a **pool** of candidate centres:

- valid cells only (every element present);
- no cell within ``min_distance`` map units of a training deposit: unlabelled cells right next to
  a known deposit are almost surely mineralised, and would teach the network to rank its own
  deposits' halos low;
- no cell within ``max(min_distance, exclusion_radius)`` of a held-out site's deposit: a
  held-out deposit must not be trained on, even as an unlabelled cell;
- no labelled window centre (those are trained with their label already), and no cell of an
  optional ``exclude`` mask (a comparison passes the background cells it scores held-out
  deposits against, so they stay area no model trained on).

The background may hold undiscovered deposits, so the trainer treats it as unlabelled (see
:mod:`gkdcn.models.losses`), not as certain negatives. Draws use the caller's seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gkdcn.errors import GkdcnError

if TYPE_CHECKING:
    from gkdcn.data.samples import SampleSet, Split
    from gkdcn.data.sites import SiteTable
    from gkdcn.io.grid import Grid


@dataclass
class BackgroundPool:
    """Candidate background centres, int64 ``rows``/``cols`` on the element grid."""

    rows: np.ndarray
    cols: np.ndarray

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
        self.cols = np.asarray(self.cols, dtype=np.int64).reshape(-1)
        if self.rows.shape != self.cols.shape:
            raise GkdcnError("background pool rows and cols differ in length")

    def __len__(self) -> int:
        return int(self.rows.size)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` centres, without replacement (with replacement if the pool is smaller)."""
        if len(self) == 0 or n <= 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        pick = rng.choice(len(self), size=n, replace=n > len(self))
        return self.rows[pick], self.cols[pick]


def near_mask(grid: Grid, rows: np.ndarray, cols: np.ndarray, radius: float) -> np.ndarray:
    """``(H, W)`` bool: cells whose centre lies within ``radius`` map units of any given cell.

    The cell itself always counts (radius 0 marks just the cells given). Each point only visits
    the bounding box of its disk, so the cost is points x disk area, not points x map.
    """
    mask = np.zeros(grid.shape, dtype=bool)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        return mask
    cw, ch = grid.cell_size
    # Tolerance so a radius of exactly k cells includes the cell k away despite float roundoff.
    tol = 1e-9 * max(cw, ch)
    dr = int(np.floor((radius + tol) / ch))
    dc = int(np.floor((radius + tol) / cw))
    for r, c in zip(rows, cols, strict=True):
        r0, r1 = max(r - dr, 0), min(r + dr + 1, grid.height)
        c0, c1 = max(c - dc, 0), min(c + dc + 1, grid.width)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        x0, y0 = grid.xy(np.array([r]), np.array([c]))
        x, y = grid.xy(rr, cc)
        mask[r0:r1, c0:c1] |= np.hypot(x - x0[0], y - y0[0]) <= radius + tol
    return mask


def background_pool(
    valid: np.ndarray,
    grid: Grid,
    sites: SiteTable,
    samples: SampleSet,
    split: Split,
    *,
    min_distance: float,
    exclusion_radius: float = 0.0,
    exclude: np.ndarray | None = None,
) -> BackgroundPool:
    """The pool of background centres for one split (rules in the module docstring).

    Training deposits are the deposit sites with a window in ``split.train``; held-out deposits
    are the deposit sites of ``split.held_out`` and any deposit without a training window (a
    deposit the split keeps away from training must not come back as background).
    """
    if min_distance < 0 or exclusion_radius < 0:
        raise GkdcnError("background distances must be >= 0")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != grid.shape:
        raise GkdcnError(f"valid mask {valid.shape} does not match the grid {grid.shape}")
    labels = np.asarray(sites.labels).reshape(-1)
    deposits = np.flatnonzero(labels == 1)
    trained_sites = np.unique(samples.site[split.train]) if len(split.train) else np.zeros(0)
    train_deps = np.intersect1d(deposits, trained_sites)
    held_deps = np.setdiff1d(deposits, train_deps)
    srows, scols = np.asarray(sites.rows), np.asarray(sites.cols)
    blocked = near_mask(grid, srows[train_deps], scols[train_deps], min_distance)
    blocked |= near_mask(
        grid, srows[held_deps], scols[held_deps], max(min_distance, exclusion_radius)
    )
    blocked[samples.rows, samples.cols] = True
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != grid.shape:
            raise GkdcnError(f"exclude mask {exclude.shape} does not match the grid {grid.shape}")
        blocked |= exclude
    rows, cols = np.nonzero(valid & ~blocked)
    return BackgroundPool(rows=rows, cols=cols)
