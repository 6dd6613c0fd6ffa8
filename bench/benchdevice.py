"""The ``--device`` every benchmark takes: the torch device, or CPU with a clear message.

A benchmark asked for ``cuda`` (or ``mps``) on a machine without one still runs, on the CPU, and
says so on stderr and in its JSON (the ``device`` it reports is the one really used), so one
script (``bench/run_gpu.sh``) can be started anywhere.
"""

from __future__ import annotations

import sys

import torch


def bench_device(name: str) -> torch.device:
    """``cpu``, ``cuda[:i]``, ``mps`` or ``auto``; an unavailable accelerator falls back to CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: unknown device {name!r} (use cpu, cuda, mps or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"warning: --device {name}: torch {torch.__version__} sees no CUDA GPU here; "
            "running on the CPU instead",
            file=sys.stderr,
        )
        return torch.device("cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        print(
            f"warning: --device {name}: no Apple MPS backend; running on the CPU", file=sys.stderr
        )
        return torch.device("cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
