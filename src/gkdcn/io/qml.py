"""QGIS layer styles (``.qml``) for the maps gkdcn writes, so they open styled in QGIS.

QGIS loads ``<name>.qml`` beside ``<name>.tif`` as the layer's default style. The style here is a
single-band pseudocolour renderer on one band with a perceptually uniform ramp (viridis) from
``minimum`` to ``maximum`` (0-1 for probabilities), nodata transparent (QGIS leaves the file's
nodata cells unpainted when ``nodataColor`` is empty). The band's name is written into the style
(custom property ``gkdcn_band`` and the layer's title) so a user can see which band is shown.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from gkdcn.io.atomic import atomic_path

# viridis at 0, 0.25, 0.5, 0.75, 1 (matplotlib's values): readable in colour-blind vision and grey.
_VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
QGIS_VERSION = "3.28.0-Firenze"


@dataclass(frozen=True)
class QmlStyle:
    """Which band to style and the value range of the colour ramp."""

    band_name: str
    minimum: float = 0.0
    maximum: float = 1.0
    band: int = 1


def style_for_values(band_name: str, values: object, band: int = 1) -> QmlStyle:
    """A style whose ramp spans the finite values of ``values`` (e.g. a Grad-CAM band)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return QmlStyle(band_name, 0.0, 1.0, band)
    return QmlStyle(band_name, float(finite.min()), float(finite.max()), band)


def qml_path(tif_path: str | Path) -> Path:
    """Where QGIS looks for the default style of ``tif_path``."""
    return Path(tif_path).with_suffix(".qml")


def qml_text(style: QmlStyle) -> str:
    """The ``.qml`` document (XML) for ``style``."""
    low, high = float(style.minimum), float(style.maximum)
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        low, high = (low, low + 1.0) if math.isfinite(low) else (0.0, 1.0)
    qgis = ET.Element(
        "qgis", version=QGIS_VERSION, styleCategories="Symbology|Rendering|CustomProperties"
    )
    props = ET.SubElement(ET.SubElement(qgis, "customproperties"), "Option", type="Map")
    ET.SubElement(props, "Option", name="gkdcn_band", type="QString", value=style.band_name)
    ET.SubElement(props, "Option", name="gkdcn_band_number", type="QString", value=str(style.band))
    pipe = ET.SubElement(qgis, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="singlebandpseudocolor",
        band=str(style.band),
        opacity="1",
        alphaBand="-1",
        classificationMin=f"{low:.10g}",
        classificationMax=f"{high:.10g}",
        nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    minmax = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(minmax, tag).text = text
    shader = ET.SubElement(renderer, "rastershader")
    ramp = ET.SubElement(
        shader,
        "colorrampshader",
        colorRampType="INTERPOLATED",
        classificationMode="1",
        clip="0",
        minimumValue=f"{low:.10g}",
        maximumValue=f"{high:.10g}",
        labelPrecision="2" if high - low <= 10 else "0",
    )
    gradient = ET.SubElement(ramp, "colorramp", type="gradient", name="[source]")
    gopts = ET.SubElement(gradient, "Option", type="Map")
    stops = ":".join(
        f"{i / (len(_VIRIDIS) - 1):g};{_rgba(c)}" for i, c in enumerate(_VIRIDIS[1:-1], 1)
    )
    for key, value in (
        ("color1", _rgba(_VIRIDIS[0])),
        ("color2", _rgba(_VIRIDIS[-1])),
        ("discrete", "0"),
        ("rampType", "gradient"),
        ("stops", stops),
    ):
        ET.SubElement(gopts, "Option", name=key, type="QString", value=value)
    for i, colour in enumerate(_VIRIDIS):
        at = low + (high - low) * i / (len(_VIRIDIS) - 1)
        ET.SubElement(
            ramp, "item", alpha="255", value=f"{at:.10g}", label=f"{at:.3g}", color=colour
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(qgis, "blendMode").text = "0"
    ET.indent(qgis)
    body = ET.tostring(qgis, encoding="unicode")
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f"<!-- gkdcn style: band {style.band} ({_comment(style.band_name)}), "
        f"viridis {low:.6g} to {high:.6g}, nodata transparent -->\n{body}\n"
    )


def _rgba(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"{r},{g},{b},255"


def _comment(text: str) -> str:
    # "--" may not appear inside an XML comment.
    return text.replace("--", "- -")


def write_qml(tif_path: str | Path, style: QmlStyle, overwrite: bool = False) -> Path:
    """Write the style beside ``tif_path`` (same name, ``.qml``), atomically; its path."""
    path = qml_path(tif_path)
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(qml_text(style), encoding="utf-8")
    return path
