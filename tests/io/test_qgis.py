"""QGIS-ready outputs: .qml styles beside maps, internal overviews, Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from gkdcn.errors import OutputExistsError
from gkdcn.io.grid import Grid
from gkdcn.io.qml import QmlStyle, qml_path, qml_text, style_for_values
from gkdcn.io.rasters import write_geotiff


def _grid(size: int) -> Grid:
    return Grid(CRS.from_epsg(32645), Affine(100.0, 0, 500_000, 0, -100.0, 4_000_000), size, size)


def test_qml_is_valid_xml_naming_the_band() -> None:
    root = ET.fromstring(qml_text(QmlStyle("probability", 0.0, 1.0)))
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandpseudocolor"
    assert renderer.get("band") == "1" and renderer.get("nodataColor") == ""
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    names = {o.get("name"): o.get("value") for o in root.iter("Option") if o.get("name")}
    assert names["gkdcn_band"] == "probability"
    items = [float(i.get("value")) for i in root.iter("item")]  # type: ignore[arg-type]
    assert items[0] == 0 and items[-1] == 1 and items == sorted(items)
    # A degenerate range still gives a usable ramp.
    flat = ET.fromstring(qml_text(QmlStyle("gradcam", 2.0, 2.0)))
    assert float(flat.find("pipe/rasterrenderer").get("classificationMax")) > 2  # type: ignore[union-attr,arg-type]


def test_write_geotiff_style_overviews_and_cog(tmp_path: Path) -> None:
    grid = _grid(600)
    band = np.random.default_rng(0).uniform(0, 1, grid.shape).astype(np.float32)
    band[:10] = np.nan
    out = tmp_path / "map.tif"
    write_geotiff(out, band, grid, nodata=-9999, descriptions=["probability"], overviews=True,
                  style=QmlStyle("probability"))  # fmt: skip
    assert qml_path(out).exists()
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4]
        assert ds.descriptions == ("probability",)
    with pytest.raises(OutputExistsError):
        write_geotiff(out, band, grid, nodata=-9999, style=QmlStyle("probability"))
    cog = tmp_path / "map_cog.tif"
    write_geotiff(cog, band, grid, nodata=-9999, descriptions=["probability"], cog=True)
    with rasterio.open(cog) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) and ds.descriptions == ("probability",)
        np.testing.assert_array_equal(ds.read(1, masked=True).mask, ~np.isfinite(band))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.qml", "map.tif", "map_cog.tif"]
    small = tmp_path / "small.tif"
    write_geotiff(small, band[:50, :50], _grid(50), nodata=-9999, overviews=True)
    with rasterio.open(small) as ds:
        assert ds.overviews(1) == []


def test_predict_cli_writes_style_and_cog(tmp_path: Path, tiny_study: object) -> None:
    from typer.testing import CliRunner

    from gkdcn.cli import app
    from gkdcn.data.transforms import ChannelTransform
    from gkdcn.models.bundle import ModelBundle
    from gkdcn.models.nets import ModelSpec, build_network
    from helpers import random_state

    cfg = tiny_study
    channels = ["As", "Au", "Cu", "Zn"]
    spec = ModelSpec(kind="cnn", in_channels=4, window=5, width=8)
    values = np.random.default_rng(0).lognormal(1.0, 0.5, size=(100, 4))
    bundle = ModelBundle(
        spec=spec, state=random_state(build_network(spec), 0), channels=channels,
        transform=ChannelTransform.fit(values, "log", "standard"), padding="zero",
    )  # fmt: skip
    bundle.save(tmp_path / "m.pt")
    elements = cfg.resolve(cfg.elements.path)  # type: ignore[attr-defined]
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "m.pt"), str(elements), "--out", str(tmp_path / "p.tif"),
              "--cog", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "p.qml" in result.output
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.descriptions[0] == "probability"
    root = ET.parse(tmp_path / "p.qml").getroot()
    assert root.find("pipe/rasterrenderer").get("band") == "1"  # type: ignore[union-attr]


def test_style_for_values_spans_the_finite_values() -> None:
    style = style_for_values("gradcam", np.array([[np.nan, -2.0], [3.5, 1.0]]))
    assert (style.minimum, style.maximum, style.band_name) == (-2.0, 3.5, "gradcam")
    assert style_for_values("x", np.full(3, np.nan)) == QmlStyle("x", 0.0, 1.0)


def test_area_classes_hold_the_top_shares_of_the_mapped_cells() -> None:
    from gkdcn.io.qml import AREA_SHARES, area_classes

    values = np.arange(1000, dtype=float)[::-1].reshape(20, 50) / 1000  # 1000 distinct cells
    values[0, :5] = np.nan  # unmapped cells do not count
    classes = area_classes(values)
    finite = values[np.isfinite(values)]
    assert [c.share for c in classes] == list(AREA_SHARES)
    for cls in classes:
        share = (finite >= cls.threshold).mean()
        assert share == pytest.approx(cls.share, abs=1.5 / finite.size)
    assert area_classes(np.full((3, 3), 0.5)) == ()  # a constant map has no classes
    assert area_classes(np.full(3, np.nan)) == ()


def test_a_probability_map_opens_in_area_classes(tmp_path: Path) -> None:
    from gkdcn.io.grid import Grid
    from gkdcn.io.rasters import PROBABILITY_NODATA, write_probability_map

    rng = np.random.default_rng(0)
    prob = (rng.random((40, 50)) * 0.05).astype(np.float32)  # a calibrated map: all below 0.05
    prob[:5] = np.nan
    grid = Grid(crs=None, transform=Affine(100, 0, 0, 0, -100, 0), height=40, width=50)
    write_probability_map(tmp_path / "m.tif", prob, grid)
    root = ET.parse(tmp_path / "m.qml").getroot()
    shader = root.find("pipe/rasterrenderer/rastershader/colorrampshader")
    assert shader is not None and shader.get("colorRampType") == "DISCRETE"
    items = shader.findall("item")
    labels = [item.get("label") for item in items]
    assert labels[0] == "below top 20 %" and items[0].get("alpha") == "0"
    assert [label.split(" (")[0] for label in labels[1:]] == [
        "top 20 %", "top 10 %", "top 5 %", "top 2 %", "top 1 %"
    ]  # fmt: skip
    bounds = [float(item.get("value")) for item in items]  # type: ignore[arg-type]
    assert bounds == sorted(bounds) and bounds[-1] == np.inf
    mapped = prob[np.isfinite(prob)]
    top5 = float(labels[3].split(">= ")[1].rstrip(")"))
    assert (mapped >= top5).mean() == pytest.approx(0.05, abs=0.002)
    assert PROBABILITY_NODATA not in bounds
    write_probability_map(tmp_path / "r.tif", prob, grid, style="ramp")
    ramp = (
        ET.parse(tmp_path / "r.qml")
        .getroot()
        .find("pipe/rasterrenderer/rastershader/colorrampshader")
    )
    assert ramp is not None and ramp.get("colorRampType") == "INTERPOLATED"
