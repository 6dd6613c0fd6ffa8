"""Time gkdcn's deformable convolution against torchvision's on this project's layer shapes.

Usage::

    python bench/bench_deform.py [--out bench/results/deform.json] [--repeats 5] [--device cpu]

For each shape it times inference (forward under ``torch.no_grad``) and a training step (forward
plus backward to input, offset, mask, weight and bias), best of ``--repeats`` after one warm-up,
for gkdcn and, when torchvision is importable, for ``torchvision.ops.deform_conv2d`` in the same
run (interleaved), and reports the speed-up ``torchvision time / gkdcn time``. Threads are
torch's default.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gkdcn.io.atomic import write_text
from gkdcn.models.deform import deform_conv2d

DeformFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Shape:
    """One layer: batch, channels in and out, square spatial size (3x3 kernel, padding 1)."""

    n: int
    c_in: int
    c_out: int
    size: int

    @property
    def label(self) -> str:
        """The shape in words, for the table."""
        return f"N={self.n} {self.c_in}->{self.c_out} {self.size}x{self.size}"


SHAPES = (
    Shape(64, 64, 64, 9),
    Shape(64, 64, 128, 4),
    Shape(1024, 64, 64, 9),
    Shape(1024, 64, 128, 4),
)


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Returns ``time(fn)``: wall seconds of one call, synchronising a GPU around it."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def time_once(fn: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    return time_once


def _inputs(shape: Shape, device: torch.device, seed: int) -> list[torch.Tensor]:
    """input, offset (magnitude ~1), weight, bias, mask (sigmoid-like in (0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    n, c, o, s = shape.n, shape.c_in, shape.c_out, shape.size
    tensors = [
        torch.randn(n, c, s, s, generator=gen),
        torch.randn(n, 18, s, s, generator=gen),
        torch.randn(o, c, 3, 3, generator=gen) * (1.0 / (9 * c) ** 0.5),
        torch.randn(o, generator=gen),
        torch.rand(n, 9, s, s, generator=gen),
    ]
    return [t.to(device) for t in tensors]


def _workloads(fn: DeformFn, tensors: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The two timed jobs for one op: inference and a forward+backward training step."""
    x, offset, weight, bias, mask = tensors

    def infer() -> None:
        with torch.no_grad():
            fn(x, offset, weight, bias, padding=(1, 1), mask=mask)

    leaves = [t.detach().clone().requires_grad_() for t in tensors]

    def train() -> None:
        for leaf in leaves:
            leaf.grad = None
        out = fn(leaves[0], leaves[1], leaves[2], leaves[3], padding=(1, 1), mask=leaves[4])
        out.sum().backward()

    return {"infer": infer, "train": train}


def run(repeats: int, device: torch.device, seed: int = 0) -> dict[str, object]:
    """Benchmark every shape; returns the JSON-ready result.

    Each repeat times every (op, job) once, interleaved, and the best time per (op, job) is kept,
    so a burst of load from other processes hits the contenders alike.
    """
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except ImportError:
        tv_deform_conv2d = None
    ops: dict[str, DeformFn] = {"ours": deform_conv2d}
    if tv_deform_conv2d is not None:
        ops["tv"] = tv_deform_conv2d
    time_once = _timer(device)
    rows = []
    for shape in SHAPES:
        tensors = _inputs(shape, device, seed)
        jobs = {
            f"{op}_{job}": work
            for op, fn in ops.items()
            for job, work in _workloads(fn, tensors).items()
        }
        for work in jobs.values():  # warm-up
            work()
        best = dict.fromkeys(jobs, float("inf"))
        for _ in range(repeats):
            for key, work in jobs.items():
                best[key] = min(best[key], time_once(work))
        row: dict[str, object] = {**asdict(shape), "label": shape.label}
        row.update({f"{key}_ms": seconds * 1e3 for key, seconds in best.items()})
        if "tv_infer" in best:
            row["speedup_infer"] = best["tv_infer"] / best["ours_infer"]
            row["speedup_train"] = best["tv_train"] / best["ours_train"]
        rows.append(row)
        _print_row(row)
    versions = {"torch": torch.__version__}
    if tv_deform_conv2d is not None:
        import torchvision

        versions["torchvision"] = torchvision.__version__
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "machine": platform.processor() or platform.machine(),
        "versions": versions,
        "rows": rows,
    }


def _print_row(row: dict[str, object]) -> None:
    def ms(key: str) -> str:
        value = row.get(key)
        return f"{value:9.1f}" if isinstance(value, float) else f"{'-':>9}"

    def ratio(key: str) -> str:
        value = row.get(key)
        return f"{value:7.2f}x" if isinstance(value, float) else f"{'-':>8}"

    print(
        f"{row['label']:<24}{ms('ours_infer_ms')}{ms('tv_infer_ms')}{ratio('speedup_infer')}"
        f"{ms('ours_train_ms')}{ms('tv_train_ms')}{ratio('speedup_train')}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/deform.json"))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's default)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchdevice import bench_device

    device = bench_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'':<24}{' inference (no grad) ':-^26}{' forward + backward ':-^26}")
    print(f"{'shape':<24}" + f"{'ours ms':>9}{'tv ms':>9}{'tv/ours':>8}" * 2)
    result = run(args.repeats, device, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n", overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
