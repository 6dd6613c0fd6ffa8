"""FLOP-limited bounds shared by the benchmarks: multiply-adds of the networks, and the GEMM rate.

A bound is ``GEMM rate / (2 x multiply-adds)``: what a run would reach if every multiply-add ran
as fast as this machine's best matrix product. The bilinear sampling of the deformable layers is
counted as multiply-adds too (4 per sample and channel), although it is gathers and scatters
that no GEMM speed applies to, so for a DCN the bound is generous.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchdevice import synchronize
from gkdcn.models import registry

WINDOW = 9


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def macs_per_window(kind: str, channels: int, width: int, window: int = WINDOW) -> dict[str, int]:
    """Multiply-adds of one window through :class:`gkdcn.models.nets.AnomalyNet` (gap head).

    Deformable layers add their offset (18 channels) and mask (9 channels) 3x3 branches and the
    bilinear sampling of 9 taps per input channel and position (4 multiply-adds each).
    """
    full = window * window
    pooled = (window // 2) ** 2
    macs = {"conv1": full * channels * 9 * width}
    for name, positions, cin, cout in (
        ("conv2", full, width, width),
        ("conv3", pooled, width, 2 * width),
    ):
        macs[name] = positions * cin * 9 * cout
        if kind in ("dcn", "gk-dcn"):
            macs[f"{name}_offset_mask"] = positions * cin * 9 * 27
            macs[f"{name}_sampling"] = positions * 9 * cin * 4
    macs["head"] = 2 * width * 64 + 64
    macs["total"] = sum(macs.values())
    return macs


def training_macs_per_window(kind: str, channels: int, width: int, window: int = WINDOW) -> int:
    """Multiply-adds of one window in a training step.

    The forward pass, and in the backward pass the weight gradient of every layer and the input
    gradient of every layer but the first (the windows need none), each as many as the layer's
    forward pass; the sampling's backward (a scatter to the input and a dot product with each
    corner) twice its forward.
    """
    macs = macs_per_window(kind, channels, width, window)
    return 3 * macs["total"] - macs["conv1"]


def gemm_flops(
    batch: int, width: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Matmul FLOP/s in ``dtype``.

    One shaped like the middle 3x3 layer's im2col GEMM, one large square.

    The larger of the two is taken as this machine's attainable GEMM rate (the representative
    shape, with only ``width`` output columns, often runs well below it). On the CPU the square
    product is also timed in CPU seconds (``gemm_gflops_per_cpu_s``): on a machine shared with
    other work, the rate per CPU-second of the GEMM and of a benchmark run compare like with like.
    """
    dev = torch.device(device)

    def rate(m: int, k: int, n: int, clock: Callable[[], float] = time.perf_counter) -> float:
        a = torch.randn(m, k, device=dev).to(dtype)
        b = torch.randn(k, n, device=dev).to(dtype)
        for _ in range(2):
            a @ b
        synchronize(dev)
        best = float("inf")
        for _ in range(5):
            start = clock()
            a @ b
            synchronize(dev)
            best = min(best, clock() - start)
        return 2 * m * k * n / best / 1e9

    shape = (batch * WINDOW * WINDOW, width * 9, width)
    representative = rate(*shape)
    square = rate(2048, 2048, 2048) if dev.type == "cpu" else rate(8192, 8192, 8192)
    per_cpu_s = rate(2048, 2048, 2048, cpu_seconds) if dev.type == "cpu" else None
    return {
        "gemm_dtype": str(dtype).removeprefix("torch."),
        "gemm_shape": list(shape),
        "gemm_representative_gflops": representative,
        "gemm_square_gflops": square,
        "gemm_gflops": max(representative, square),
        "gemm_gflops_per_cpu_s": per_cpu_s,
    }


def comparison_macs(run_dir: Path, channels: int, valid_cells: int) -> dict[str, float]:
    """Multiply-adds a finished comparison run needed at the least.

    Read from its ``run.json`` and every job's ``result.json``: the floor of its arithmetic,
    whatever the code.

    Per network job: its training steps (epochs run x (labelled + background windows) x
    :func:`training_macs_per_window`; a job with an inner validation set stopped early ran
    ``min(epochs, best epoch + patience)`` epochs and scored its validation windows on each),
    and its inference: the calibration cells, and the held-out deposits and background cells
    (held-out protocols) or the whole map (in-sample ones; counted with the first two layers
    shared by every window that covers a cell, as a streaming prediction can share them, so
    still a floor). ``channels``: input layers; ``valid_cells``: the map's valid cells.
    """
    run = json.loads((run_dir / "run.json").read_text())
    train = run["plan"]["train"]
    config = run.get("config") or {}
    window = int((config.get("samples") or {}).get("window", WINDOW))
    width, epochs, patience = int(train["width"]), int(train["epochs"]), train.get("patience")
    totals = {"training": 0.0, "inference": 0.0, "jobs": 0.0}
    for path in sorted(run_dir.rglob("result.json")):
        result = json.loads(path.read_text())
        kind = result["model"]
        if not registry.is_network(kind):  # the baselines' arithmetic is negligible beside theirs
            continue
        n_val = int(result.get("n_val", 0))
        ran = epochs
        if n_val and patience is not None:
            ran = min(epochs, int(result["best_epoch"]) + int(patience))
        windows = int(result["n_train"]) + int(result.get("background_per_epoch", 0))
        per_step = training_macs_per_window(kind, channels, width, window)
        macs = macs_per_window(kind, channels, width, window)
        cells = float(n_val * ran + (result.get("calibration") or {}).get("cells", 0))
        inference = cells * macs["total"]
        if "heldout" in result:
            held = result["heldout"]
            scored = len(held) + (int(held[0]["n_background"]) if held else 0)
            inference += scored * macs["total"]
        else:
            shared = macs["conv1"] + macs["conv2"]
            inference += valid_cells * (macs["total"] - shared + shared / (window * window))
        totals["training"] += float(ran * windows * per_step)
        totals["inference"] += inference
        totals["jobs"] += 1
    totals["total"] = totals["training"] + totals["inference"]
    return totals
