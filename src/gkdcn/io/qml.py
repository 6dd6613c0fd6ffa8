"""QGIS layer styles (``.qml``) for the maps gkdcn writes, so they open styled in QGIS.

QGIS loads ``<name>.qml`` beside ``<name>.tif`` as the layer's default style. Two styles, both a
single-band pseudocolour renderer on one band, nodata transparent (QGIS leaves the file's nodata
cells unpainted when ``nodataColor`` is empty):

- **area classes** (:func:`area_class_style`, the default of probability maps): the top 1, 2, 5,
  10 and 20 % of the mapped area as discrete classes, the rest transparent, as prospectivity maps
  are read in ArcSDM and EIS Toolkit. A calibrated map's probabilities are small almost
  everywhere (prior-shift calibration puts the median near the deposit rate), so a fixed 0-1 ramp
  shows it nearly empty; area classes show where the best ranked cells are whatever the scale.
- **a ramp** (viridis, perceptually uniform) from ``minimum`` to ``maximum`` (0-1 for
  probabilities, the value range for Grad-CAM and attributions).

The band's name is written into the style (custom property ``gkdcn_band`` and the layer's title)
so a user can see which band is shown.
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


#: The area classes of a prospectivity map: top shares of the mapped area, smallest first.
AREA_SHARES = (0.01, 0.02, 0.05, 0.10, 0.20)
# Warm to cool, one colour per class of AREA_SHARES (top 1 % darkest red).
_AREA_COLOURS = ("#b2182b", "#e34a33", "#fc8d59", "#fdcc8a", "#fef0d9")


@dataclass(frozen=True)
class AreaClass:
    """Cells at or above ``threshold`` are the top ``share`` of the mapped area."""

    share: float
    threshold: float

    @property
    def label(self) -> str:
        """E.g. ``top 5 %``."""
        return f"top {100 * self.share:g} %"


@dataclass(frozen=True)
class QmlStyle:
    """Which band to style, and how.

    A ramp over ``minimum`` .. ``maximum``, or discrete area ``classes`` (when given, the
    ramp's range is ignored).
    """

    band_name: str
    minimum: float = 0.0
    maximum: float = 1.0
    band: int = 1
    classes: tuple[AreaClass, ...] = ()


def area_classes(values: object, shares: tuple[float, ...] = AREA_SHARES) -> tuple[AreaClass, ...]:
    """The value thresholds of the top ``shares`` of the finite cells of ``values``.

    A threshold is the value of the cell at that rank (ties are kept together: a class may hold
    a little more than its share). Empty where no cell is finite, or where all are equal.
    """
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    finite = np.sort(data[np.isfinite(data)])[::-1]
    if finite.size == 0 or finite[0] == finite[-1]:
        return ()
    out = []
    for share in sorted(shares):
        rank = max(1, int(np.ceil(share * finite.size))) - 1
        out.append(AreaClass(share, float(finite[rank])))
    return tuple(out)


def area_class_style(band_name: str, values: object, band: int = 1) -> QmlStyle:
    """Area classes of ``values`` (:data:`AREA_SHARES`); a 0-1 ramp where they cannot be drawn."""
    classes = area_classes(values)
    return QmlStyle(band_name, 0.0, 1.0, band, classes=classes)


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
    if style.classes:
        _discrete_classes(shader, style.classes)
        return _document(qgis, pipe, style, f"area classes {_class_text(style.classes)}")
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
    return _document(qgis, pipe, style, f"viridis {low:.6g} to {high:.6g}")


def _class_text(classes: tuple[AreaClass, ...]) -> str:
    return ", ".join(f"{c.label} >= {c.threshold:.6g}" for c in classes)


def _discrete_classes(shader: ET.Element, classes: tuple[AreaClass, ...]) -> None:
    """Add a DISCRETE colour ramp of the area classes to ``shader``.

    QGIS paints a value with the first item whose value is not below it, so items run upwards:
    below the widest class transparent, then each class up to the next.
    """
    ramp = ET.SubElement(
        shader, "colorrampshader", colorRampType="DISCRETE", classificationMode="1", clip="0"
    )
    ordered = sorted(classes, key=lambda c: c.share, reverse=True)  # widest (lowest) first
    bounds = [c.threshold for c in ordered]
    # Upper bound of "below the widest class": just under its threshold.
    ET.SubElement(
        ramp, "item", alpha="0", value=f"{math.nextafter(bounds[0], -math.inf):.17g}",
        label=f"below {ordered[0].label}", color="#ffffff",
    )  # fmt: skip
    colours = dict(zip(sorted(c.share for c in classes), _AREA_COLOURS, strict=False))
    for i, cls in enumerate(ordered):
        upper = (
            math.nextafter(ordered[i + 1].threshold, -math.inf)
            if i + 1 < len(ordered)
            else math.inf
        )
        ET.SubElement(
            ramp, "item", alpha="255", value="inf" if upper == math.inf else f"{upper:.17g}",
            label=f"{cls.label} (>= {cls.threshold:.4g})", color=colours[cls.share],
        )  # fmt: skip


def _document(qgis: ET.Element, pipe: ET.Element, style: QmlStyle, what: str) -> str:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(qgis, "blendMode").text = "0"
    ET.indent(qgis)
    body = ET.tostring(qgis, encoding="unicode")
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f"<!-- gkdcn style: band {style.band} ({_comment(style.band_name)}), "
        f"{_comment(what)}, nodata transparent -->\n{body}\n"
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
