"""Throughput of the four networks (windows/s), and of DCN with torchvision's deformable op.

Usage::

    python bench/bench_models.py [--out bench/results/models.json] [--repeats 3] [--threads N]
    python bench/bench_models.py --device cuda     # on a GPU machine (falls back to the CPU)
    python bench/bench_models.py --threads 1 --only-stacked --stack 5   # stacked training only

For CNN, DCN, GK-CNN and GK-DCN (39 channels, 9 x 9 windows, the paper's width 64) at batch 64
and 1024 it times inference (eval mode, no grad) and a training step (forward, the model's loss,
backward, AdamW step), best of ``--repeats`` after a warm-up. When torchvision is importable
(run it in an environment with ``torch==2.14.1 torchvision==0.29.1`` and ``PYTHONPATH=src``), the
DCN is also timed with its deformable layers calling ``torchvision.ops.deform_conv2d`` on the
same weights, and the table gives the ratios measured in this one run. Our op's training step
is also timed under bfloat16 mixed precision (``precision = "bfloat16"``; column ``x`` is its
speed-up over float32 in the same run; ``--no-bfloat16`` skips it). The stacked-training
rows time ``--stack`` training steps at the recipe's shapes one network after another against
one step of the stacked model of them (:func:`gkdcn.train.fit_networks`); with ``--threads 1``
their windows/s are per core.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gkdcn.io.atomic import write_text
from gkdcn.models.deform import DeformConv2d
from gkdcn.models.losses import BCELoss, GKLoss
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.models.stacked import stack_networks
from gkdcn.train import Precision, training_autocast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdevice import bench_device, synchronize

KINDS = ("cnn", "dcn", "gk-cnn", "gk-dcn")


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
    """Inference and training-step windows/s; with ``bfloat16`` also the training step under
    the mixed precision of ``precision = "bfloat16"`` (:func:`gkdcn.train.training_autocast`)."""
    torch.manual_seed(0)
    net = build_network(ModelSpec(kind=kind, in_channels=39, window=9))  # type: ignore[arg-type]
    if op == "torchvision":
        _use_torchvision(net)
    net = net.to(device)
    x = torch.randn(batch, 39, 9, 9).to(device)
    y = (torch.rand(batch) > 0.5).float().to(device)
    w = torch.rand(batch).to(device)
    criterion = (GKLoss() if kind.startswith("gk") else BCELoss()).to(device)
    optimiser = torch.optim.AdamW(list(net.parameters()) + list(criterion.parameters()))

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            net(x)

    def step(precision: Precision = "float32") -> None:
        net.train()
        with training_autocast(precision, device.type):
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
    args = parser.parse_args(argv)
    device = bench_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import torchvision  # noqa: F401

        ops = ("gkdcn", "torchvision")
    except Exception:  # absent, or PyPI's build beside a CPU torch: compare ours only
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
    by = {(r["kind"], r["op"], r["batch"]): r for r in rows}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}")
    print(
        f"{'model':8s} {'op':12s} {'batch':>5s} {'infer win/s':>12s} {'train win/s':>12s} "
        f"{'bf16 train':>10s} {'x':>5s}"
    )
    for r in rows:
        rate = r.get("train_bfloat16_windows_per_s")
        extra = "" if rate is None else f" {rate:10.0f} {rate / r['train_windows_per_s']:5.2f}"
        print(
            f"{r['kind']:8s} {r['op']:12s} {r['batch']:5d} {r['inference_windows_per_s']:12.0f} "
            f"{r['train_windows_per_s']:12.0f}{extra}"
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
                "stacked_training": stacked_rows,
            },
            indent=2,
        ),
        overwrite=True,
    )


if __name__ == "__main__":
    main()
