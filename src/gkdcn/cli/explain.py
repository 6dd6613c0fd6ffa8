"""gkdcn explain: Grad-CAM, deformable sampling and attribution of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from gkdcn.cli.common import (
    DataDir,
    Overwrite,
    console,
    friendly,
    input_paths,
    progress_bar,
    read_study,
    say,
)
from gkdcn.explain import defaults as explain_defaults


@friendly
def explain(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    config: Annotated[Path, typer.Argument(help="Study config (TOML) or prepared folder.")],
    out: Annotated[Path, typer.Option(help="Folder for figures, maps and index.json.")],
    data_dir: DataDir = None,
    layer: Annotated[str | None, typer.Option(help="Layer for Grad-CAM (default conv2).")] = None,
    element: Annotated[
        str | None,
        typer.Option(
            help="Element shown beside the CAM (default: the one contributing most at the deposits)."
        ),
    ] = None,
    sites: Annotated[str, typer.Option(help="deposits or all.")] = explain_defaults.SITES,
    top_k: Annotated[
        int, typer.Option(min=1, max=1000, help="Attribution maps for the top-k elements.")
    ] = explain_defaults.TOP_K,
    maps: Annotated[bool, typer.Option(help="Write full-map GeoTIFFs.")] = True,
    map_ig_steps: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="Integrated-gradient steps per cell for the attribution maps."
        ),
    ] = explain_defaults.MAP_IG_STEPS,
    overwrite: Overwrite = False,
) -> None:
    """Grad-CAM, deformable sampling and per-element attribution for a trained model."""
    from gkdcn.explain.run import SiteChoice, explain_model
    from gkdcn.io.atomic import check_writable
    from gkdcn.models.bundle import ModelBundle

    check_writable(out, overwrite, inputs=[model, *input_paths(config, data_dir)], folder=True)
    bundle = ModelBundle.load(model)
    if len(bundle.members) > 1:
        say(
            "note:",
            f"{model} holds {len(bundle.members)} members (a seed ensemble); "
            "explain shows the first",
        )
    study = read_study(config, data_dir)
    from gkdcn.predict import check_model_grid

    check_model_grid([bundle], study.grid, config)
    # A plain str on the command line (so a wrong one gets explain's one-line error, not
    # Typer's usage box); explain_model refuses anything but "deposits" and "all".
    choice = cast("SiteChoice", sites)
    with progress_bar() as progress:
        index = explain_model(
            bundle, study, out, sites=choice, layer=layer, element=element, top_k=top_k,
            map_outputs=maps, map_ig_steps=map_ig_steps, overwrite=overwrite, progress=progress,
            model_file=model,
        )  # fmt: skip
    console.print(f"wrote {len(index.get('files', index))} outputs to {out} (see index.json)")
