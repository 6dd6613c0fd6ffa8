"""Training samples: window centres around sites, window cutting with augmentation, and splits.

Sites (deposits and non-deposits, :class:`gkdcn.data.sites.SiteTable`) become samples: each site
contributes the centres of its ``shift x shift`` neighbourhood, optionally times the dihedral
augmentation codes. :func:`extract_windows` cuts ``window x window`` patches around those centres
from the transformed feature stack; the padding rule there is the one the streaming predictor
reuses. Splits say which samples train and which validate:

- ``site``: sites (not windows) are split, stratified by label; no site is on both sides.
- ``window``: the authors' protocol, windows split at random; it leaks (:func:`split_by_window`).
- ``lodo``: leave one deposit out, with an optional exclusion radius around it; for many
  deposits, :func:`grouped_deposit_folds` holds out spatial groups of deposits instead
  (:func:`deposit_folds` chooses).
- ``blocks``: spatial block cross-validation.

Augmentation code ``k`` in 0..7: rotate the spatial axes by ``(k % 4) * 90`` degrees with
``np.rot90(window, k % 4, axes=(-2, -1))`` (counter-clockwise), then, if ``k >= 4``, flip
horizontally (``np.flip(window, axis=-1)``). Code 0 is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from gkdcn.errors import GkdcnError

if TYPE_CHECKING:
    from gkdcn.config import SplitConfig
    from gkdcn.data.sites import SiteTable
    from gkdcn.io.grid import Grid

Padding = Literal["zero", "reflect"]
N_AUG_CODES = 8


@dataclass
class SampleSet:
    """Window centres with labels: one entry per (centre, augmentation) pair.

    ``rows``/``cols`` are int64 centre cells on the element grid, ``labels`` float32 0/1,
    ``site`` int64 index into the :class:`SiteTable` the sample came from, ``aug`` int8 dihedral
    code (module docstring).
    """

    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    site: np.ndarray
    aug: np.ndarray

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
        self.cols = np.asarray(self.cols, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(-1)
        self.site = np.asarray(self.site, dtype=np.int64).reshape(-1)
        self.aug = np.asarray(self.aug, dtype=np.int8).reshape(-1)
        n = self.rows.size
        if not (self.cols.size == self.labels.size == self.site.size == self.aug.size == n):
            raise ValueError(
                "sample arrays differ in length "
                f"(rows {n}, cols {self.cols.size}, labels {self.labels.size}, "
                f"site {self.site.size}, aug {self.aug.size})"
            )
        if np.any((self.aug < 0) | (self.aug >= N_AUG_CODES)):
            raise ValueError("augmentation codes must be in 0..7")

    def __len__(self) -> int:
        return int(self.rows.size)

    def subset(self, indices: np.ndarray | Sequence[int]) -> SampleSet:
        """The samples at ``indices`` (integer indices or a boolean mask), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"mask has shape {idx.shape}, expected ({len(self)},)")
        else:
            idx = idx.astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise IndexError(f"sample index out of range for {len(self)} samples")
        return SampleSet(
            rows=self.rows[idx],
            cols=self.cols[idx],
            labels=self.labels[idx],
            site=self.site[idx],
            aug=self.aug[idx],
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: row, col, label, site, aug."""
        return pd.DataFrame(
            {
                "row": self.rows,
                "col": self.cols,
                "label": self.labels,
                "site": self.site,
                "aug": self.aug,
            }
        )


def aug_codes(rotations: bool, flips: bool) -> np.ndarray:
    """The augmentation codes in use: identity, plus 1..3 with rotations, 4 (5..7) with flips."""
    codes = [0, 1, 2, 3] if rotations else [0]
    if flips:
        codes = codes + [c + 4 for c in codes]
    return np.asarray(codes, dtype=np.int8)


def check_centres(sites: SiteTable, shape: tuple[int, int], shift: int) -> None:
    """Refuse a ``shift`` that makes a study's samples nonsense, before they are made: more
    window centres than the grid has cells, or a cell that is the window centre of a deposit
    and of a non-deposit at once (the same window taught as both). A one-line
    :class:`GkdcnError` naming the key ``samples.shift``."""
    height, width = (int(s) for s in shape)
    n_centres = len(sites) * shift * shift
    if n_centres > height * width:
        raise GkdcnError(
            f"key 'samples.shift': {shift} gives {n_centres} window centres ({len(sites)} "
            f"sites x {shift} x {shift}), more than the grid's {height * width} cells"
        )
    samples = make_samples(sites, (height, width), shift)
    cells = samples.rows * width + samples.cols
    both = np.intersect1d(cells[samples.labels == 1], cells[samples.labels == 0])
    if both.size:
        row, col = divmod(int(both[0]), width)
        raise GkdcnError(
            f"key 'samples.shift': with {shift} x {shift} neighbourhoods {both.size} cell(s) "
            f"are window centres of a deposit and of a non-deposit at once (first: row {row}, "
            f"col {col}); lower samples.shift or keep non-deposits farther from deposits"
        )


def check_trains_on_deposits(samples: SampleSet, split: Split, sites: SiteTable) -> None:
    """Refuse a split whose training side holds no deposit window (leave-one-deposit-out of a
    single deposit, a block fold holding every deposit): it would train on non-deposits only."""
    if not (samples.labels[split.train] == 1).any():
        deposits = int((np.asarray(sites.labels) == 1).sum())
        raise GkdcnError(
            f"the {split.name} split leaves no deposit window to train on ({deposits} "
            "deposit(s) in all): add deposits or use another split"
        )


def make_samples(
    sites: SiteTable,
    shape: tuple[int, int],
    shift: int = 3,
    rotations: bool = False,
    flips: bool = False,
) -> SampleSet:
    """Window centres for every site: its ``shift x shift`` neighbourhood, times augmentations.

    Order: site by site, then ``dr`` from ``-shift//2`` to ``shift//2``, then ``dc``, then the
    augmentation code. Centres beyond the grid are dropped; a site itself must lie on the grid.
    """
    if shift < 1 or shift % 2 == 0:
        raise GkdcnError(f"shift must be a positive odd number of cells, got {shift}")
    height, width = (int(s) for s in shape)
    rows = np.asarray(sites.rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(sites.cols, dtype=np.int64).reshape(-1)
    labels = np.asarray(sites.labels).reshape(-1)
    off = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    if np.any(off):
        first = int(np.flatnonzero(off)[0])
        raise GkdcnError(
            f"{int(off.sum())} site(s) lie outside the {height} x {width} grid "
            f"(first: {sites.ids[first]} at row {rows[first]}, col {cols[first]})"
        )
    half = shift // 2
    offsets = np.arange(-half, half + 1, dtype=np.int64)
    codes = aug_codes(rotations, flips)
    n_sites, n_off, n_aug = rows.size, offsets.size, codes.size
    # Broadcast to (site, dr, dc, aug) and flatten in C order: exactly the documented order.
    full = (n_sites, n_off, n_off, n_aug)
    r = np.broadcast_to(rows[:, None, None, None] + offsets[None, :, None, None], full).ravel()
    c = np.broadcast_to(cols[:, None, None, None] + offsets[None, None, :, None], full).ravel()
    site = np.broadcast_to(np.arange(n_sites, dtype=np.int64)[:, None, None, None], full).ravel()
    aug = np.broadcast_to(codes[None, None, None, :], full).ravel()
    keep = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    return SampleSet(
        rows=r[keep],
        cols=c[keep],
        labels=labels.astype(np.float32)[site[keep]],
        site=site[keep],
        aug=aug[keep],
    )


def padded_index(index: np.ndarray, size: int, padding: Padding) -> tuple[np.ndarray, np.ndarray]:
    """Map cell indices along one axis (possibly beyond ``0..size-1``) to in-grid indices.

    Returns ``(index_in_grid, is_data)``. ``zero``: out-of-grid positions are clamped (their value
    must then be replaced by 0 where ``is_data`` is False). ``reflect``: numpy's ``mode="reflect"``
    (mirror about the edge cell, edge not repeated), repeated for any distance, so
    ``-1 -> 1``, ``size -> size - 2``; ``is_data`` is all True.
    """
    index = np.asarray(index, dtype=np.int64)
    if padding == "zero":
        inside = (index >= 0) & (index < size)
        return np.clip(index, 0, size - 1), inside
    if padding == "reflect":
        if size == 1:
            return np.zeros_like(index), np.ones(index.shape, dtype=bool)
        period = 2 * (size - 1)
        m = np.mod(index, period)
        return np.where(m < size, m, period - m), np.ones(index.shape, dtype=bool)
    raise ValueError(f"unknown padding {padding!r} (use 'zero' or 'reflect')")


def extract_windows(
    features: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    window: int,
    padding: Padding = "zero",
    aug: np.ndarray | None = None,
) -> np.ndarray:
    """Cut ``window x window`` patches around ``(rows, cols)``; returns float32 ``(N, C, w, w)``.

    ``features`` is the **transformed** stack ``(C, H, W)`` (invalid cells already 0). Window cell
    ``(i, j)`` of a centre ``(r, c)`` is map cell ``(r - w//2 + i, c - w//2 + j)``. Cells beyond the
    map edge are, for ``padding="zero"``, 0 (the training mean in transformed space); for
    ``"reflect"``, the value that ``np.pad(features, ..., mode="reflect")`` of the **whole map**
    puts there (:func:`padded_index`), so a window is the same whether cut from the full map or by
    the streaming predictor from a block. The result equals padding the whole map by ``w//2`` and
    slicing. Then augmentation code ``aug[n]`` (module docstring) is applied to sample ``n``.
    Centres must lie on the grid.
    """
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(f"features must be shaped (channels, rows, cols), got {features.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of cells, got {window}")
    if padding not in ("zero", "reflect"):
        raise ValueError(f"unknown padding {padding!r} (use 'zero' or 'reflect')")
    n_channels, height, width = features.shape
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols differ in length ({rows.size} vs {cols.size})")
    off = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    if np.any(off):
        first = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{int(off.sum())} window centre(s) outside the {height} x {width} grid "
            f"(first: row {rows[first]}, col {cols[first]})"
        )
    half = window // 2
    offsets = np.arange(-half, half + 1, dtype=np.int64)
    r_idx, r_ok = padded_index(rows[:, None] + offsets, height, padding)  # (N, w)
    c_idx, c_ok = padded_index(cols[:, None] + offsets, width, padding)
    # Gather on a flat view: one fancy-index for all samples, (C, N, w, w).
    flat = r_idx[:, :, None] * width + c_idx[:, None, :]
    gathered = features.reshape(n_channels, height * width)[:, flat]
    out = np.moveaxis(gathered, 0, 1).astype(np.float32)
    if padding == "zero":
        is_data = r_ok[:, :, None] & c_ok[:, None, :]
        # copyto rather than multiply: a NaN on the edge must not leak into the padding.
        np.copyto(out, np.float32(0), where=~is_data[:, None, :, :])
    if aug is not None:
        aug = np.asarray(aug).reshape(-1)
        if aug.shape != rows.shape:
            raise ValueError(f"aug has {aug.size} codes for {rows.size} windows")
        if np.any((aug < 0) | (aug >= N_AUG_CODES)):
            raise ValueError("augmentation codes must be in 0..7")
        # One vectorised transform per code (at most 8), not per sample.
        for code in np.unique(aug):
            if code == 0:
                continue
            sel = np.flatnonzero(aug == code)
            block = np.rot90(out[sel], int(code) % 4, axes=(-2, -1))
            if code >= 4:
                block = np.flip(block, axis=-1)
            out[sel] = block
    return np.ascontiguousarray(out)


@dataclass
class Split:
    """One train/validation split of a :class:`SampleSet`.

    ``train``/``val`` are int64 sample indices; ``held_out`` the site indices whose windows form
    ``val`` (empty for the window split, which does not split by site).
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    description: str
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.train = np.asarray(self.train, dtype=np.int64).reshape(-1)
        self.val = np.asarray(self.val, dtype=np.int64).reshape(-1)
        self.held_out = np.asarray(self.held_out, dtype=np.int64).reshape(-1)


def _check_sites(samples: SampleSet, sites: SiteTable) -> np.ndarray:
    """Site labels as int64; checks the samples point into this table."""
    labels = np.asarray(sites.labels).reshape(-1).astype(np.int64)
    if len(samples) and (samples.site.min() < 0 or samples.site.max() >= labels.size):
        raise GkdcnError(
            f"samples refer to site {int(samples.site.max())} but the site table has "
            f"{labels.size} sites"
        )
    if np.any((labels != 0) & (labels != 1)):
        raise GkdcnError("site labels must be 0 (non-deposit) or 1 (deposit)")
    return labels


def _check_fraction(validation_fraction: float) -> None:
    if not 0 < validation_fraction < 1:
        raise GkdcnError(f"validation fraction must be between 0 and 1, got {validation_fraction}")


def _n_val(n: int, fraction: float, what: str) -> int:
    """Validation count for one class: round(fraction * n), at least 1 there and 1 in training."""
    if n == 1:
        # Leave-one-deposit-out needs a second deposit to train on, so it helps only there.
        lodo = "" if what.startswith("deposit") else " or use leave-one-deposit-out"
        raise GkdcnError(
            f"cannot split a single {what} between training and validation; add more sites{lodo}"
        )
    return min(max(round(fraction * n), 1), n - 1)


def _class_name(label: int, unit: str) -> str:
    return f"{'deposit' if label == 1 else 'non-deposit'} {unit}"


def split_by_site(
    samples: SampleSet, sites: SiteTable, validation_fraction: float, seed: int
) -> Split:
    """Split by site before augmentation: every window of a site goes to the same side.

    Stratified by label: of the ``n`` sites of each class, ``round(fraction * n)`` go to validation,
    at least 1, and at least 1 stays in training. A class with a single site cannot be split
    (error); a class with none is skipped.
    """
    _check_fraction(validation_fraction)
    labels = _check_sites(samples, sites)
    rng = np.random.default_rng(seed)
    val_sites: list[np.ndarray] = []
    for label in (1, 0):
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            continue
        k = _n_val(members.size, validation_fraction, _class_name(label, "site"))
        val_sites.append(rng.permutation(members)[:k])
    held_out = np.sort(np.concatenate(val_sites)) if val_sites else np.zeros(0, np.int64)
    is_val = np.isin(samples.site, held_out)
    return Split(
        name="site",
        train=np.flatnonzero(~is_val),
        val=np.flatnonzero(is_val),
        description=(
            f"sites split {1 - validation_fraction:.0%}/{validation_fraction:.0%} by label "
            f"(seed {seed}); all windows of a site on one side"
        ),
        held_out=held_out,
    )


def split_by_window(samples: SampleSet, validation_fraction: float, seed: int) -> Split:
    """The authors' protocol: windows split at random, stratified by label (leaky).

    Neighbouring and augmented windows of the same site land on both sides, so validation
    scores are optimistic. Kept only to reproduce the published numbers.
    """
    _check_fraction(validation_fraction)
    rng = np.random.default_rng(seed)
    labels = samples.labels.astype(np.int64)
    val_parts: list[np.ndarray] = []
    for label in (1, 0):
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            continue
        k = _n_val(members.size, validation_fraction, _class_name(label, "window"))
        val_parts.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    is_val = np.zeros(len(samples), dtype=bool)
    is_val[val] = True
    return Split(
        name="window",
        train=np.flatnonzero(~is_val),
        val=val,
        description=(
            "authors' protocol: windows split at random "
            f"{1 - validation_fraction:.0%}/{validation_fraction:.0%} by label (seed {seed}); "
            "windows of the same site fall on both sides (leaky, optimistic validation), "
            "kept to reproduce the published numbers"
        ),
    )


def _leave_out(
    samples: SampleSet,
    members: np.ndarray,
    windows_xy: tuple[np.ndarray, np.ndarray],
    sites_xy: tuple[np.ndarray, np.ndarray],
    reach: float,
    *,
    name: str,
    what: str,
    radius: float,
    of: str,
) -> Split:
    """The split that holds out the deposit sites ``members``: validation is their windows;
    training is every other window not centred within ``reach`` map units of any of them.
    ``radius`` (the exclusion radius as configured) and ``of`` ("it" / "them") word the
    description."""
    wx, wy = windows_xy
    sx, sy = sites_xy
    own = np.isin(samples.site, members)
    near = np.zeros(len(samples), dtype=bool)
    for i in members:
        near |= np.hypot(wx - sx[i], wy - sy[i]) <= reach
    tail = f", no training window within {radius:g} map units of {of}" if radius > 0 else ""
    return Split(
        name=name,
        train=np.flatnonzero(~own & ~near),
        val=np.flatnonzero(own),
        description=what + tail,
        held_out=members,
    )


def leave_one_deposit_out(
    samples: SampleSet, sites: SiteTable, grid: Grid, exclusion_radius: float = 0.0
) -> list[Split]:
    """One split per deposit site (in site-table order): validate on that deposit's windows.

    Training is every other window, except any window of the held-out site and any window whose
    centre lies within ``exclusion_radius`` map units (distance between cell centres <= radius,
    so radius 0 still drops other sites' windows centred on the deposit's own cell) of the held-out
    deposit. Non-deposit sites stay in training. Deposits without any window are skipped.
    """
    if exclusion_radius < 0:
        raise GkdcnError(f"exclusion radius must be >= 0, got {exclusion_radius}")
    labels = _check_sites(samples, sites)
    deposits = np.flatnonzero(labels == 1)
    if deposits.size == 0:
        raise GkdcnError("leave-one-deposit-out needs at least one deposit site")
    sx, sy = grid.xy(np.asarray(sites.rows), np.asarray(sites.cols))
    wx, wy = grid.xy(samples.rows, samples.cols)
    # Tolerance so a radius of exactly k cells includes the cell k away despite float roundoff.
    tol = 1e-9 * max(grid.cell_size)
    splits: list[Split] = []
    for i in deposits:
        own = samples.site == i
        if not np.any(own):
            continue
        splits.append(
            _leave_out(
                samples, np.asarray([i], dtype=np.int64), (wx, wy), (sx, sy),
                exclusion_radius + tol, name=f"lodo-{sites.ids[i]}",
                what=f"leave deposit {sites.ids[i]} out", radius=exclusion_radius, of="it",
            )
        )  # fmt: skip
    if not splits:
        raise GkdcnError("leave-one-deposit-out: no deposit site has any window")
    return splits


def site_blocks(sites: SiteTable, grid: Grid, block_size: float) -> np.ndarray:
    """Dense block index (0..B-1) per site: square blocks of ``block_size`` map units.

    Blocks are laid out from the grid's top-left corner; a site's block is the one holding its
    cell centre.
    """
    if not block_size > 0:
        raise GkdcnError(f"block size must be positive, got {block_size}")
    x, y = grid.xy(np.asarray(sites.rows), np.asarray(sites.cols))
    left, _, _, top = grid.bounds
    bx = np.floor((x - left) / block_size).astype(np.int64)
    by = np.floor((top - y) / block_size).astype(np.int64)
    if bx.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(np.stack([by, bx], axis=1), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def spatial_blocks(
    samples: SampleSet,
    sites: SiteTable,
    grid: Grid,
    block_size: float,
    folds: int,
    seed: int,
) -> list[Split]:
    """Spatial block cross-validation: sites grouped into square blocks, blocks dealt to folds.

    Blocks holding deposits are shuffled (seeded), ordered by deposit count (largest first) and
    each given to the fold with the fewest deposits so far, so every fold validates on at least one
    deposit; the other blocks then go, shuffled, to the fold with the fewest sites. Fold ``k``
    validates on the windows of the sites in its blocks and trains on all other windows.
    """
    if folds < 2:
        raise GkdcnError(f"spatial blocks need at least 2 folds, got {folds}")
    labels = _check_sites(samples, sites)
    inverse = site_blocks(sites, grid, block_size)
    rng = np.random.default_rng(seed)
    n_blocks = int(inverse.max()) + 1 if inverse.size else 0
    deposits_per_block = np.bincount(inverse, weights=labels, minlength=n_blocks).astype(np.int64)
    sites_per_block = np.bincount(inverse, minlength=n_blocks)
    with_deposits = np.flatnonzero(deposits_per_block > 0)
    if folds > with_deposits.size:
        raise GkdcnError(
            f"{folds} folds but only {with_deposits.size} block(s) of {block_size:g} map units "
            "contain deposits; use fewer folds or smaller blocks"
        )
    fold_of_block = np.full(n_blocks, -1, dtype=np.int64)
    deposit_load = np.zeros(folds, dtype=np.int64)
    shuffled = rng.permutation(with_deposits)
    # Stable sort after the shuffle: random order among blocks with equal deposit counts.
    order = shuffled[np.argsort(-deposits_per_block[shuffled], kind="stable")]
    for b in order:
        k = int(np.argmin(deposit_load))
        fold_of_block[b] = k
        deposit_load[k] += deposits_per_block[b]
    site_load = np.bincount(
        fold_of_block[with_deposits], weights=sites_per_block[with_deposits], minlength=folds
    )
    for b in rng.permutation(np.flatnonzero(deposits_per_block == 0)):
        k = int(np.argmin(site_load))
        fold_of_block[b] = k
        site_load[k] += sites_per_block[b]
    site_fold = fold_of_block[inverse]
    sample_fold = site_fold[samples.site]
    splits: list[Split] = []
    for k in range(folds):
        is_val = sample_fold == k
        held = np.flatnonzero(site_fold == k)
        splits.append(
            Split(
                name=f"blocks-{k + 1}of{folds}",
                train=np.flatnonzero(~is_val),
                val=np.flatnonzero(is_val),
                description=(
                    f"spatial blocks of {block_size:g} map units, fold {k + 1} of {folds} "
                    f"(seed {seed}): {int(deposit_load[k])} deposit(s), "
                    f"{held.size} site(s) held out"
                ),
                held_out=held,
            )
        )
    return splits


# Leave-one-deposit-out is kept up to this many deposits; beyond it, grouped folds.
LODO_MAX_DEPOSITS = 20
# Folds of the grouped scheme by default: every deposit is still held out exactly once, by a
# model trained without it, its group and anything within the exclusion radius of them.
DEFAULT_DEPOSIT_GROUPS = 10


def _kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 100) -> np.ndarray:
    """Cluster index (0..k-1) per point: k-means++ start (seeded), Lloyd steps, no empty cluster."""
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    dist = np.sum((points - centres[0]) ** 2, axis=1)
    for j in range(1, k):
        total = dist.sum()
        pick = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        centres[j] = points[pick]
        dist = np.minimum(dist, np.sum((points - centres[j]) ** 2, axis=1))
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        d2 = np.sum((points[:, None, :] - centres[None, :, :]) ** 2, axis=2)
        new = np.argmin(d2, axis=1)
        for j in np.setdiff1d(np.arange(k), new):
            # An empty cluster takes, from a cluster with more than one point, the point
            # farthest from its centre (there is one while a cluster is empty, as k <= n).
            sizes = np.bincount(new, minlength=k)
            candidates = np.flatnonzero(sizes[new] > 1)
            new[candidates[np.argmax(d2[candidates, new[candidates]])]] = j
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            centres[j] = points[labels == j].mean(axis=0)
    return labels


def grouped_deposit_folds(
    samples: SampleSet,
    sites: SiteTable,
    grid: Grid,
    exclusion_radius: float = 0.0,
    groups: int = DEFAULT_DEPOSIT_GROUPS,
    seed: int = 0,
) -> list[Split]:
    """Leave-one-group-out over spatial clusters of deposits: ``groups`` folds instead of one per
    deposit.

    The deposits that have windows are clustered into ``groups`` groups of neighbours (k-means on
    their cell centres in map units, seeded), so nearby deposits are held out together. Fold
    ``g`` validates on the windows of group ``g``'s deposits and trains on every other window
    except those of these deposits and those centred within ``exclusion_radius`` map units of any
    of them, exactly as :func:`leave_one_deposit_out` excludes around its one deposit. Every
    deposit is therefore scored once, by a model that never saw it, its group, or anything within
    the radius of them; with ``groups`` equal to the number of deposits this is
    leave-one-deposit-out (up to the folds' order). Non-deposit sites outside the radius stay in
    training.
    """
    if exclusion_radius < 0:
        raise GkdcnError(f"exclusion radius must be >= 0, got {exclusion_radius}")
    labels = _check_sites(samples, sites)
    deposits = np.flatnonzero(labels == 1)
    with_windows = deposits[np.isin(deposits, samples.site)]
    if with_windows.size == 0:
        raise GkdcnError("grouped deposit folds need at least one deposit site with windows")
    if groups < 1:
        raise GkdcnError(f"deposit groups must be at least 1, got {groups}")
    if groups == 1 or groups > with_windows.size:
        raise GkdcnError(
            f"{groups} deposit group(s) for {with_windows.size} deposit(s) with windows: use 2 to "
            f"{with_windows.size} groups (or leave-one-deposit-out)"
        )
    sx, sy = grid.xy(np.asarray(sites.rows), np.asarray(sites.cols))
    sx, sy = np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64)
    wx, wy = grid.xy(samples.rows, samples.cols)
    tol = 1e-9 * max(grid.cell_size)
    cluster = _kmeans(np.stack([sx[with_windows], sy[with_windows]], axis=1), groups, seed)
    # Folds in the order of each group's first deposit in the site table: stable names.
    order = np.argsort([np.flatnonzero(cluster == g)[0] for g in range(groups)], kind="stable")
    splits: list[Split] = []
    for k, g in enumerate(order):
        members = with_windows[cluster == g].astype(np.int64)
        ids = ", ".join(str(sites.ids[i]) for i in members)
        splits.append(
            _leave_out(
                samples, members, (wx, wy), (sx, sy), exclusion_radius + tol,
                name=f"group-{k + 1}of{groups}",
                what=f"deposit group {k + 1} of {groups} (k-means, seed {seed}) left out: {ids}",
                radius=exclusion_radius, of="them",
            )
        )  # fmt: skip
    return splits


def deposit_folds(
    samples: SampleSet,
    sites: SiteTable,
    grid: Grid,
    exclusion_radius: float = 0.0,
    groups: int | None = None,
    seed: int = 0,
) -> tuple[list[Split], str]:
    """The held-out-deposit folds for a study, and a sentence saying which scheme was used.

    ``groups=None`` (the default) chooses: leave-one-deposit-out for at most
    :data:`LODO_MAX_DEPOSITS` deposits with windows, else :func:`grouped_deposit_folds` with
    :data:`DEFAULT_DEPOSIT_GROUPS` groups. An explicit ``groups`` of the number of deposits (or
    more) means leave-one-deposit-out; fewer, grouped folds.
    """
    labels = _check_sites(samples, sites)
    n_dep = int(np.isin(np.flatnonzero(labels == 1), samples.site).sum())
    if groups is None:
        groups = n_dep if n_dep <= LODO_MAX_DEPOSITS else DEFAULT_DEPOSIT_GROUPS
    radius = f" and anything within {exclusion_radius:g} map units" if exclusion_radius > 0 else ""
    if groups >= n_dep:
        splits = leave_one_deposit_out(samples, sites, grid, exclusion_radius)
        return splits, (
            f"leave-one-deposit-out: {len(splits)} folds, each deposit scored by a model trained "
            f"without it{radius}"
        )
    splits = grouped_deposit_folds(samples, sites, grid, exclusion_radius, groups, seed)
    return splits, (
        f"grouped deposit folds: {n_dep} deposits clustered into {groups} spatial groups "
        f"(k-means, seed {seed}), each deposit scored by a model trained without its whole "
        f"group{radius}"
    )


def make_splits(samples: SampleSet, sites: SiteTable, grid: Grid, cfg: SplitConfig) -> list[Split]:
    """The splits a study config asks for (one element for ``site`` and ``window``)."""
    if cfg.method == "site":
        return [split_by_site(samples, sites, cfg.validation_fraction, cfg.seed)]
    if cfg.method == "window":
        return [split_by_window(samples, cfg.validation_fraction, cfg.seed)]
    if cfg.method == "lodo":
        return leave_one_deposit_out(samples, sites, grid, cfg.exclusion_radius)
    if cfg.method == "blocks":
        return spatial_blocks(samples, sites, grid, cfg.block_size, cfg.folds, cfg.seed)
    raise GkdcnError(f"unknown split method {cfg.method!r}")
