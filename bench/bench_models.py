"""Throughput of the four networks (windows/s), and of DCN with torchvision's deformable op.

Usage::

    python bench/bench_models.py [--out bench/results/models.json] [--repeats 3] [--threads N]
    python bench/bench_models.py --device cuda     # on a GPU machine (falls back to the CPU)
    python bench/bench_models.py --threads 1 --only-stacked --stack 5   # stacked training only
    python bench/bench_models.py --threads 1 --batches 96 --stack 0 --against e7f56ba

For CNN, DCN, GK-CNN and GK-DCN (39 channels, 9 x 9 windows, the paper's width 64) at batch 64
and 1024 it times inference (eval mode, no grad) and a training step (forward, the model's loss,
backward, AdamW step), best of ``--repeats`` after a warm-up. When torchvision is importable
(run it in an environment with ``torch==2.14.1 torchvision==0.29.1`` and ``PYTHONPATH=src``), the
DCN is also timed with its deformable layers calling ``torchvision.ops.deform_conv2d`` on the
same weights, and the table gives the ratios measured in this one run. Our op's training step
is also timed under bfloat16 mixed precision (``precision = "bfloat16"``; column ``x`` is its
speed-up over float32 in the same run; ``--no-bfloat16`` skips it). Each ``% FLOP`` column
is the training step's windows/s against its FLOP-limited best: this machine's best matmul rate
in that precision over twice the multiply-adds of one window's training step (``benchflops``);
a step near 100 % can only get faster with fewer multiply-adds or faster arithmetic.
``--against COMMIT`` also times that commit's float32 training steps (its code in a temporary
git worktree, right after this checkout's) and prints the ratios. The stacked-training rows
time ``--stack`` training steps at the recipe's shapes one network after another against one
step of the stacked model of them (:func:`gkdcn.train.fit_networks`); with ``--threads 1`` their
windows/s are per core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import gkdcn
from gkdcn.io.atomic import write_text
from gkdcn.models.deform import DeformConv2d
from gkdcn.models.losses import BCELoss, GKLoss
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.models.stacked import stack_networks

# Tolerated when absent, so that ``--against`` can time the steps of older checkouts (whose
# commands did not reuse freed memory, and trained in float32 only).
try:
    from gkdcn.threads import reuse_freed_memory
except ImportError:  # pragma: no cover - older checkouts

    def reuse_freed_memory() -> None:
        """Do nothing: this checkout has no such setting."""


try:
    from gkdcn.train import training_autocast
except ImportError:  # pragma: no cover - older checkouts
    training_autocast = None  # type: ignore[assignment]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdevice import bench_device, synchronize
from benchflops import WINDOW, gemm_flops, training_macs_per_window
from benchgit import checkout, short_commit

KINDS = ("cnn", "dcn", "gk-cnn", "gk-dcn")
# The shapes of the plain rows: the Tianshan stack's 39 elements, the paper's width.
CHANNELS = 39
WIDTH = 64


def _best(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    synchronize(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - tic)
    return min(times)


def _use_torchvision(net: torch.nn.Module) -> None:
    """Route every deformable layer through torchvision's op (same weights and branches)."""
    from torchvision.ops import deform_conv2d as tv_deform

    for module in net.modules():
        if isinstance(module, DeformConv2d):

            def forward(x: torch.Tensor, m: DeformConv2d = module) -> torch.Tensor:
                offset = m.offset_conv(x)
                mask = torch.sigmoid(m.mask_conv(x))
                return tv_deform(
                    x, offset, m.weight, m.bias, stride=m.stride, padding=m.padding,
                    dilation=m.dilation, mask=mask,
                )  # fmt: skip

            module.forward = forward  # type: ignore[method-assign]


def measure(
    kind: str, op: str, batch: int, repeats: int, device: torch.device, bfloat16: bool = False
) -> dict[str, float]:
    """Inference and training-step windows/s.

    With ``bfloat16`` also the training step under the mixed precision of ``precision = "bfloat16"``
    (:func:`gkdcn.train.training_autocast`).
    """
    torch.manual_seed(0)
    spec = ModelSpec(
        kind=kind,  # type: ignore[arg-type]
        in_channels=CHANNELS,
        window=WINDOW,
        width=WIDTH,
    )
    net = build_network(spec)
    if op == "torchvision":
        _use_torchvision(net)
    net = net.to(device)
    x = torch.randn(batch, CHANNELS, WINDOW, WINDOW).to(device)
    y = (torch.rand(batch) > 0.5).float().to(device)
    w = torch.rand(batch).to(device)
    criterion = (GKLoss() if kind.startswith("gk") else BCELoss()).to(device)
    optimiser = torch.optim.AdamW(list(net.parameters()) + list(criterion.parameters()))

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            net(x)

    def step(precision: str = "float32") -> None:
        net.train()
        autocast = (
            contextlib.nullcontext()
            if training_autocast is None
            else training_autocast(precision, device.type)  # type: ignore[arg-type]
        )
        with autocast:
            logits = net(x)
        loss = criterion(logits.float(), y, w)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    t_inf = _best(infer, repeats, device)
    t_step = _best(step, repeats, device)
    out = {"inference_windows_per_s": batch / t_inf, "train_windows_per_s": batch / t_step}
    if bfloat16:
        out["train_bfloat16_windows_per_s"] = batch / _best(
            lambda: step("bfloat16"), repeats, device
        )
    return out


def measure_stacked(
    kind: str, members: int, batch: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Training steps of ``members`` networks: one after another vs one stacked model.

    The recipe's shapes (``examples/tianshan.toml``): width 16, 40 channels (39 elements and
    the knowledge channel), 9 x 9 windows, ``batch`` = 32 labelled + 57 background windows.
    """
    spec = ModelSpec(kind=kind, in_channels=40, window=9, width=16)  # type: ignore[arg-type]
    torch.manual_seed(0)
    nets = [build_network(spec).to(device) for _ in range(members)]
    stacked = stack_networks(nets)
    stacked.dropout_states = [torch.get_rng_state() for _ in range(members)]
    xs = [torch.randn(batch, 40, 9, 9).to(device) for _ in range(members)]
    y = (torch.rand(batch) > 0.5).float().to(device)
    w = torch.rand(batch).to(device)
    criteria = [(GKLoss() if kind.startswith("gk") else BCELoss()).to(device) for _ in nets]
    solo_opt = [
        torch.optim.AdamW(list(n.parameters()) + list(c.parameters()))
        for n, c in zip(nets, criteria, strict=True)
    ]
    stack_opt = torch.optim.AdamW(
        list(stacked.parameters()) + [p for c in criteria for p in c.parameters()]
    )

    def one_at_a_time() -> None:
        for net, criterion, opt, x in zip(nets, criteria, solo_opt, xs, strict=True):
            net.train()
            loss = criterion(net(x), y, w)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def together() -> None:
        stacked.train()
        logits = stacked(torch.cat(xs, dim=1))
        loss = torch.stack([c(logits[k], y, w) for k, c in enumerate(criteria)]).sum()
        stack_opt.zero_grad()
        loss.backward()
        stack_opt.step()

    with torch.random.fork_rng(devices=[]):
        t_solo = _best(one_at_a_time, repeats, device)
        t_stack = _best(together, repeats, device)
    windows = members * batch
    return {
        "one_at_a_time_windows_per_s": windows / t_solo,
        "stacked_windows_per_s": windows / t_stack,
        "stacked_over_one_at_a_time": t_solo / t_stack,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark with the command-line options and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/models.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--batches", default="64,1024")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (falls back to the CPU)")
    parser.add_argument(
        "--stack", type=int, default=5, help="members of the stacked-training rows (0: skip)"
    )
    parser.add_argument(
        "--only-stacked", action="store_true", help="only the stacked-training rows"
    )
    parser.add_argument(
        "--no-bfloat16",
        action="store_true",
        help="skip the training steps under bfloat16 mixed precision (our op only)",
    )
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="also time that commit's float32 training steps (our op), checked out into a "
        "temporary git worktree, right after this checkout's, in this one run",
    )
    parser.add_argument("--steps-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.against:
        short_commit(args.against)  # an unknown commit stops here, before any timing
    if args.steps_only:  # the --against worker: the plain rows, nothing else
        args.stack, args.no_bfloat16, args.only_stacked = 0, True, False
    device = bench_device(args.device)
    # As every gkdcn command does: without it, glibc maps and zeroes the columns of the
    # deformable layers page by page on every step, and the timings measure page faults.
    reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import torchvision  # noqa: F401

        ops = ("gkdcn", "torchvision")
    except Exception:  # absent, or PyPI's build beside a CPU torch: compare ours only
        ops = ("gkdcn",)
    if args.steps_only:
        ops = ("gkdcn",)
    rows = []
    stacked_rows = []
    mixed = not args.no_bfloat16
    if args.stack:
        for kind in ("cnn", "dcn"):
            stacked_rows.append(
                {"kind": kind, "members": args.stack, "batch": 89}
                | measure_stacked(kind, args.stack, 89, args.repeats, device)
            )
    for batch in (int(b) for b in args.batches.split(",")) if not args.only_stacked else ():
        for kind in KINDS:
            for op in ops if kind in ("dcn", "gk-dcn") else ("gkdcn",):
                rows.append(
                    {"kind": kind, "op": op, "batch": batch}
                    | measure(
                        kind, op, batch, args.repeats, device, bfloat16=mixed and op == "gkdcn"
                    )
                )
    # FLOP-limited training steps: every multiply-add at this machine's best matmul rate, in
    # float32 and (for the bfloat16 column) in bfloat16, with the same threads as the rows.
    gemm = {}
    if rows:
        first_batch = rows[0]["batch"]
        gemm["float32"] = gemm_flops(first_batch, WIDTH, device.type)
        if mixed:
            gemm["bfloat16"] = gemm_flops(first_batch, WIDTH, device.type, torch.bfloat16)
    for r in rows:
        macs = training_macs_per_window(r["kind"], CHANNELS, WIDTH)
        r["train_flop_limited_windows_per_s"] = gemm["float32"]["gemm_gflops"] * 1e9 / (2 * macs)
        r["train_fraction_of_flop_limit"] = (
            r["train_windows_per_s"] / r["train_flop_limited_windows_per_s"]
        )
        if "train_bfloat16_windows_per_s" in r:
            best = gemm["bfloat16"]["gemm_gflops"] * 1e9 / (2 * macs)
            r["train_bfloat16_fraction_of_flop_limit"] = r["train_bfloat16_windows_per_s"] / best
    by = {(r["kind"], r["op"], r["batch"]): r for r in rows}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}")
    print(
        f"{'model':8s} {'op':12s} {'batch':>5s} {'infer win/s':>12s} {'train win/s':>12s} "
        f"{'% FLOP':>6s} {'bf16 train':>10s} {'x':>5s} {'% FLOP':>6s}"
    )
    for r in rows:
        rate = r.get("train_bfloat16_windows_per_s")
        extra = (
            ""
            if rate is None
            else f" {rate:10.0f} {rate / r['train_windows_per_s']:5.2f}"
            f" {100 * r['train_bfloat16_fraction_of_flop_limit']:6.0f}"
        )
        print(
            f"{r['kind']:8s} {r['op']:12s} {r['batch']:5d} {r['inference_windows_per_s']:12.0f} "
            f"{r['train_windows_per_s']:12.0f} {100 * r['train_fraction_of_flop_limit']:6.0f}"
            f"{extra}"
        )
    for dtype, g in gemm.items():
        print(
            f"% FLOP: training windows/s against GEMM rate / (2 x multiply-adds of a training step "
            f"per window); {dtype} GEMM rate {g['gemm_gflops']:.1f} GFLOP/s "
            f"(best of {g['gemm_shape']} and 2048^2)"
        )
    if stacked_rows:
        print(
            f"training step, recipe shapes (width 16, 40 channels, batch 89), "
            f"{torch.get_num_threads()} threads: windows/s"
        )
        print(f"{'model':8s} {'members':>7s} {'one at a time':>14s} {'stacked':>9s} {'ratio':>6s}")
        for r in stacked_rows:
            print(
                f"{r['kind']:8s} {r['members']:7d} {r['one_at_a_time_windows_per_s']:14.0f} "
                f"{r['stacked_windows_per_s']:9.0f} {r['stacked_over_one_at_a_time']:6.2f}"
            )
    ratios = []
    for batch in {r["batch"] for r in rows}:
        cnn, dcn = by[("cnn", "gkdcn", batch)], by[("dcn", "gkdcn", batch)]
        ratio = {
            "batch": batch,
            "cnn_over_dcn_inference": cnn["inference_windows_per_s"]
            / dcn["inference_windows_per_s"],
        }
        tv = by.get(("dcn", "torchvision", batch))
        if tv is not None:
            ratio["dcn_ours_over_torchvision_inference"] = (
                dcn["inference_windows_per_s"] / tv["inference_windows_per_s"]
            )
            ratio["dcn_ours_over_torchvision_train"] = (
                dcn["train_windows_per_s"] / tv["train_windows_per_s"]
            )
        ratios.append(ratio)
        print(
            "  ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in ratio.items()
            )
        )
    against = _against(args, rows) if args.against and rows else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(
        args.out,
        json.dumps(
            {
                "torch": torch.__version__,
                "device": str(device),
                "device_name": where,
                "threads": torch.get_num_threads(),
                "rows": rows,
                "ratios": ratios,
                "gemm": gemm,
                "gkdcn_source": str(Path(gkdcn.__file__).resolve().parent),
                "against": against,
                "stacked_training": stacked_rows,
            },
            indent=2,
        ),
        overwrite=True,
    )


def _against(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Time ``args.against``'s float32 training steps beside this checkout's rows.

    The steps run in a subprocess on that commit's own code (a git worktree on ``PYTHONPATH``; this
    script and its helpers stay this checkout's) and are printed beside this checkout's rows.
    """
    with (
        tempfile.TemporaryDirectory(prefix="bench-models-") as tmp,
        checkout(args.against, Path(tmp) / "against") as worktree,
    ):
        out = Path(tmp) / "against.json"
        cmd = [sys.executable, __file__, "--steps-only", "--out", str(out)]
        cmd += ["--batches", args.batches, "--repeats", str(args.repeats)]
        cmd += ["--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = os.environ | {"PYTHONPATH": str(worktree / "src")}
        subprocess.run(cmd, check=True, env=env)
        theirs = json.loads(out.read_text())
    if not theirs["gkdcn_source"].startswith(str(worktree)):
        raise SystemExit(f"error: --against ran {theirs['gkdcn_source']}, not the worktree")
    old = {(r["kind"], r["batch"]): r for r in theirs["rows"]}
    print(f"float32 training step, this checkout vs {args.against}: windows/s (% FLOP)")
    print(f"{'model':8s} {'batch':>5s} {'this':>13s} {args.against[:12]:>13s} {'ratio':>6s}")
    pairs = []
    for r in rows:
        o = old.get((r["kind"], r["batch"]))
        if r["op"] != "gkdcn" or o is None:
            continue
        ratio = r["train_windows_per_s"] / o["train_windows_per_s"]
        pairs.append({"kind": r["kind"], "batch": r["batch"], "ratio": ratio})
        print(
            f"{r['kind']:8s} {r['batch']:5d} "
            f"{r['train_windows_per_s']:7.0f} ({100 * r['train_fraction_of_flop_limit']:3.0f}) "
            f"{o['train_windows_per_s']:7.0f} ({100 * o['train_fraction_of_flop_limit']:3.0f}) "
            f"{ratio:6.2f}"
        )
    return {"commit": args.against, "rows": theirs["rows"], "ratios": pairs}


if __name__ == "__main__":
    main()
