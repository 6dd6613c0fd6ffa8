"""Benchmark the comparison itself: trainings per second per core and the whole-run time.

Runs ``gkdcn compare`` on a fixed small plan (default: the Tianshan study, CNN and DCN,
leave-one-deposit-out, 3 seeds, 2 epochs) with this checkout's code and, with ``--against
COMMIT``, with that commit's code checked out into a temporary git worktree (its own
``PYTHONPATH``), one after the other in this one run, so the ratio compares like with like on a
possibly shared machine. Each run is a fresh ``gkdcn compare`` process writing to a temporary
folder; its wall time, its CPU time (``RUSAGE_CHILDREN``), the number of trainings it finished
(``result.json`` files) and their own ``seconds`` are recorded.

Trainings per second per core = trainings / wall seconds / cores used (``--jobs``, at most the
CPU count); trainings per CPU-second is the same rate with the time every core really spent,
steadier on a loaded machine. Each run's **floor** is the multiply-adds of all it computed
(:func:`benchflops.comparison_macs`, from its ``result.json`` files) at one core's best float32
GEMM rate on this machine, measured before the runs: the CPU time the plan would take if every
multiply-add ran as fast as a large matrix product; ``x floor`` is the run's CPU time over it.

Usage::

    python bench/bench_compare.py                              # this checkout only
    python bench/bench_compare.py --against a19373c            # also that commit, same plan
    python bench/bench_compare.py --synthetic 60 --height 640 --width 560 --against a19373c
    python bench/bench_compare.py --device cuda                # on a GPU machine

``--stacked both`` (the default) runs this checkout twice, its seeds trained one by one and
stacked (``gkdcn compare --stack-seeds``); ``--precision both`` runs each of those in bfloat16
and float32 (``gkdcn compare --precision``). Each run is compared with the last run (the
``--against`` commit when given).
``--synthetic N`` generates a synthetic district with ``N`` deposits (``gkdcn synth``, this
checkout's generator, once, shared by both runs) instead of the Tianshan data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdevice import bench_device
from benchflops import comparison_macs, gemm_flops
from benchgit import checkout, short_commit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "examples" / "tianshan.toml"
# The paper's data beside the checkout (../shared, as in CI).
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tianshan"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "compare.json"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_compare(
    label: str,
    src: Path,
    config: Path,
    data_dir: Path | None,
    args: argparse.Namespace,
    tmp: Path,
    floor: Floor,
    stack: bool | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run ``gkdcn compare`` on the plan with the code under ``src``.

    ``stack``: pass ``--stack-seeds`` or ``--no-stack-seeds``; ``precision``: pass ``--precision``;
    None: neither, for code without the option.
    """
    out = tmp / f"run-{label.split()[0]}-{'x' if stack is None else int(stack)}-{precision}"
    cmd = [sys.executable, "-m", "gkdcn.cli", "compare", str(config), "--out", str(out)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    cmd += ["--seeds", str(args.seeds), "--models", args.models, "--protocols", args.protocols]
    cmd += ["--jobs", str(args.jobs), "--device", args.device]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.quick:
        cmd.append("--quick")
    if stack is not None:
        cmd.append("--stack-seeds" if stack else "--no-stack-seeds")
    if precision is not None:
        cmd += ["--precision", precision]
    env = dict(os.environ, PYTHONPATH=str(src))
    print(f"  {label}: {' '.join(cmd[1:])}", flush=True)
    cpu = _children_cpu()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"label": label, "error": f"timed out after {args.timeout:.0f} s"}
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
        return {"label": label, "error": f"exit {proc.returncode}: {tail}"}
    results = [json.loads(p.read_text()) for p in out.rglob("result.json")]
    cores = max(1, min(args.jobs, os.cpu_count() or 1))
    trainings = len(results)
    macs = comparison_macs(out, floor.channels, floor.valid_cells)
    floor_cpu_s = 2 * macs["total"] / (floor.gflops_per_core * 1e9)
    return {
        "floor_macs": macs,
        "floor_cpu_s": floor_cpu_s,
        "cpu_s_over_floor": cpu / floor_cpu_s,
        "label": label,
        "trainings": trainings,
        "wall_s": wall,
        "cpu_s": cpu,
        "cores": cores,
        "training_seconds_sum": sum(float(r.get("seconds", 0.0)) for r in results),
        "trainings_per_s": trainings / wall,
        "trainings_per_s_per_core": trainings / wall / cores,
        "trainings_per_cpu_s": trainings / cpu if cpu > 0 else float("nan"),
    }


@dataclass(frozen=True)
class Floor:
    """What the arithmetic floor of a run needs besides the run.

    The study's input layers and valid cells, and one core's best float32 matrix-product rate on
    this machine.
    """

    channels: int
    valid_cells: int
    gflops_per_core: float


def _floor(config: Path, data_dir: Path | None, device: str) -> Floor:
    """Load the study as this checkout loads it, and measure the GEMM rate at one thread.

    Each of the comparison's workers trains on one thread.
    """
    import torch

    from gkdcn.config import load_config
    from gkdcn.data.study import load_study
    from gkdcn.threads import torch_threads

    study = load_study(load_config(config, data_dir=data_dir))
    with torch_threads(1):
        rate = gemm_flops(96, 64, device, torch.float32)["gemm_gflops"]
    return Floor(len(study.names), int(study.valid.sum()), rate)


def _synthetic(tmp: Path, args: argparse.Namespace) -> Path:
    folder = tmp / "district"
    cmd = [sys.executable, "-m", "gkdcn.cli", "synth", str(folder), "--seed", "0"]
    cmd += ["--deposits", str(args.synthetic), "--height", str(args.height)]
    cmd += ["--width", str(args.width), "--layers", str(args.layers)]
    print(f"  writing a synthetic district: {' '.join(cmd[3:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    configs = sorted(folder.glob("*.toml"))
    if not configs:
        raise SystemExit(f"error: {folder}: gkdcn synth wrote no study config")
    return configs[0]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with the command-line options; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="study config")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--against", help="an earlier commit to run the same plan with")
    parser.add_argument("--models", default="cnn,dcn")
    parser.add_argument("--protocols", default="lodo")
    parser.add_argument("--seeds", type=int, default=3, help="3: something to stack")
    parser.add_argument("--epochs", type=int, default=2, help="0: the config's (or --quick's)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to compare")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu)")
    parser.add_argument("--synthetic", type=int, default=0, help="deposits of a synthetic district")
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="per run, seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--stacked",
        choices=("off", "on", "both"),
        default="both",
        help="this checkout's seeds trained one by one (off), stacked (on) or both runs",
    )
    parser.add_argument(
        "--precision",
        choices=("config", "float32", "bfloat16", "auto", "both"),
        default="config",
        help="this checkout's training precision: the config's, one of them, or both "
        "float32 and bfloat16 runs (the --against commit runs its own default)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.seeds < 1:
        parser.error("--jobs and --seeds must be at least 1")

    args.device = bench_device(args.device).type
    head = short_commit("HEAD")
    against = short_commit(args.against) if args.against else None
    tmp = Path(tempfile.mkdtemp(prefix="gkdcn-bench-compare-"))
    runs: list[dict[str, Any]] = []
    try:
        if args.synthetic:
            config, data_dir = _synthetic(tmp, args), None
        else:
            if not args.data_dir.exists():
                print(f"error: {args.data_dir}: data folder not found (use --synthetic N)")
                return 2
            config, data_dir = args.config.resolve(), args.data_dir
        floor = _floor(config, data_dir, args.device)
        print(
            f"  {floor.channels} layers, {floor.valid_cells} valid cells; float32 GEMM rate "
            f"{floor.gflops_per_core:.1f} GFLOP/s on one core",
            flush=True,
        )
        # The reference (compared with) runs last: the --against commit, else one by one.
        modes = {"off": [False], "on": [True], "both": [True, False]}[args.stacked]
        if args.against:
            modes.sort()
        choices: dict[str, list[str | None]] = {"config": [None], "both": ["bfloat16", "float32"]}
        precisions = choices.get(args.precision, [args.precision])
        for stack in modes:
            for precision in precisions:
                label = f"this ({head})" + (", stacked" if stack else ", one by one")
                label += f", {precision}" if precision else ""
                runs.append(
                    _run_compare(
                        label, REPO / "src", config, data_dir, args, tmp, floor, stack, precision
                    )
                )
        if args.against:
            label = f"against ({against})"
            with checkout(args.against, tmp / "against") as worktree:
                runs.append(
                    _run_compare(label, worktree / "src", config, data_dir, args, tmp, floor)
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nplan: {args.models} x {args.protocols} x {args.seeds} seed(s), epochs {args.epochs}")
    header = (
        f"{'code':44} {'trainings':>9} {'wall s':>8} {'cpu s':>8} {'train/s/core':>12} "
        f"{'train/cpu-s':>11} {'floor cpu s':>11} {'x floor':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        if "error" in r:
            print(f"{r['label']:44} error: {r['error']}")
            continue
        print(
            f"{r['label']:44} {r['trainings']:>9} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
            f"{r['trainings_per_s_per_core']:>12.4f} {r['trainings_per_cpu_s']:>11.4f} "
            f"{r['floor_cpu_s']:>11.1f} {r['cpu_s_over_floor']:>7.2f}"
        )
    print(
        "floor cpu s: the run's multiply-adds (training steps, validation, calibration, "
        "held-out and map scoring; benchflops.comparison_macs) at the float32 GEMM rate of one "
        f"core ({floor.gflops_per_core:.1f} GFLOP/s): with every multiply-add at that rate the "
        f"plan would take floor / cores of wall time ({args.jobs} jobs); x floor: CPU s / floor"
    )
    ratios: dict[str, float] = {}
    ok = [r for r in runs if "error" not in r]
    # Every run of this checkout against the last run (the --against commit when given).
    if len(ok) >= 2:
        old = ok[-1]
        for this in ok[:-1]:
            key = this["label"]
            ratios[key + ": whole_run_speedup"] = old["wall_s"] / this["wall_s"]
            ratios[key + ": trainings_per_s_per_core_ratio"] = (
                this["trainings_per_s_per_core"] / old["trainings_per_s_per_core"]
            )
            ratios[key + ": trainings_per_cpu_s_ratio"] = (
                this["trainings_per_cpu_s"] / old["trainings_per_cpu_s"]
            )
            print(
                f"\n{key} vs {old['label']} (same run): whole run "
                f"x{ratios[key + ': whole_run_speedup']:.2f} faster, trainings/s/core "
                f"x{ratios[key + ': trainings_per_s_per_core_ratio']:.2f}, trainings/cpu-s "
                f"x{ratios[key + ': trainings_per_cpu_s_ratio']:.2f}"
            )
    report = {
        "floor": {
            "channels": floor.channels,
            "valid_cells": floor.valid_cells,
            "gemm_gflops_per_core": floor.gflops_per_core,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(report, indent=2))
    os.replace(tmp_out, args.out)
    print(f"results written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
