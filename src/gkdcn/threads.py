"""Process settings for PyTorch work, the one place gkdcn sets them.

The CPU thread count (command line, runner, prediction) and glibc malloc's reuse of freed memory
(command line, runner and cluster workers).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator


def set_threads(threads: int) -> None:
    """Use ``threads`` PyTorch CPU threads from now on in this process."""
    import torch  # here, so that reuse_freed_memory (every command) does not load PyTorch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` PyTorch CPU threads inside the block.

    The previous count is restored after; None leaves the setting alone.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reuse_freed_memory() -> None:
    """Let glibc's malloc keep and reuse freed memory in this process.

    It maps from 64 MiB and trims from 256 MiB.

    With glibc's defaults every tensor above a dynamic threshold (from 128 KiB) is mapped and
    unmapped again, page by zeroed page, on each training step, and freed memory above 128 KiB
    at the top of the heap goes back to the system only to be faulted in again. The training
    step of the networks (batches of ~100 windows, columns of ~18 MB in a deformable layer)
    allocates such tensors on every step, so keeping freed memory saves that work (measured in
    docs/benchmarks.md); Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``, which this
    overrides on its workers. Memory layout only: no result changes. Process-wide, so the
    command line and gkdcn's own worker processes call it; a Python program may call it too.
    No-op without glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_trim_threshold, 256 << 20)
    mallopt(m_mmap_threshold, 64 << 20)
