"""gkdcn ablation: the training recipe with one lever changed at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Device,
    Jobs,
    Overwrite,
    console,
    device_type,
    friendly,
    names,
    progress_bar,
    read_config,
    workers,
)
from gkdcn.compare.variants import DEFAULT_VARIANTS as ABLATION_DEFAULTS
from gkdcn.compare.variants import VARIANTS as ABLATION_VARIANTS
from gkdcn.config import MAX_SEEDS


@friendly
def ablation(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder (resumable): the full recipe's comparison, the variants in "
            "OUT/ablation/<variant>/, the table in OUT/ablation/ablation.{csv,md,json}."
        ),
    ] = Path("runs/ablation"),
    data_dir: DataDir = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated levers to change, one run each (default: "
            + ", ".join(ABLATION_DEFAULTS)
            + "; also: "
            + ", ".join(v for v in ABLATION_VARIANTS if v not in ABLATION_DEFAULTS)
            + ")."
        ),
    ] = None,
    models: Annotated[
        str, typer.Option(help="Comma-separated networks every variant trains.")
    ] = "gk-dcn",
    reference_models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models the full recipe also runs: the other networks and "
            "the baselines, on the same folds (default: the config's \\[compare] models)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(max=MAX_SEEDS, help="Number of seeds.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.")] = None,
    protocol: Annotated[str, typer.Option(help="Held-out protocol: lodo or blocks.")] = "lodo",
    width: Annotated[
        int | None, typer.Option(help="Override the network width (on a CPU: 16).")
    ] = None,
    background: Annotated[
        int | None,
        typer.Option(help="Background cells each held-out deposit is ranked among (0: all)."),
    ] = None,
    knowledge_channel: Annotated[
        bool | None,
        typer.Option(
            "--knowledge-channel/--no-knowledge-channel",
            help="The full recipe with / without the knowledge weight as an input channel "
            "(default: the config's \\[knowledge] as_channel).",
        ),
    ] = None,
    jobs: Jobs = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Held-out AUC of the training recipe with one lever changed at a time, paired over seeds."""
    from gkdcn.compare.ablation import plan_ablation, recipe_config, run_ablation, to_markdown
    from gkdcn.data.study import load_study
    from gkdcn.report.ablation import clear_levers

    cfg = recipe_config(
        read_config(config, data_dir),
        width=width,
        background=background,
        knowledge_channel=knowledge_channel,
    )
    runs = plan_ablation(
        cfg, out, seeds=seeds, epochs=epochs, protocol=protocol,
        variants=names("--variants", variants), models=names("--models", models) or [],
        reference_models=names("--reference-models", reference_models),
    )  # fmt: skip
    study = load_study(cfg)
    show = lambda text: console.print(text, soft_wrap=True)  # noqa: E731
    with progress_bar() as progress:
        table = run_ablation(
            study, out, runs, overwrite=overwrite, workers=workers(jobs),
            device=device_type(device), progress=progress, inputs=[config], log=show,
        )  # fmt: skip
    show(to_markdown(table))
    show(clear_levers(table.to_dict("records")))
    show(f"results in {out}; gkdcn report {out} shows them")
