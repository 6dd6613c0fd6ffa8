"""Batch export of every explanation for one model on one study, written as one folder.

:func:`explain_model` writes, for the chosen sites (every deposit, plus non-deposits or the user's
own points): a Grad-CAM figure per site, the deformable sampling and offset-field figures per site
and deformable layer, per-element integrated-gradients contributions (CSV and ranked chart), the
offset statistics (JSON), map GeoTIFFs on the input grid, and ``index.json`` listing every file
with a one-line description. The folder is built aside and moved into place only when complete.

The steps live beside it: :mod:`gkdcn.explain.sites` (the per-site figures and table),
:mod:`gkdcn.explain.maps` (the whole-map statistics and GeoTIFFs) and
:mod:`gkdcn.explain.index` (the list of files written and the index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gkdcn.data.samples import extract_windows
from gkdcn.errors import GkdcnError
from gkdcn.explain import defaults
from gkdcn.explain.index import INDEX_VERSION, OutputFiles, index_record, safe_name, write_index
from gkdcn.explain.maps import (
    map_sampling_summaries,
    mapped_elements,
    write_attribution_maps,
    write_gradcam_map,
)
from gkdcn.explain.options import ExplainOptions, SiteChoice
from gkdcn.explain.sites import (
    LABEL_NAMES,
    POINT_LABEL,
    StudyLike,
    choose_sites,
    explain_sites,
    select_sites,
    write_sampling_summary,
)
from gkdcn.io.atomic import atomic_dir

if TYPE_CHECKING:
    from rich.progress import Progress
    from torch import nn

    from gkdcn.models.bundle import ModelBundle

__all__ = [
    "INDEX_VERSION",
    "LABEL_NAMES",
    "POINT_LABEL",
    "ExplainOptions",
    "ModelLayers",
    "SiteChoice",
    "StudyLike",
    "explain_model",
    "model_layers",
    "safe_name",
    "select_sites",
]


@dataclass(frozen=True)
class ModelLayers:
    """The network to explain and the layers its explanations look at.

    Attributes
    ----------
    net
        The network built from the model file.
    sampling
        The deformable layers whose sampling is drawn (empty for a plain CNN).
    """

    net: nn.Module
    sampling: list[str]


def model_layers(bundle: ModelBundle, options: ExplainOptions) -> ModelLayers:
    """Build the network and check the options against it.

    Parameters
    ----------
    bundle
        The model.
    options
        The settings: the Grad-CAM layer must be one of the network's convolutions, the
        element one of its channels, ``top_k`` at least 1.

    Returns
    -------
    ModelLayers
        The network and the deformable layers to draw: the chosen layer when it is deformable,
        else every deformable layer.

    Raises
    ------
    GkdcnError
        When a setting does not fit the model.
    """
    net = bundle.network()
    layers = net.conv_layers() if hasattr(net, "conv_layers") else {}
    if layers and options.cam_layer not in layers:
        raise GkdcnError(f"unknown layer {options.cam_layer!r} (choose {', '.join(layers)})")
    deformable = net.deformable_layers() if hasattr(net, "deformable_layers") else {}
    sampling = [options.layer] if options.layer in deformable else list(deformable)
    names = list(bundle.channels)
    if options.element is not None and options.element not in names:
        raise GkdcnError(f"element {options.element!r} is not a model channel ({', '.join(names)})")
    if options.top_k < 1:
        raise GkdcnError(f"top_k must be >= 1, got {options.top_k}")
    return ModelLayers(net=net, sampling=[str(name) for name in sampling])


def explain_model(
    bundle: ModelBundle,
    study: StudyLike,
    out_dir: str | Path,
    *,
    sites: SiteChoice = defaults.SITES,
    layer: str | None = None,
    element: str | None = None,
    top_k: int = defaults.TOP_K,
    map_outputs: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    ig_steps: int = 50,
    map_ig_steps: int = defaults.MAP_IG_STEPS,
    map_sample: int | None = 20000,
    seed: int = 0,
    batch_size: int = 256,
    model_file: str | Path | None = None,
) -> dict[str, Any]:
    """Write all explanations of ``bundle`` on ``study`` into ``out_dir``; returns the index.

    ``layer`` sets the Grad-CAM layer (default ``conv2``) and, when deformable, the only layer
    whose sampling is drawn (otherwise every deformable layer is). ``element`` picks the element
    shown under the per-site CAMs (default: the element contributing most at the deposits) and
    is always mapped.
    ``top_k`` elements (by mean contribution at the deposits) get attribution maps.
    ``map_outputs=False`` skips all whole-map work (GeoTIFFs, map offset statistics), which is
    the slow part: ``map_ig_steps`` forward/backward passes per valid cell. ``map_sample`` caps
    the cells used for the map offset statistics (seeded with ``seed``; None = all).
    ``model_file`` (where ``bundle`` was read from) and these settings are recorded in the index,
    so that a report can give the command that redoes the explanation.
    Refuses to replace an existing ``out_dir`` unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    options = ExplainOptions(
        sites=sites,
        layer=layer,
        element=element,
        top_k=top_k,
        map_outputs=map_outputs,
        ig_steps=ig_steps,
        map_ig_steps=map_ig_steps,
        map_sample=map_sample,
        seed=seed,
        batch_size=batch_size,
        model_file=model_file,
    )
    order = bundle.channel_order(list(study.names))
    model = model_layers(bundle, options)
    chosen = choose_sites(study, options.sites)
    valid = np.asarray(study.valid, dtype=bool)
    config = getattr(study, "config", None)  # a Study has one; a bare StudyLike may not
    inputs = config.input_paths() if config is not None else []
    inputs += [Path(model_file)] if model_file is not None else []
    with atomic_dir(out_dir, overwrite, inputs=inputs, command="explain") as tmp:
        out = OutputFiles(tmp)
        features = bundle.transform.apply(np.asarray(study.raw)[order])
        windows = extract_windows(features, chosen.rows, chosen.cols, bundle.window, bundle.padding)
        found = explain_sites(
            model.net,
            windows,
            chosen,
            kind=bundle.kind,
            names=list(bundle.channels),
            sampling_layers=model.sampling,
            options=options,
            out=out,
            progress=progress,
        )
        on_map = (
            map_sampling_summaries(bundle, features, valid, model.sampling, options, progress)
            if map_outputs
            else {}
        )
        write_sampling_summary(
            out,
            {
                name: {"sites": at_sites, **({"map": on_map[name]} if name in on_map else {})}
                for name, at_sites in found.sampling.items()
            },
        )
        mapped = mapped_elements(found.ranking, top_k, found.element) if map_outputs else []
        if map_outputs:
            write_gradcam_map(out, bundle, features, valid, study.grid, options, progress)
            write_attribution_maps(
                out, bundle, features, valid, study.grid, mapped, options, progress
            )
        index = index_record(
            bundle,
            options,
            sampling_layers=model.sampling,
            element=found.element,
            ranking=found.ranking,
            mapped=mapped,
            sites=chosen.records(found.files),
            files=out,
            notes=found.notes,
        )
        write_index(tmp, index)
    return {**index, "out_dir": str(out_dir)}
