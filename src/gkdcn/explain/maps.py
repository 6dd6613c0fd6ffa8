"""The whole-map explanations: offset statistics over the map, Grad-CAM and attribution GeoTIFFs.

Each cell gets the explanation of the window centred on it; this is the slow part of an
explanation (``map_ig_steps`` forward/backward passes per valid cell for each attribution map),
which ``map_outputs=False`` skips. The GeoTIFFs sit on the input grid, NaN off the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gkdcn.explain.attribution import IG_UNITS, attribution_maps
from gkdcn.explain.gradcam import CAM_UNITS, gradcam_maps
from gkdcn.explain.index import safe_name
from gkdcn.explain.layout import ExplainLayout
from gkdcn.explain.offsets import map_sampling_summary
from gkdcn.io.qml import qml_path, style_for_values
from gkdcn.io.rasters import write_geotiff

if TYPE_CHECKING:
    from rich.progress import Progress

    from gkdcn.explain.index import OutputFiles
    from gkdcn.explain.options import ExplainOptions
    from gkdcn.io.grid import Grid
    from gkdcn.models.bundle import ModelBundle


def map_sampling_summaries(
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    layers: Sequence[str],
    options: ExplainOptions,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Sampling statistics of each deformable layer over (a seeded sample of) the map's cells.

    Parameters
    ----------
    bundle
        The model.
    features
        The transformed ``(C, H, W)`` stack in the model's channel order.
    valid
        ``(H, W)`` cells with data.
    layers
        The deformable layers.
    options
        The settings (``map_sample`` cells at most, drawn with ``seed``; ``batch_size``).
    progress
        A progress display (one task per layer), or None.

    Returns
    -------
    dict
        Per layer, :func:`~gkdcn.explain.offsets.map_sampling_summary`.
    """
    return {
        layer: map_sampling_summary(
            bundle,
            features,
            valid,
            layer,
            max_cells=options.map_sample,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=progress,
        )
        for layer in layers
    }


def write_gradcam_map(
    out: OutputFiles,
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    grid: Grid,
    options: ExplainOptions,
    progress: Progress | None = None,
) -> None:
    """Write ``gradcam_map.tif`` (band 1 at the window centre, band 2 the window mean) and its style.

    Parameters
    ----------
    out
        Where the GeoTIFF and its QGIS style are written and listed.
    bundle
        The model.
    features
        The transformed ``(C, H, W)`` stack in the model's channel order.
    valid
        ``(H, W)`` cells with data.
    grid
        The input grid the map is written on.
    options
        The settings (the Grad-CAM layer, ``batch_size``).
    progress
        A progress display, or None.
    """
    layer = options.cam_layer
    cam_maps = gradcam_maps(
        bundle, features, valid, layer=layer, batch_size=options.batch_size, progress=progress
    )
    path = out.root / ExplainLayout.GRADCAM_MAP
    write_geotiff(
        path,
        np.stack([cam_maps["centre"], cam_maps["mean"]]),
        grid,
        nodata=math.nan,
        descriptions=[f"gradcam_{layer}_centre", f"gradcam_{layer}_mean"],
        overviews=True,
        style=style_for_values(f"gradcam_{layer}_centre", cam_maps["centre"]),
    )
    out.record(
        path,
        f"Grad-CAM at {layer} of the window centred on each cell ({CAM_UNITS}): "
        "band 1 at the window centre, band 2 the window mean; NaN off the data",
    )
    out.record(qml_path(path), "QGIS style of the Grad-CAM map (band 1, its value range)")


def mapped_elements(ranking: Sequence[str], top_k: int, element: str) -> list[str]:
    """The elements that get attribution maps: the ``top_k`` first of ``ranking``, plus ``element``.

    Parameters
    ----------
    ranking
        The elements, largest mean contribution first.
    top_k
        How many of them to map.
    element
        The element shown under the per-site CAMs, always mapped (last when not in the top).

    Returns
    -------
    list of str
        The elements, in ranking order then ``element``.
    """
    mapped = list(ranking[:top_k])
    if element not in mapped:
        mapped.append(element)
    return mapped


def write_attribution_maps(
    out: OutputFiles,
    bundle: ModelBundle,
    features: np.ndarray,
    valid: np.ndarray,
    grid: Grid,
    elements: Sequence[str],
    options: ExplainOptions,
    progress: Progress | None = None,
) -> None:
    """Write one ``attribution_<element>.tif`` per element: its contribution to each cell's logit.

    Parameters
    ----------
    out
        Where the GeoTIFFs are written and listed.
    bundle
        The model.
    features
        The transformed ``(C, H, W)`` stack in the model's channel order.
    valid
        ``(H, W)`` cells with data.
    grid
        The input grid the maps are written on.
    elements
        The elements to map (model channels).
    options
        The settings (``map_ig_steps``, ``batch_size``).
    progress
        A progress display, or None.
    """
    maps = attribution_maps(
        bundle,
        features,
        valid,
        list(bundle.channels),
        elements=list(elements),
        n_steps=options.map_ig_steps,
        batch_size=options.batch_size,
        progress=progress,
    )
    for el in elements:
        path = out.root / ExplainLayout.attribution_map_name(safe_name(el))
        write_geotiff(path, maps[el], grid, nodata=math.nan, descriptions=[f"ig_{el}"])
        out.record(
            path,
            f"contribution of {el} to the logit of the window centred on each cell "
            f"({IG_UNITS}, integrated gradients with {options.map_ig_steps} steps)",
        )
