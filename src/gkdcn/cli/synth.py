"""gkdcn synth: generate a synthetic district."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    MAX_SURVEY_SAMPLES,
    Overwrite,
    Seed,
    console,
    friendly,
    say,
)
from gkdcn.errors import GkdcnError


@friendly
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create for the synthetic district.")],
    seed: Seed = 0,
    height: Annotated[int, typer.Option(help="Rows of the grid.")] = 96,
    width: Annotated[int, typer.Option(help="Columns of the grid.")] = 128,
    layers: Annotated[int, typer.Option(help="Number of element layers.")] = 12,
    deposits: Annotated[int, typer.Option(help="Number of deposits.")] = 10,
    systems: Annotated[
        int | None,
        typer.Option(
            help="Fault-controlled anomaly systems (0: bodies scattered along the faults; "
            "default: 0 up to 12 deposits, else one per 10 deposits)."
        ),
    ] = None,
    undiscovered: Annotated[
        float | None,
        typer.Option(help="With systems: share of mineralised bodies without a known deposit."),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            max=MAX_SURVEY_SAMPLES,
            help="Also write samples.csv: a survey of this many point samples.",
        ),
    ] = 0,
    cell_size: Annotated[float, typer.Option(help="Cell size of the true layers (map units).")] = (
        1000.0
    ),
    barren: Annotated[
        int | None,
        typer.Option(
            min=0, max=100, help="Barren anomalies (default: 3, or 2 per anomaly system)."
        ),
    ] = None,
    signature_spread: Annotated[
        float,
        typer.Option(
            help="With systems: how much each element's anomaly contrast differs between "
            "systems (0-1; 0 = one signature)."
        ),
    ] = 0.0,
    survey_cell: Annotated[
        float | None,
        typer.Option(
            help="With --samples: grid the survey (IDW) onto cells of this size and write "
            "survey.toml, a study of the gridded survey instead of the true layers."
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Generate a synthetic district (GeoTIFFs, deposits, faults, study.toml)."""
    from gkdcn.data.synthetic import generate_district, spec_from_dict

    if samples and samples < 3:
        raise GkdcnError(f"--samples must be at least 3 (or 0 for none), not {samples}")
    if survey_cell is not None and not samples:
        raise GkdcnError("--survey-cell grids a survey: give --samples as well")
    if survey_cell is not None and not survey_cell > 0:
        raise GkdcnError(f"--survey-cell must be a positive cell size, not {survey_cell}")
    # Validated like a spec file, so a bad value is one line, not a traceback.
    spec = spec_from_dict(
        {
            "seed": seed,
            "height": height,
            "width": width,
            "n_layers": layers,
            "n_deposits": deposits,
            "n_systems": systems,
            "undiscovered": undiscovered,
            "cell_size": cell_size,
            "n_barren_anomalies": barren,
            "signature_spread": signature_spread,
        }
    )
    config_path = generate_district(out_dir, spec, overwrite=overwrite)
    console.print(f"wrote synthetic district to {out_dir} (study config: {config_path})")
    if survey_cell is not None:
        from gkdcn.data.survey import write_survey_study

        survey = write_survey_study(
            out_dir, spec, samples, survey_cell, log=lambda text: say("note:", text)
        )
        console.print(f"wrote a survey of {samples} samples gridded onto {survey_cell:g} cells")
        console.print(f"study of the gridded survey: {survey}")
    elif samples:
        from gkdcn.data.survey import write_survey

        path = write_survey(out_dir / "samples.csv", spec, samples)
        console.print(f"wrote a survey of {samples} samples: {path}")
