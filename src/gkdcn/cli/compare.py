"""gkdcn compare: the comparison of every model over seeds and protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Device,
    Jobs,
    Overwrite,
    Precision,
    SchedulerOption,
    console,
    device_type,
    friendly,
    names,
    progress_bar,
    read_config,
    say,
    workers,
)
from gkdcn.config import MAX_SEEDS


@friendly
def compare(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    out: Annotated[Path, typer.Option(help="Run folder (resumable).")] = Path("runs/compare"),
    data_dir: DataDir = None,
    quick: Annotated[bool, typer.Option(help="Small version: 2 seeds, short training.")] = False,
    seeds: Annotated[int | None, typer.Option(max=MAX_SEEDS, help="Number of seeds.")] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of the networks cnn,dcn,gk-cnn,gk-dcn and the "
            "baselines knowledge,element,logistic,random-forest (default: all eight)."
        ),
    ] = None,
    protocols: Annotated[
        str | None, typer.Option(help="Comma-separated: authors, lodo, blocks.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.")] = None,
    jobs: Jobs = None,
    device: Device = "cpu",
    precision: Precision = None,
    overwrite: Overwrite = False,
    scheduler: SchedulerOption = None,
    stack_seeds: Annotated[
        bool,
        typer.Option(
            help="Train a network's seeds on one fold at once as one stacked model (the same "
            "results to rounding; see README, Benchmarks, for when it is faster)."
        ),
    ] = False,
) -> None:
    """Train CNN, DCN, GK-CNN and GK-DCN and fit four baselines over seeds, in-sample and held out."""
    from gkdcn.compare import make_plan, run_comparison
    from gkdcn.console import comparison_tables
    from gkdcn.data.study import load_study

    cfg = read_config(config, data_dir)
    plan = make_plan(
        cfg, quick=quick, seeds=seeds, epochs=epochs, precision=precision,
        models=names("--models", models), protocols=names("--protocols", protocols),
    )  # fmt: skip
    study = load_study(cfg)
    if scheduler is not None and jobs is not None:
        # The cluster's workers decide how many trainings run at once.
        say(
            "note:",
            f"--jobs {jobs} is not used with --scheduler: every worker of the "
            "cluster runs one training at a time",
        )
    with progress_bar() as progress:
        comparison = run_comparison(
            study, out, plan, overwrite=overwrite, progress=progress, device=device_type(device),
            workers=workers(jobs), inputs=[config], scheduler=scheduler,
            stack_seeds=stack_seeds,
        )  # fmt: skip
    # soft_wrap: wide tables stay one row per line in logs and narrow terminals
    for table in comparison_tables(comparison):
        console.print(table)
    console.print(f"finished in {comparison.seconds:.0f} s; results in {out}")
