"""The training batches' augmentation: a random dihedral transform of each window."""

from __future__ import annotations

import functools

import torch


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random dihedral transform of each window (codes as in :mod:`gkdcn.data.samples`).

    Window ``i`` gets code ``c`` = ``torch.randint(0, 8)``: ``rot90`` by ``c % 4`` quarter turns,
    then a flip of the columns when ``c >= 4``. All windows move in one gather of their cells
    (each code is a fixed permutation of a square window's cells), not one rotation per code.
    """
    codes = torch.randint(0, 8, (len(x),), generator=generator)
    n, channels, height, width = x.shape
    perm = _dihedral_permutations(height, width).to(x.device)[codes.to(x.device)]
    cells = perm.unsqueeze(1).expand(n, channels, height * width)
    return x.reshape(n, channels, -1).gather(2, cells).view(n, channels, height, width)


@functools.cache
def _dihedral_permutations(height: int, width: int) -> torch.Tensor:
    """The cell permutations of the eight dihedral codes: (8, height*width) int64.

    Row ``c`` lists, for each cell of a window transformed by code ``c`` (``rot90`` by
    ``c % 4``, then a column flip when ``c >= 4``), the cell it comes from.
    """
    if height != width:
        raise ValueError(f"dihedral transforms need square windows, got {height} x {width}")
    cells = torch.arange(height * width).view(height, width)
    out = []
    for code in range(8):
        moved = torch.rot90(cells, code % 4, dims=(0, 1))
        out.append((torch.flip(moved, dims=(1,)) if code >= 4 else moved).reshape(-1))
    return torch.stack(out)
