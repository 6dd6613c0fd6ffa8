"""A quick comparison on the local process pool and on a Dask LocalCluster, 1 and 2 workers.

Usage::

    python bench/bench_cluster.py [--out bench/results/cluster.json] [--seeds 2] [--epochs N]
                                  [--models cnn,dcn,gk-cnn,gk-dcn] [--protocols authors,lodo]

Runs the same ``--quick`` comparison (on the demo's synthetic district, seeds 0..N-1) four times
into fresh folders: the local runner with 1 and 2 workers, and a Dask ``local:1`` and
``local:2`` cluster (loopback only). It prints one table and writes JSON: wall time (cluster
start included, and without it), the speed-up of 2 workers over 1 per engine (target >= 1.7x
on 2 cores), the cluster path's overhead over the local pool with the same workers (target
<= 10 %), and whether all runs' tables are identical byte for byte (they must be). The machine's
load average before and after is recorded: on a shared machine, run it when it is quiet.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from gkdcn.cluster import open_client
from gkdcn.compare import make_plan, run_comparison
from gkdcn.config import load_config
from gkdcn.data.study import load_study
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.io.atomic import write_text


def _tables(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "tables").glob("*.csv"))}


def main() -> None:
    """Run the benchmark with the command-line options and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cluster.json"))
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the quick plan (default 2)")
    parser.add_argument("--epochs", type=int, default=None, help="override the quick epochs")
    parser.add_argument("--models", default=None, help="subset, e.g. cnn,gk-dcn (default all)")
    parser.add_argument("--protocols", default="authors,lodo")
    parser.add_argument("--district-seed", type=int, default=0)
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gkdcn-bench-cluster-") as tmp:
        root = Path(tmp)
        config = generate_district(root / "district", SyntheticSpec(seed=args.district_seed))
        cfg = load_config(config)
        study = load_study(cfg)
        plan = make_plan(
            cfg, quick=True, seeds=args.seeds, epochs=args.epochs,
            models=args.models.split(",") if args.models else None,
            protocols=args.protocols.split(","),
        )  # fmt: skip
        rows = []
        reference: dict[str, bytes] | None = None
        for engine, workers in (("pool", 1), ("pool", 2), ("dask", 1), ("dask", 2)):
            out = root / f"{engine}{workers}"
            tic = time.perf_counter()
            if engine == "pool":
                run_comparison(study, out, plan, workers=workers)
                started = tic
            else:
                with open_client(f"local:{workers}") as client:
                    # Worker start-up ends once they have imported gkdcn (the pool's workers
                    # import it during the run: their start stays in its time).
                    client.run(importlib.import_module, "gkdcn.compare")
                    started = time.perf_counter()
                    run_comparison(study, out, plan, scheduler=client)
            toc = time.perf_counter()
            tables = _tables(out)
            reference = reference or tables
            n_jobs = sum(1 for _ in out.rglob("result.json"))
            rows.append(
                {
                    "engine": engine,
                    "workers": workers,
                    "jobs": n_jobs,
                    "seconds": round(toc - tic, 2),
                    "seconds_without_start": round(toc - started, 2),
                    "identical_tables": tables == reference,
                }
            )
            print(f"{engine} x{workers}: {toc - tic:.1f} s ({n_jobs} jobs)", flush=True)
    load_after = os.getloadavg()

    by = {(r["engine"], r["workers"]): r for r in rows}
    speedup = {e: by[(e, 1)]["seconds"] / by[(e, 2)]["seconds"] for e in ("pool", "dask")}
    overhead = {w: by[("dask", w)]["seconds"] / by[("pool", w)]["seconds"] - 1 for w in (1, 2)}
    overhead_run = {
        w: by[("dask", w)]["seconds_without_start"] / by[("pool", w)]["seconds"] - 1 for w in (1, 2)
    }
    print()
    print("pool x1 runs in this process; dask 'w/o start': after the workers started and imported")
    print(f"{'engine':8s}{'workers':>8s}{'jobs':>6s}{'wall s':>9s}{'w/o start':>11s}  tables")
    for r in rows:
        print(
            f"{r['engine']:8s}{r['workers']:8d}{r['jobs']:6d}{r['seconds']:9.1f}"
            f"{r['seconds_without_start']:11.1f}  {'identical' if r['identical_tables'] else 'DIFFER'}"
        )
    print()
    for engine, value in speedup.items():
        print(f"speed-up 2 vs 1 workers, {engine}: {value:.2f}x (target >= 1.7x on 2 cores)")
    for w in (1, 2):
        print(
            f"cluster overhead vs local pool, {w} worker(s): {100 * overhead[w]:+.1f} % "
            f"({100 * overhead_run[w]:+.1f} % without the cluster's start; target <= 10 %)"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    result = {
        "plan": plan.to_dict(),
        "district_seed": args.district_seed,
        "rows": rows,
        "speedup_2_vs_1": speedup,
        "cluster_overhead": {str(w): v for w, v in overhead.items()},
        "cluster_overhead_without_start": {str(w): v for w, v in overhead_run.items()},
        "all_tables_identical": all(r["identical_tables"] for r in rows),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    write_text(args.out, json.dumps(result, indent=2), overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
