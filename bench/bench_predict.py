"""Benchmark full-map prediction: our streaming path against the authors' naive path.

(a) On the Tianshan grid (39 layers, 117 x 289): windows/s and peak RSS of
:func:`gkdcn.predict.predict_map` against the authors' approach (every window cut in Python loops
into one list, concatenated, then one giant batch through the model), for the CNN and the DCN,
each path in its own subprocess so its peak RSS is its own. Run under an environment with
torchvision (e.g. ``/root/tv-venv`` with ``PYTHONPATH=src``) it also times the naive path with a
DCN whose deformable layers call ``torchvision.ops.deform_conv2d`` (same weights): the authors'
operator.

(b) Scaling on synthetic random grids (500^2, 1000^2, 2000^2 cells x 39 layers, written as
tiled GeoTIFFs to a temporary folder before timing): cells/s and peak RSS per size.

(c) The FLOP-limited best for this CPU: multiply-adds per window (conv / linear layers, plus the
deformable offset / mask branches and bilinear sampling) x windows / measured GEMM FLOP/s, and
the fraction of it the streaming path reaches.

Usage::

    python bench/bench_predict.py                        # everything, JSON to bench/results/
    python bench/bench_predict.py --skip-scaling --kinds dcn
    PYTHONPATH=src /root/tv-venv/bin/python bench/bench_predict.py   # + torchvision naive DCN
    python bench/bench_predict.py --device cuda          # on a GPU (falls back to the CPU)

Numbers are wall-clock on a possibly shared machine: compare ratios from the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchflops import WINDOW, cpu_seconds, gemm_flops, macs_per_window

# The paper's data beside the checkout (../shared, as in CI).
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tianshan" / "Geochemical_data"
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "predict.json"
LAYERS = 39
_TIANSHAN_INTERIOR = (117 - WINDOW + 1) * (289 - WINDOW + 1)


# --------------------------------------------------------------------------------------------
# Worker side: each measured path runs in a fresh interpreter (peak RSS is per process).
# --------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _make_bundle(kind: str, names: list[str], raw_sample: Any, width: int, seed: int = 0) -> Any:
    """A network with seeded random weights (non-zero offsets) and a transform fitted on cells."""
    import torch

    from gkdcn.data.transforms import ChannelTransform
    from gkdcn.models.bundle import ModelBundle
    from gkdcn.models.nets import ModelSpec, build_network

    spec = ModelSpec(kind=kind, in_channels=len(names), window=WINDOW, head="gap", width=width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(spec)
        state = net.state_dict()
        for key, value in state.items():
            if "offset_conv" in key or "mask_conv" in key:
                state[key] = 0.02 * torch.randn(value.shape)
    transform = ChannelTransform.fit(raw_sample, "log", "standard")
    return ModelBundle(spec=spec, state=state, channels=list(names), transform=transform)


def _sample_cells(source: Any, n: int = 20_000) -> Any:
    """Raw values (N, C) of up to ``n`` cells from a few row bands (no full-map read)."""
    import numpy as np
    from rasterio.windows import Window

    grid = source.grid
    rows = min(grid.height, max(1, n // max(grid.width, 1)))
    chunks = []
    for r0 in np.linspace(0, grid.height - rows, num=min(4, grid.height), dtype=int):
        block = source.read(Window(0, int(r0), grid.width, rows))
        chunks.append(block.reshape(block.shape[0], -1).T)
    return np.concatenate(chunks)[:n]


def _use_torchvision_deform(net: Any) -> None:
    """Make every deformable layer call ``torchvision.ops.deform_conv2d`` (same weights)."""
    import torch
    from torchvision.ops import deform_conv2d

    for layer in net.deformable_layers().values():

        def forward(x: torch.Tensor, layer: Any = layer) -> torch.Tensor:
            offset = layer.offset_conv(x)
            mask = torch.sigmoid(layer.mask_conv(x))
            return deform_conv2d(
                x,
                offset,
                layer.weight,
                layer.bias,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                mask=mask,
            )

        layer.forward = forward


class _FirstRows:
    """An ElementSource limited to its first ``rows`` rows (a band of a big grid)."""

    def __init__(self, source: Any, rows: int) -> None:
        from gkdcn.io.grid import Grid

        g = source.grid
        self._source = source
        self.names = source.names
        self.paths = source.paths
        self.grid = Grid(
            crs=g.crs, transform=g.transform, height=min(rows, g.height), width=g.width
        )

    def read(self, window: Any = None) -> Any:
        return self._source.read(window)


def _worker(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from gkdcn.io.rasters import open_elements

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    try:  # as every gkdcn command does (gkdcn.threads); older checkouts lack it
        from gkdcn.threads import reuse_freed_memory

        reuse_freed_memory()
    except ImportError:
        pass
    out: dict[str, Any] = {"task": task, "torch_threads": torch.get_num_threads()}
    device = task.get("device", "cpu")
    out["device"] = device
    if task["mode"] == "gemm":
        out.update(gemm_flops(task["batch_size"], task["width"], device))
        return out
    import rasterio

    # Setup reads little, through a small GDAL cache, so its blocks do not inflate the peak RSS.
    with rasterio.Env(GDAL_CACHEMAX=16 << 20), open_elements(task["data"]) as setup:
        bundle = _make_bundle(task["kind"], list(setup.names), _sample_cells(setup), task["width"])
    with open_elements(task["data"]) as source:
        out["rss_setup_mb"] = _peak_rss_mb()
        if task["mode"] == "stream":
            from gkdcn.predict import predict_map

            src = _FirstRows(source, task["rows"]) if task.get("rows") else source
            cpu = cpu_seconds()
            start = time.perf_counter()
            result = predict_map(
                bundle,
                src,
                batch_size=task["batch_size"],
                block_rows=task["block_rows"],
                device=device,
            )
            seconds = time.perf_counter() - start
            out.update(windows=result.info["windows"], cells=src.grid.height * src.grid.width)
            out["checksum"] = float(np.nansum(result.mean))
        elif task["mode"] == "naive":
            net = bundle.network(torch.device(device))
            if task.get("op") == "torchvision":
                _use_torchvision_deform(net)
            cpu = cpu_seconds()
            start = time.perf_counter()
            windows = _naive_predict(bundle, net, source, task.get("max_windows"), device)
            seconds = time.perf_counter() - start
            out.update(windows=windows)
        else:  # pragma: no cover - internal
            raise ValueError(task["mode"])
    cpu = cpu_seconds() - cpu
    out.update(seconds=seconds, cpu_seconds=cpu, peak_rss_mb=_peak_rss_mb())
    out["windows_per_s"] = out["windows"] / seconds
    out["windows_per_cpu_s"] = out["windows"] / cpu
    # The attainable GEMM rate right after the run (the machine may be shared), measured after
    # the peak RSS was recorded so its matrices do not count.
    out["gemm_after"] = gemm_flops(task["batch_size"], task["width"], device)
    return out


def _naive_predict(
    bundle: Any, net: Any, source: Any, max_windows: int | None, device: str = "cpu"
) -> int:
    """The authors' full-map prediction: loops, one list of windows, one giant batch.

    As in their release: the (H, W, C) stack is read whole, every interior window (no padding,
    so ``(H - 8) x (W - 8)`` centres) is sliced in a double Python loop, the list is concatenated
    and pushed through the model in one call, and the probabilities become a Python list. The
    transform is ours, applied to the whole map first (the authors fed the stored stack).
    """
    import numpy as np
    import torch

    array = np.moveaxis(bundle.transform.apply(source.read()), 0, -1)  # (H, W, C)
    h_pred = array.shape[0] - (WINDOW - 1)
    w_pred = array.shape[1] - (WINDOW - 1)
    if max_windows:
        h_pred = max(1, min(h_pred, max_windows // w_pred))
    patches = []
    for row in range(h_pred):
        for col in range(w_pred):
            value = array[row : row + WINDOW, col : col + WINDOW, :]
            patches.append(value.reshape(1, WINDOW, WINDOW, array.shape[2]))
    with torch.no_grad():
        tensor = torch.from_numpy(np.concatenate(patches, axis=0)).float().to(device)
        del patches
        logits = net(tensor.permute(0, 3, 1, 2))  # their model permutes inside forward
        probability = torch.sigmoid(logits).cpu().numpy().tolist()
    return len(probability)


# --------------------------------------------------------------------------------------------
# Driver side.
# --------------------------------------------------------------------------------------------


def _run_worker(task: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (same one as the driver)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(task)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"task": task, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"task": task, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len("RESULT ") :])


def _write_synthetic(folder: Path, size: int, layers: int = LAYERS, seed: int = 0) -> Path:
    """A ``size x size`` grid of ``layers`` log-normal single-band GeoTIFFs (tiled, DEFLATE)."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    target = folder / f"grid{size}"
    if (target / f"L{layers - 1:02d}.tif").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": 1,
        "dtype": "float32",
        "nodata": -9999.0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 3,
        "crs": "EPSG:32645",
        "transform": Affine(1000.0, 0.0, 500_000.0, 0.0, -1000.0, 4_700_000.0),
    }
    for i in range(layers):
        with rasterio.open(target / f"L{i:02d}.tif", "w", **profile) as dst:
            for r0 in range(0, size, 256):
                h = min(256, size - r0)
                block = rng.lognormal(0.0, 1.0, (h, size)).astype(np.float32)
                if r0 == 0:  # a nodata corner, like a survey boundary
                    block[: min(h, size // 10), : size // 10] = -9999.0
                dst.write(block, 1, window=Window(0, r0, size, h))
    return target


# Measured peak memory of the naive path per window (KiB), with headroom: the window list, the
# concatenated copy and the giant batch's activations (DCN: sampling tables and columns).
_NAIVE_KIB_PER_WINDOW = {"cnn": 80, "dcn": 200}


def _available_mib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def _naive_cap(kind: str, windows: int, requested: int) -> tuple[int, str | None]:
    """Windows the naive path may process so its estimated peak stays under half the free RAM."""
    per = _NAIVE_KIB_PER_WINDOW["dcn" if "dcn" in kind else "cnn"] / 1024
    budget = 0.5 * _available_mib() - 600
    cap = requested or windows
    if cap * per > budget:
        cap = max(1000, int(budget / per))
        return cap, f"capped at {cap} windows (estimated {windows * per:,.0f} MiB for all)"
    return cap, None


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with the command-line options; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Tianshan element folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--kinds", default="cnn,dcn", help="models for part (a)")
    parser.add_argument("--width", type=int, default=64, help="network width (paper: 64)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in every run (0: torch's default)"
    )
    parser.add_argument("--block-rows", type=int, default=64)
    parser.add_argument("--skip-tianshan", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--naive-max-windows",
        type=int,
        default=0,
        help="cap the naive path's windows (0: all, unless it would not fit in memory)",
    )
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--scaling-kind", default="cnn")
    parser.add_argument(
        "--max-cells",
        type=int,
        default=1_050_000,
        help="predict only the first rows (whole blocks) of a synthetic grid with more cells "
        "than this; 0: always the whole grid (2000^2 with the DCN takes hours on 2 cores)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="folder for synthetic grids")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per measurement, seconds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (falls back to the CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0

    import torch

    from benchdevice import bench_device

    args.device = bench_device(args.device).type
    try:
        import torchvision  # noqa: F401

        has_torchvision = True
    except ImportError:
        has_torchvision = False
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": args.threads or torch.get_num_threads(),
            "torchvision": has_torchvision,
            "load_average": os.getloadavg(),
        },
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "worker"
        },
    }
    common = {
        "width": args.width,
        "batch_size": args.batch_size,
        "block_rows": args.block_rows,
        "threads": args.threads,
        "device": args.device,
    }
    gemm = _run_worker({"mode": "gemm", **common}, 600)
    report["gemm"] = gemm

    # (a) Tianshan: streaming vs naive.
    if args.skip_tianshan:
        pass
    elif not args.data.exists():
        print(f"skipping the Tianshan comparison: {args.data} not found")
    else:
        rows = []
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            paths: list[tuple[str, str | None]] = [("stream", None)]
            if not args.skip_naive:
                paths.append(("naive", "ours" if kind in ("dcn", "gk-dcn") else None))
                if has_torchvision and kind in ("dcn", "gk-dcn"):
                    paths.append(("naive", "torchvision"))
            for mode, op in paths:
                task = {"mode": mode, "kind": kind, "data": str(args.data), "op": op, **common}
                if mode == "naive":
                    cap, note = _naive_cap(kind, _TIANSHAN_INTERIOR, args.naive_max_windows)
                    if cap < _TIANSHAN_INTERIOR:
                        task["max_windows"] = cap
                    if note:
                        print(f"  note: naive {kind}: {note}")
                print(f"  running {kind} {mode} {op or ''} ...", flush=True)
                rows.append(_run_worker(task, args.timeout))
        report["tianshan"] = rows
        _print_tianshan(rows, gemm.get("gemm_gflops"), args.width, gemm)

    # (b) Scaling on synthetic grids.
    if not args.skip_scaling:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gkdcn-bench-"))
        rows = []
        for size in args.sizes:
            print(f"  writing the {size} x {size} x {LAYERS} synthetic grid ...", flush=True)
            folder = _write_synthetic(workdir, size)
            task = {"mode": "stream", "kind": args.scaling_kind, "data": str(folder), **common}
            if args.max_cells and size * size > args.max_cells:
                blocks = -(-args.max_cells // (size * args.block_rows))
                task["rows"] = min(size, blocks * args.block_rows)
            print(f"  predicting {size} x {size} ...", flush=True)
            rows.append(_run_worker(task, args.timeout))
        report["scaling"] = rows
        _print_scaling(rows)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out)
    print(f"results written to {args.out}")
    return 0


def _print_tianshan(
    rows: list[dict[str, Any]],
    gemm_gflops: float | None,
    width: int,
    gemm_any: dict[str, Any] | None = None,
) -> None:
    gemm_any = gemm_any or {}
    print("\n(a) Tianshan 117 x 289 x 39, window 9: streaming vs the authors' naive path")
    header = (
        f"{'model':6} {'path':22} {'windows':>8} {'wall s':>7} {'win/s':>7} {'win/cpu-s':>9} "
        f"{'peak MiB':>8} {'% FLOP-best':>11} {'% per cpu-s':>11}"
    )
    print(header)
    print("-" * len(header))
    stream: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = r["task"]
        name = t["mode"] + (f" ({t['op']} op)" if t.get("op") else "")
        if "error" in r:
            print(f"{t['kind']:6} {name:22} error: {r['error']}")
            continue
        frac = "-"
        rate = max(gemm_gflops or 0.0, r.get("gemm_after", {}).get("gemm_gflops", 0.0))
        if rate > 0:
            macs = macs_per_window(t["kind"], LAYERS, width)["total"]
            best = rate * 1e9 / (2 * macs)
            r["flop_limited_windows_per_s"] = best
            r["fraction_of_flop_limit"] = r["windows_per_s"] / best
            frac = f"{100 * r['fraction_of_flop_limit']:.0f}"
        frac_cpu = "-"
        cpu_rates = [
            g.get("gemm_gflops_per_cpu_s") or 0.0 for g in (r.get("gemm_after", {}), gemm_any)
        ]
        if max(cpu_rates) > 0:
            macs = macs_per_window(t["kind"], LAYERS, width)["total"]
            best_cpu = max(cpu_rates) * 1e9 / (2 * macs)
            r["fraction_of_flop_limit_per_cpu_s"] = r["windows_per_cpu_s"] / best_cpu
            frac_cpu = f"{100 * r['fraction_of_flop_limit_per_cpu_s']:.0f}"
        print(
            f"{t['kind']:6} {name:22} {r['windows']:>8} {_fmt(r['seconds'], 1):>7} "
            f"{_fmt(r['windows_per_s']):>7} {_fmt(r['windows_per_cpu_s']):>9} "
            f"{_fmt(r['peak_rss_mb']):>8} {frac:>11} {frac_cpu:>11}"
        )
        if t["mode"] == "stream":
            stream[t["kind"]] = r
    print("\nratios, streaming vs naive (same run; wall-clock and per CPU-second):")
    for r in rows:
        t = r["task"]
        s = stream.get(t["kind"])
        if t["mode"] != "naive" or "error" in r or s is None:
            continue
        r["speedup_stream_vs_this"] = s["windows_per_s"] / r["windows_per_s"]
        r["speedup_per_cpu_s_stream_vs_this"] = s["windows_per_cpu_s"] / r["windows_per_cpu_s"]
        r["rss_ratio_this_vs_stream"] = r["peak_rss_mb"] / s["peak_rss_mb"]
        op = f" ({t['op']} op)" if t.get("op") else ""
        print(
            f"  {t['kind']} vs naive{op}: throughput x{r['speedup_stream_vs_this']:.2f} "
            f"(per CPU-s x{r['speedup_per_cpu_s_stream_vs_this']:.2f}), "
            f"peak RSS naive/stream x{r['rss_ratio_this_vs_stream']:.2f}"
        )
    if gemm_gflops:
        print(
            f"\nFLOP-limited best = GEMM rate / (2 x multiply-adds per window); GEMM rate = the "
            f"best of a float32 matmul before the runs ({gemm_gflops:.1f} GFLOP/s, same threads) "
            "and right after each run; at the first rate:"
        )
        print(
            "  (% per cpu-s: windows per CPU-second against the square matmul's GFLOP per "
            "CPU-second, the steadier figure on a shared machine)"
        )
        for kind in stream:
            macs = macs_per_window(kind, LAYERS, width)
            print(
                f"  {kind}: {macs['total'] / 1e6:.2f} M multiply-adds per window -> "
                f"{gemm_gflops * 1e9 / (2 * macs['total']):,.0f} windows/s"
            )


def _print_scaling(rows: list[dict[str, Any]]) -> None:
    print("\n(b) scaling on synthetic grids (39 layers)")
    header = (
        f"{'grid':>16} {'cells':>10} {'wall s':>8} {'cells/s':>8} {'cells/cpu-s':>11} "
        f"{'setup MiB':>9} {'peak MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        t = r["task"]
        size = Path(t["data"]).name.removeprefix("grid")
        if "error" in r:
            print(f"{size:>16} error: {r['error']}")
            continue
        r["cells_per_s"] = r["cells"] / r["seconds"]
        r["cells_per_cpu_s"] = r["cells"] / r["cpu_seconds"]
        label = f"{size}^2" + (f" rows<{t['rows']}" if t.get("rows") else "")
        print(
            f"{label:>16} {r['cells']:>10,} {_fmt(r['seconds'], 1):>8} {_fmt(r['cells_per_s']):>8} "
            f"{_fmt(r['cells_per_cpu_s']):>11} {_fmt(r['rss_setup_mb']):>9} "
            f"{_fmt(r['peak_rss_mb']):>8}"
        )


if __name__ == "__main__":
    sys.exit(main())
