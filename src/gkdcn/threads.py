"""PyTorch's CPU thread count: the one place gkdcn sets it (command line, runner, prediction)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def set_threads(threads: int) -> None:
    """Use ``threads`` PyTorch CPU threads from now on in this process."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` PyTorch CPU threads inside the block, the previous count restored after
    (None: leave the setting alone)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
