"""The deformable convolution's sampling backward on CPU, as one compiled loop (numba).

The backward pass of bilinear sampling does two things with each sample's column gradient
``g[s]`` (a row of ``C`` values) and each of its four corners ``c`` (table row ``r = idx00[s] +
delta[c]``, weight ``w[s, c]``): it adds ``w * g`` to the table gradient's row ``r`` (a
scatter-add) and it takes the dot product ``<g, table[r]>`` (what the offset and mask gradients
are made of). In PyTorch's own kernels that is a sort of all sample indices, four
``embedding_bag`` sums for the scatter and a fused dot-product kernel for the dots; here both
run in one pass over the samples, each row of ``g`` read once and each touched table row while
it is in cache, which takes a fraction of the time (docs/benchmarks.md). The loop is serial
(the workers of a comparison run one thread each); it releases the GIL.

numba compiles it at first use and caches the machine code beside this file (or in numba's
user cache where that is not writable), so a process pays ~1 s once per dtype, and later
processes load it; with no writable cache at all it compiles in memory, once per process.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from torch import Tensor


def _scatter_and_dots(  # pragma: no cover - compiled; checked through deform's tests
    grad: Any,
    weights: Any,
    idx00: Any,
    delta: Any,
    table: Any,
    grad_table: Any,
    dots: Any,
    scatter: bool,
    want_dots: bool,
) -> None:
    samples, channels = grad.shape
    for s in range(samples):
        base = idx00[s]
        for c in range(4):
            row = base + delta[c]
            if scatter:
                w = weights[s, c]
                for k in range(channels):
                    grad_table[row, k] += w * grad[s, k]
            if want_dots:
                acc = grad[s, 0] * 0  # the arrays' own dtype
                for k in range(channels):
                    acc += grad[s, k] * table[row, k]
                dots[s, c] = acc


@functools.cache
def _kernel() -> Any:
    """The compiled loop, numba imported lazily.

    Commands which train no deformable network should not pay for numba's import.
    """
    from numba import njit

    def compiled(cache: bool) -> Any:
        return njit(cache=cache, fastmath=True, boundscheck=False, nogil=True)(_scatter_and_dots)

    try:
        return compiled(cache=True)
    except RuntimeError:
        # numba found no writable place for its cache (a read-only install and no writable
        # user cache): compile in memory, once per process, rather than fail.
        return compiled(cache=False)


def scatter_and_corner_dots(
    grad: Tensor,
    weights: Tensor,
    idx00: Tensor,
    delta: tuple[int, int, int, int],
    table: Tensor,
    grad_table: Tensor | None,
    want_dots: bool,
) -> Tensor | None:
    """Sampling backward of a block of samples, on float32 or float64 CPU tensors.

    ``grad`` (S, C): the columns' gradient, one row per sample; ``weights`` (S, 4): the corner
    weights (mask included) in ``delta`` order; ``idx00`` (S,): each sample's top-left table
    row; ``table`` (R, C): what was sampled. Adds ``weights[s, c] * grad[s]`` to
    ``grad_table[idx00[s] + delta[c]]`` when ``grad_table`` is given, and returns the dots
    ``<grad[s], table[idx00[s] + delta[c]]>`` (S, 4) when ``want_dots``, else None.
    """
    kernel = _kernel()
    grad_np = grad.detach().contiguous().numpy()
    dtype = grad_np.dtype
    table_np = table.detach().contiguous().numpy()
    weights_np = weights.detach().contiguous().numpy()
    if grad_table is None:
        target = np.zeros((0, grad_np.shape[1]), dtype=dtype)
    else:
        if not grad_table.is_contiguous():
            raise ValueError("grad_table must be contiguous (it is written in place)")
        target = grad_table.numpy()
    dots = grad.new_empty(grad.shape[0] if want_dots else 0, 4)
    if grad.shape[0]:
        kernel(
            grad_np,
            weights_np,
            idx00.contiguous().numpy(),
            np.asarray(delta, dtype=np.int64),
            table_np,
            target,
            dots.numpy(),
            grad_table is not None,
            want_dots,
        )
    return dots if want_dots else None
