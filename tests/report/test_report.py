"""The HTML report: built from a run folder fabricated here (the layout `run_comparison` writes),
checked for its numbers, embedded images, self-containment, missing optional parts, overwrite
protection and one-line errors; rendered in headless Chromium when it is installed."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from gkdcn.errors import GkdcnError, InputError, OutputExistsError
from gkdcn.io.toml import to_toml
from gkdcn.report import build_report, fmt_interval, fmt_number
from gkdcn.report.commands import explain_command
from helpers import TRANSFORM, write_raster

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "check_report_browser.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CONFIG: dict[str, Any] = {
    "name": "tiny-district",
    "align": "strict",
    "elements": {"path": "elements", "layers": [], "exclude": []},
    "sites": {
        "deposits": {"points": "deposits.csv", "x": "x", "y": "y", "crs": "EPSG:32645"},
        "negatives": {"count": 4, "min_distance": 3000.0, "seed": 0},
    },
    "knowledge": {
        "faults": "faults.gpkg",
        "decay": {"kind": "rings", "ring_width": 2000.0, "rings": 12, "exponent": 0.46},
        "as_channel": False,
    },
    "transform": {"method": "clr", "scaling": "standard"},
    "samples": {"window": 9, "padding": "zero", "shift": 3, "rotations": False, "flips": True},
    "train": {"epochs": 40, "lr": 0.001, "batch_size": 32, "patience": 10, "gk_lambda": 0.1},
    "compare": {"seeds": 3, "models": ["cnn", "dcn", "gk-cnn", "gk-dcn"], "bootstrap": 1000},
}

# model -> metric -> (mean, lo, hi): the numbers the report must show.
AUTHORS = {
    "cnn": {"auc": (0.9501, 0.9402, 0.9603), "accuracy": (0.99, 0.98, 0.995)},
    "dcn": {"auc": (0.9612, 0.9505, 0.9719), "accuracy": (0.991, 0.985, 0.997)},
    "gk-cnn": {"auc": (0.9555, 0.9455, 0.9655), "accuracy": (0.989, 0.98, 0.998)},
    "gk-dcn": {"auc": (0.9123, 0.8801, 0.9444), "accuracy": (0.992, 0.99, 0.994)},
}
LODO = {
    "cnn": {"auc": (0.801, 0.78, 0.82), "area_50": (0.081, 0.07, 0.092)},
    "dcn": {"auc": (0.812, 0.79, 0.834), "area_50": (0.075, 0.06, 0.09)},
    "gk-cnn": {"auc": (0.805, 0.785, 0.825), "area_50": (0.0625, 0.05, 0.075)},
    "gk-dcn": {"auc": (0.834, 0.81, 0.858), "area_50": (0.07, 0.061, 0.079)},
}


def png_bytes(color: str = "tab:blue") -> bytes:
    """A small real PNG drawn by matplotlib."""
    fig = Figure(figsize=(1.2, 1.0), dpi=40)
    fig.subplots().plot([0, 1], [0, 1], color=color)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def summary_records(table: dict[str, dict[str, tuple[float, float, float]]], seeds: int) -> list:
    rows = []
    for model, metrics in table.items():
        row: dict[str, Any] = {"model": model, "seeds": seeds}
        for metric, (mean, lo, hi) in metrics.items():
            if seeds == 1:
                lo = hi = mean
            row |= {f"{metric}_mean": mean, f"{metric}_sd": 0.01, f"{metric}_lo": lo,
                    f"{metric}_hi": hi}  # fmt: skip
        rows.append(row)
    return rows


def paired(name: str, metric: str, mean: float, lo: float, hi: float, seeds: list[int]) -> dict:
    first, second, tied = seeds
    return {"comparison": name, "metric": metric, "mean_difference": mean, "ci_lo": lo,
            "ci_hi": hi, "seeds_first_better": first, "seeds_second_better": second,
            "seeds_tied": tied, "differences": "+0.010 -0.002 +0.030"}  # fmt: skip


def make_run(
    root: Path,
    *,
    models: tuple[str, ...] = ("cnn", "dcn", "gk-cnn", "gk-dcn"),
    seeds: int = 3,
    protocols: tuple[str, ...] = ("authors", "lodo"),
    figures: bool = True,
    explain: bool = True,
) -> Path:
    """A run folder laid out as `gkdcn.compare.run_comparison` writes it."""
    root.mkdir(parents=True, exist_ok=True)
    plan = {
        "models": list(models),
        "seeds": list(range(seeds)),
        "protocols": list(protocols),
        "train": {
            "epochs": 20,
            "patience": 5,
            "batch_size": 32,
            "lr": 0.001,
            "gk_loss": "sigmoid-mse",
            "gk_lambda": 0.1,
        },
        "bootstrap": 200,
        "background_sample": 2000,
        "quick": True,
    }
    run = {
        "fingerprint": "0123456789abcdef",
        "study": "tiny-district",
        "config": CONFIG,
        "config_base_dir": "/data/tiny",
        "plan": plan,
        "versions": {"gkdcn": "0.1.0", "torch": "2.5.0", "python": "3.11.7"},
    }
    (root / "run.json").write_text(json.dumps(run, indent=2))
    data = {
        "name": "tiny-district",
        "grid": "20 x 24 cells of 1000 x 1000, EPSG:32645, origin (500000, 4e+06)",
        "crs": "EPSG:32645",
        "shape": [20, 24],
        "cell_size": [1000.0, 1000.0],
        "layers": ["As", "Au", "Cu", "Zn"],
        "valid_cells": 470,
        "cells": 480,
        "deposits": 4,
        "non_deposits": 4,
        "skipped_sites": 1,
        "knowledge": {
            "source": "faults",
            "as_channel": False,
            "mean": 0.25,
            "nonzero_fraction": 0.8,
        },
        "notes": ["index alignment: layer Zn has another origin; aligned by cell index"],
        "samples": {"total": 72, "positive": 36, "negative": 36},
        "splits": [
            {
                "name": "site",
                "description": "sites split 80%/20% by label",
                "train": 56,
                "val": 16,
                "train_positive": 28,
                "val_positive": 8,
            }
        ],
    }
    blocks: dict[str, Any] = {}
    pick = {m: v for m, v in AUTHORS.items() if m in models}
    if "authors" in protocols:
        blocks["authors"] = {
            "title": "Authors' protocol: random split by window, whole map scored (in-sample)",
            "summary": summary_records(pick, seeds),
            "paired": [paired("GK-DCN - CNN", "auc", -0.0378, -0.07, -0.005, [0, 3, 0])]
            if {"gk-dcn", "cnn"} <= set(models)
            else [],
        }
    if "lodo" in protocols:
        blocks["lodo"] = {
            "title": "Leave-one-deposit-out: each deposit scored by a model that never saw it",
            "summary": summary_records({m: v for m, v in LODO.items() if m in models}, seeds),
            "paired": [
                paired("GK-DCN - CNN", "auc", 0.0331, 0.0104, 0.0557, [3, 0, 0]),
                paired("DCN - CNN", "auc", 0.011, -0.004, 0.026, [2, 1, 0]),
            ]
            if seeds > 1
            else [paired("GK-CNN - CNN", "auc", 0.004, 0.004, 0.004, [1, 0, 0])],
        }
    summary = {"seconds": 3725.4, "plan": plan, "data": data, "protocols": blocks}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "maps").mkdir(exist_ok=True)
    for model in models:
        write_raster(
            root / "maps" / f"{model}_mean_probability.tif",
            np.full((4, 5), 0.5, dtype=np.float32),
            transform=TRANSFORM,
        )
    if figures:
        (root / "figures").mkdir(exist_ok=True)
        names = ["maps.png", "success_rate_lodo.png", "extra_panel.png"]
        if "authors" in protocols:
            names += ["roc_authors.png", "success_rate_authors.png", "prediction_area_authors.png"]
        for name in names:
            (root / "figures" / name).write_bytes(png_bytes())
    if explain:
        make_explain(root / "explain" / "gk-dcn", n_deposits=5)
    return root


def make_explain(folder: Path, n_deposits: int) -> None:
    """An explanation folder as `gkdcn.explain.run.explain_model` writes it (index.json)."""
    for sub in ("gradcam", "sampling", "offsets"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    files, sites = [], []
    for n in range(n_deposits):
        site = f"D{n + 1:02d}"
        site_files = [f"gradcam/{site}.png"] + [
            f"{kind}/{site}_{layer}.png" for layer in ("conv2", "conv3")
            for kind in ("sampling", "offsets")
        ]  # fmt: skip
        for rel in site_files:
            (folder / rel).write_bytes(png_bytes("tab:red"))
            files.append({"path": rel, "description": f"{rel.split('/')[0]} figure of {site}"})
        sites.append({"id": site, "label": "deposit", "row": 3 + n, "col": 4,
                      "x": 504500.0, "y": 3996500.0 - 1000 * n, "files": site_files})  # fmt: skip
    (folder / "element_ranking.png").write_bytes(png_bytes("tab:green"))
    files.append({"path": "element_ranking.png",
                  "description": "elements ranked by mean contribution at the deposits"})  # fmt: skip
    files.append({"path": "gradcam_map.tif", "description": "Grad-CAM map of every cell"})
    stats = {"n_windows": 5, "mean_offset_cells": 0.4321, "mean_offset_layer_cells": 0.4321,
             "outside_share": 0.125, "outside_share_regular_grid": 0.1, "mean_mask": 0.5678}  # fmt: skip
    background = dict.fromkeys(stats, None) | {"n_windows": 0}
    summary = {
        "units": {},
        "layers": {
            "conv2": {
                "sites": {
                    "layer": "conv2",
                    "scale": 1,
                    "deposit": stats,
                    "background": background,
                    "all": stats,
                },
                "map": {
                    "layer": "conv2",
                    "scale": 1,
                    "valid_cells": 470,
                    "sampled_cells": 400,
                    "seed": 0,
                    "all": stats | {"n_windows": 400, "mean_offset_cells": 0.2},
                },
            }
        },
    }
    (folder / "sampling_summary.json").write_text(json.dumps(summary))
    index = {
        "format": "gkdcn-explanations",
        "version": 1,
        "model": {"kind": "gk-dcn", "window": 9, "padding": "zero", "channels": ["As", "Au"]},
        "gradcam_layer": "conv2",
        "sampling_layers": ["conv2", "conv3"],
        "element": None,
        "element_ranking": ["Au", "As", "Cu", "Zn"],
        "mapped_elements": ["Au"],
        "units": {},
        "sites": sites,
        "files": files,
        "notes": [],
    }
    (folder / "index.json").write_text(json.dumps(index))


class Page(HTMLParser):
    """The report's tables (rows of cell texts, with cell classes), images, and visible text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell, self._cell_class = [], values.get("class") or ""
        elif tag == "img":
            self.images.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            text = re.sub(r"\s+", " ", "".join(self._cell)).strip()
            self.tables[-1][-1].append((text, self._cell_class))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[list[tuple[str, str]]]:
        """The first table whose header row contains ``header``."""
        for table in self.tables:
            if table and any(header == text for text, _ in table[0]):
                return table
        raise AssertionError(f"no table with header {header!r}")

    def row(self, table: list[list[tuple[str, str]]], starts: str) -> list[tuple[str, str]]:
        for row in table:
            if row and row[0][0].startswith(starts):
                return row
        raise AssertionError(f"no row starting {starts!r}")


def text_of(html: str) -> str:
    """Visible text, tags dropped and entities decoded."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = make_run(tmp_path_factory.mktemp("full") / "run")
    path = build_report(run)
    return run, path.read_text(encoding="utf-8")


# --- content ---------------------------------------------------------------------------------


def test_metric_tables_show_mean_and_ci_per_model(full_report: tuple[Path, str]) -> None:
    run, html = full_report
    assert (run / "report.html").is_file()
    page = Page(html)
    metric_tables = [t for t in page.tables if t and t[0][0][0] == "metric"]
    assert len(metric_tables) == 2  # lodo, then authors
    lodo, authors = metric_tables
    assert [text for text, _ in authors[0]] == ["metric", "CNN", "DCN", "GK-CNN", "GK-DCN"]
    auc = page.row(authors, "ROC AUC")
    assert auc[4][0] == "0.912 [0.880, 0.944]"  # GK-DCN
    assert auc[1][0] == "0.950 [0.940, 0.960]"  # CNN
    # Best mean per metric is highlighted, and only it: DCN has the best in-sample AUC.
    assert [("best" in cls) for _, cls in auc[1:]] == [False, True, False, False]
    accuracy = page.row(authors, "Accuracy")
    assert [("best" in cls) for _, cls in accuracy[1:]] == [False, False, False, True]
    # Area needed is lower-is-better and shown in % of area.
    area = page.row(lodo, "Area for 50 % of deposits (% of area)")
    assert area[3][0] == "6.2 [5.0, 7.5]"  # GK-CNN, 0.0625 -> 6.2 %
    assert [("best" in cls) for _, cls in area[1:]] == [False, False, True, False]
    assert "Mean over 3 seeds" in html


def test_held_out_protocol_comes_first_and_authors_is_labelled_in_sample(
    full_report: tuple[Path, str],
) -> None:
    _, html = full_report
    text = text_of(html)
    lodo = text.index("Leave-one-deposit-out: each deposit scored")
    authors = text.index("Authors' protocol: random split by window")
    assert lodo < authors
    section = html[html.index('id="protocol-authors"') :]
    assert "in-sample" in section[: section.index("</h3>")]
    assert "kept to reproduce the paper" in section


def test_paired_differences_with_verdicts(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    page = Page(html)
    tables = [t for t in page.tables if t and t[0][0][0] == "comparison"]
    assert len(tables) == 2
    lodo, authors = tables
    row = page.row(lodo, "GK-DCN - CNN")
    assert [text for text, _ in row] == [
        "GK-DCN - CNN", "ROC AUC", "+0.033", "[+0.010, +0.056]", "3 / 0 / 0", "GK-DCN better",
    ]  # fmt: skip
    row = page.row(lodo, "DCN - CNN")
    assert row[3][0] == "[-0.004, +0.026]" and row[5][0] == "no demonstrated difference"
    row = page.row(authors, "GK-DCN - CNN")
    assert row[2][0] == "-0.038" and row[5][0] == "CNN better"
    assert "a CI crossing 0" not in html  # the explanation is in plain words:
    assert "crosses 0 means no difference has been demonstrated" in text_of(html)


def test_data_summary(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    page = Page(html)
    table = page.tables[0]
    rows = {row[0][0]: row[1][0] for row in table if len(row) == 2}
    assert rows["Grid"] == "20 rows × 24 columns"
    assert rows["Cell size"] == "1000 × 1000 map units"
    assert rows["CRS"] == "EPSG:32645"
    assert rows["Origin (upper-left corner)"] == "x = 500,000, y = 4,000,000"
    assert rows["Valid cells"] == "470 of 480 (97.9 %)"
    assert rows["Sites kept"].startswith("4 deposits, 4 non-deposits; 1 skipped")
    assert rows["Training windows"] == "72 windows (36 deposit, 36 non-deposit)"
    assert "augmented with flips" in rows["Window"]
    assert rows["Transforms"].startswith("centred log-ratio (CLR), then standard scaling")
    assert "faults.gpkg" in rows["Geological knowledge"]
    assert "exponent 0.46" in rows["Geological knowledge"]
    assert "index alignment: layer Zn has another origin" in html
    for layer in ("As", "Au", "Cu", "Zn"):
        assert f"<li>{layer}</li>" in html


def test_maps_curves_and_geotiff_paths(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    text = text_of(html)
    assert "maps/gk-dcn_mean_probability.tif — GK-DCN probability, mean over seeds" in text
    assert "figures/maps.png" in text
    # Curves: the held-out one first, each with its caption; unknown figures still included.
    order = [text.index(f"figures/{n}") for n in (
        "success_rate_lodo.png", "roc_authors.png", "success_rate_authors.png",
        "prediction_area_authors.png", "extra_panel.png")]  # fmt: skip
    assert order == sorted(order)
    assert "This is the curve to trust for finding new deposits" in text


def test_explanations_section(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    section = html[html.index('id="explanations"') : html.index('id="reproduce"')]
    text = text_of(section)
    for site in ("D01", "D02", "D03", "D04"):
        assert f"explain/gk-dcn/gradcam/{site}.png" in text
        assert f"explain/gk-dcn/sampling/{site}_conv2.png" in text
    assert "D05.png" not in text and "Showing 4 of 5 deposits" in text
    assert "offsets/D01" not in text  # offset fields stay in the folder
    assert "Au › As › Cu › Zn" in text
    page = Page(section)
    table = page.table_with("statistic")
    assert [text for text, _ in table[0]] == ["statistic", "deposits", "whole map (400 cells)"]
    assert [t for t, _ in page.row(table, "mean offset length")][1:] == ["0.432", "0.200"]
    assert [t for t, _ in page.row(table, "share of taps outside the map")][1:] == ["12.5", "12.5"]
    assert [t for t, _ in page.row(table, "mean modulation mask")][1:] == ["0.568", "0.568"]
    assert "explain/gk-dcn/gradcam_map.tif" in text


def test_reproducibility_section(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    section = html[html.index('id="reproduce"') :]
    text = text_of(section)
    assert "1 h 02 min" in text  # 3725.4 s
    assert "torch" in text and "2.5.0" in text
    assert "gkdcn compare /data/tiny/study.toml" in text
    assert "--models cnn,dcn,gk-cnn,gk-dcn" in text and "--quick" in text
    assert "gkdcn explain run-again/authors/gk-dcn/seed0/model.pt" in text
    assert "gkdcn report run-again" in text
    # The configuration block is valid TOML holding the run's config.
    block = re.search(r'<pre class="config">(.*?)</pre>', section, re.S)
    assert block is not None
    toml_text = unescape(re.sub(r"</?span>", "", block.group(1)))
    assert tomllib.loads(toml_text) == CONFIG


def test_explain_command_redoes_the_recorded_explanation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    index = {
        "model_file": str(run / "authors" / "dcn" / "seed3" / "model.pt"),
        "settings": {"sites": "all", "layer": "conv3", "element": "Au", "top_k": 5,
                     "map_outputs": True, "map_ig_steps": 4},
    }  # fmt: skip
    args = explain_command(index, "dcn", run, "run-again", "study.toml")
    assert args[:6] == [
        "gkdcn", "explain", "run-again/authors/dcn/seed3/model.pt", "study.toml",
        "--out", "run-again/explain/dcn",
    ]  # fmt: skip
    options = " ".join(args[6:])
    for expected in ("--layer conv3", "--element Au", "--sites all", "--top-k 5",
                     "--map-ig-steps 4"):  # fmt: skip
        assert expected in options
    # A model outside the run folder is named as recorded; no maps means --no-maps.
    index = {"model_file": "/models/mine.pt", "settings": {"map_outputs": False, "top_k": 3}}
    args = explain_command(index, "dcn", run, "run-again", "study.toml")
    assert args[2] == "/models/mine.pt" and args[-1] == "--no-maps" and "--top-k" not in args


# --- self-containment --------------------------------------------------------------------------


def test_every_image_is_an_embedded_png(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    page = Page(html)
    # maps + 5 curves + extra figure + ranking + 4 sites x (Grad-CAM + 2 sampling layers)
    assert len(page.images) == 1 + 5 + 1 + 12
    for image in page.images:
        src = image["src"] or ""
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        assert int(image["width"] or 0) > 0 and image["alt"]


def test_nothing_loads_from_elsewhere(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE)
    page = Page(html)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "@import" not in html and "url(" not in html


# --- optional parts and errors -----------------------------------------------------------------


def test_minimal_run_without_optional_parts(tmp_path: Path) -> None:
    run = make_run(
        tmp_path / "run", models=("cnn", "gk-cnn"), seeds=1, protocols=("lodo",),
        figures=False, explain=False,
    )  # fmt: skip
    html = build_report(run).read_text(encoding="utf-8")
    page = Page(html)
    assert not page.images
    text = text_of(html)
    assert "1 seed: no interval" in text
    assert "Authors' protocol" not in text
    assert "This run has no explanations" in text
    assert "No map figure in this run" in text and "No curve figures in this run" in text
    lodo = page.table_with("metric")
    assert [t for t, _ in lodo[0]] == ["metric", "CNN", "GK-CNN"]
    assert page.row(lodo, "ROC AUC")[1][0] == "0.801"  # a point, no interval
    paired = page.table_with("comparison")
    row = page.row(paired, "GK-CNN - CNN")
    assert row[3][0] == "—" and row[5][0] == "1 seed: no interval"


def test_damaged_figure_is_left_out_with_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", explain=False)
    (run / "figures" / "roc_authors.png").write_text("not an image")
    (run / "explain" / "dcn").mkdir(parents=True)
    (run / "explain" / "dcn" / "index.json").write_text("{broken")
    html = build_report(run).read_text(encoding="utf-8")
    text = text_of(html)
    assert "figures/roc_authors.png: not a PNG image; left out" in text
    assert "explanations of dcn left out" in text
    assert all((i["src"] or "").startswith("data:image/png;base64,") for i in Page(html).images)


def test_report_elsewhere_uses_paths_relative_to_it(tmp_path: Path) -> None:
    run = make_run(tmp_path / "project" / "comparison", explain=False)
    out = build_report(run, tmp_path / "project" / "report.html")
    assert out == tmp_path / "project" / "report.html"
    text = text_of(out.read_text(encoding="utf-8"))
    assert "comparison/maps/cnn_mean_probability.tif" in text
    assert not (run / "report.html").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", explain=False, figures=False)
    out = tmp_path / "r.html"
    out.write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        build_report(run, out)
    assert out.read_text() == "mine"
    build_report(run, out, overwrite=True)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".r.*"))  # no temporary file left behind


def test_not_a_run_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        build_report(tmp_path)
    message = str(err.value)
    assert "no run.json" in message and "\n" not in message and str(tmp_path) in message
    with pytest.raises(InputError, match="not a folder"):
        build_report(tmp_path / "missing")
    run = make_run(tmp_path / "run", figures=False, explain=False)
    (run / "summary.json").unlink()
    with pytest.raises(InputError, match=r"summary\.json: missing .*has not finished"):
        build_report(run)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(GkdcnError, match=r"summary\.json: not valid JSON") as err:
        build_report(run)
    assert "\n" not in str(err.value)
    assert not (run / "report.html").exists()


def test_cli_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gkdcn.cli import app

    run = make_run(tmp_path / "run", figures=False, explain=False)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "already exists" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no run.json" in result.output


# --- formatting helpers ------------------------------------------------------------------------


def test_number_formats() -> None:
    assert fmt_number(0.91234) == "0.912"
    assert fmt_number(0.0625, percent=True) == "6.2"
    assert fmt_number(0.0331, signed=True) == "+0.033"
    assert fmt_number(None) == "—" and fmt_number(float("nan")) == "—"
    assert fmt_interval(0.88, 0.944) == "[0.880, 0.944]"


def test_toml_round_trip() -> None:
    data = {"name": "x y", "n": 3, "f": 1e-5, "flag": True, "list": ["a", "b"],
            "t": {"inner": {"deep": 1.5}, "k": "v"}, "empty": {}}  # fmt: skip
    assert tomllib.loads(to_toml(data)) == data


# --- the browser check -------------------------------------------------------------------------


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_report_browser", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checker_static_checks_catch_broken_and_external_images() -> None:
    checker = load_checker()
    good = base64.b64encode(png_bytes()).decode()
    truncated = base64.b64encode(png_bytes()[:-20]).decode()
    html = (
        f'<img src="data:image/png;base64,{good}"><img src="data:image/png;base64,{truncated}">'
        '<img src="figures/maps.png"><script src="https://cdn.example.org/x.js"></script>'
        '<div style="background: url(http://example.org/a.png)"></div>'
    )
    failures, _, n_images = checker.static_problems(html)
    assert n_images == 3
    assert len(failures) == 4
    assert "image 2: not a valid PNG" in failures[0]
    assert "image 3: not embedded" in failures[1]
    assert "https://cdn.example.org/x.js" in failures[2]
    assert "http://example.org/a.png" in failures[3]


def test_checker_says_how_to_install_chromium(tmp_path: Path, capsys: Any) -> None:
    checker = load_checker()
    report = tmp_path / "r.html"
    report.write_text("<!DOCTYPE html><title>x</title>")
    assert checker.main([str(report), "--chromium", str(tmp_path / "no-chromium")]) == 2
    assert "apt-get install" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(full_report: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = full_report
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [sys.executable, str(CHECKER), str(run / "report.html"), "--screenshot", str(shot)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "19 images" in result.stdout and "ok" in result.stdout
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
