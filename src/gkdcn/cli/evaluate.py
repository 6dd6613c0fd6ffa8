"""gkdcn evaluate: score a probability map against deposits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Overwrite,
    console,
    friendly,
    input_paths,
    say,
)
from gkdcn.config import MAX_BOOTSTRAP, MAX_SEED
from gkdcn.errors import GkdcnError, InputError


def _check_site_options(sites: Path, given: dict[str, object]) -> None:
    """Refuse evaluate's site options that the kind of ``sites`` would ignore.

    A study config says where its deposits are, a raster has no columns, points have no marker
    value.
    """
    suffix = sites.suffix.lower()
    applies: tuple[str, ...]
    if suffix == ".toml":
        kind, applies = "a study config (its [sites.deposits] says where they are)", ()
    elif suffix in (".tif", ".tiff"):
        kind, applies = "a deposit raster", ("--value",)
    else:
        kind, applies = "deposit points", ("--x", "--y", "--crs")
    ignored = [name for name, value in given.items() if value is not None and name not in applies]
    if ignored:
        raise InputError(sites, f"{', '.join(ignored)} does not apply to {kind}")


@friendly
def evaluate(
    map_path: Annotated[Path, typer.Argument(metavar="MAP", help="Probability GeoTIFF.")],
    sites: Annotated[
        Path, typer.Argument(help="Study config (TOML), deposit points (CSV/vector) or raster.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, curves (CSV) and plots.")],
    data_dir: DataDir = None,
    x: Annotated[
        str | None, typer.Option(help="x column of a CSV or Excel table (any case; default x).")
    ] = None,
    y: Annotated[
        str | None, typer.Option(help="y column of a CSV or Excel table (any case; default y).")
    ] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of CSV coordinates.")] = None,
    value: Annotated[
        float | None, typer.Option(help="Marker value in a deposit raster (default 1).")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC CI.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Bootstrap seed.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Score a probability map against deposits: metrics, ROC/PR, success-rate, P-A, CIs."""
    from gkdcn.data.sites import deposit_cells
    from gkdcn.evaluate import check_evaluation_outputs, evaluate_map, write_evaluation
    from gkdcn.io.rasters import read_probability_map

    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise GkdcnError(
            f"--bootstrap must be between 0 (no CI) and {MAX_BOOTSTRAP}, not {bootstrap}"
        )
    _check_site_options(sites, {"--x": x, "--y": y, "--crs": crs, "--value": value})
    inputs = [map_path, *input_paths(sites, data_dir)]
    check_evaluation_outputs(out, overwrite, inputs=inputs)
    prob, valid, grid = read_probability_map(map_path)
    rows, cols, notes = deposit_cells(
        sites, grid, valid, data_dir=data_dir, x=x or "x", y=y or "y", crs=crs,
        value=1 if value is None else value,
    )  # fmt: skip
    for note in notes:
        say("note:", note)
    ev = evaluate_map(prob, valid, rows, cols, n_boot=bootstrap, seed=seed)
    written = write_evaluation(ev, out, overwrite=overwrite, title=map_path.stem, inputs=inputs)
    m = ev.to_dict()
    low, high = m["auc_ci"]
    ci = "no CI" if low is None or high is None else f"95% CI {low:.3f}-{high:.3f}"
    console.print(
        f"AUC {m['auc']:.3f} ({ci}), "
        f"success-rate AUC {m['success_auc']:.3f}, F1 {m['f1']:.3f} at threshold {m['threshold']:.3f}; "
        f"{len(rows)} deposits, {int(valid.sum())} valid cells"
    )
    console.print(f"wrote {len(written)} files to {out}")
