"""Where and how PyTorch work runs, the one place gkdcn decides it: device, precision, threads.

- **device**: :func:`resolve_device` turns a name (``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``)
  into a ``torch.device`` that is there, or a one-line error;
- **precision**: :func:`resolve_precision` says what a :class:`~gkdcn.config.TrainConfig`
  ``precision`` means on a device (``"auto"``: bfloat16 where :func:`native_bfloat16` finds it
  faster than float32), and :func:`training_autocast` is the context training steps run in;
- **process settings**: the CPU thread count (command line, runner, prediction) and glibc
  malloc's reuse of freed memory (command line, runner and cluster workers).

PyTorch is imported inside the functions that need it, so that :func:`reuse_freed_memory` (every
command) and importing this module do not load it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from gkdcn.errors import GkdcnError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available, else mps, else cpu; an unavailable device is an error."""
    import torch

    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GkdcnError(f"unknown device {name!r} (use auto, cpu, cuda or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GkdcnError("device 'cuda' requested but no CUDA GPU is available to torch")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise GkdcnError("device 'mps' requested but the Apple MPS backend is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise GkdcnError(f"unsupported device {name!r} (use auto, cpu, cuda or mps)")
    return dev


Precision = Literal["float32", "bfloat16"]


def resolve_precision(precision: str, device: str) -> Precision:
    """The training arithmetic ``precision`` (a :class:`~gkdcn.config.TrainConfig` value) means.

    On ``device``, ``"auto"`` is bfloat16 where :func:`native_bfloat16` says so, else float32.
    """
    if precision == "float32":
        return "float32"
    if precision == "bfloat16":
        return "bfloat16"
    if precision != "auto":
        raise GkdcnError(f"unknown precision {precision!r} (choose auto, float32 or bfloat16)")
    return "bfloat16" if native_bfloat16(device) else "float32"


def native_bfloat16(device: str) -> bool:
    """Whether bfloat16 products run faster than float32 ones on ``device``.

    That is a CUDA GPU of compute capability 8 or newer, or a CPU whose bfloat16 units outrun
    its float32 ones.

    Such a CPU has AMX (Intel Sapphire Rapids and later, where the host exposes it), or is an
    AMD processor with AVX512-BF16 (Zen 4 and later: training steps measured 1.2-1.6x faster).
    AVX512-BF16 without AMX on an Intel processor (Cooper Lake; Sapphire or Granite Rapids
    whose host hides AMX, as virtual machines often do) is native but no faster: there oneDNN's
    bfloat16 products ran at 0.6x float32's rate and the training steps at 0.6-0.8x (README,
    "Training precision"). Elsewhere bfloat16 is emulated, and slower.
    """
    import torch

    where = torch.device(device)
    kind = where.type
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        # Not torch.cuda.is_bf16_supported(): it counts emulation (pre-Ampere GPUs) and asks
        # the current device. bfloat16 tensor cores came with compute capability 8 (Ampere).
        return torch.cuda.get_device_properties(where).major >= 8
    if kind != "cpu":
        return False
    if _cpu_probe("_is_amx_tile_supported"):
        return True
    return _cpu_probe("_is_avx512_bf16_supported") and cpu_vendor() == "AuthenticAMD"


def _cpu_probe(name: str) -> bool:
    """One of torch.cpu's private feature probes (no public API in torch 2.13).

    An absent one counts as "no".
    """
    import torch

    return bool(getattr(torch.cpu, name, lambda: False)())


@functools.cache
def cpu_vendor() -> str:
    """The x86 vendor string of this machine's CPU (``"GenuineIntel"``, ``"AuthenticAMD"``).

    ``""`` where it cannot be told (other architectures, unreadable ``/proc/cpuinfo``).
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    # Windows names the vendor in the processor string ("AMD64 Family 25 ... AuthenticAMD").
    processor = platform.processor()
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in processor), "")


def training_autocast(precision: Precision, device: str) -> torch.autocast:
    """The context the forward passes of training steps run in: bfloat16 autocast, or off."""
    import torch

    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16"
    )


def set_threads(threads: int) -> None:
    """Use ``threads`` PyTorch CPU threads from now on in this process."""
    import torch

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
