"""The files of one explanation folder: the one place that names them.

:func:`gkdcn.explain.run.explain_model` writes them, the report reads them; in a comparison run
folder the folder of model ``m`` is ``RUN_DIR/explain/m`` (:meth:`gkdcn.compare.RunLayout.explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: ``format`` of an explanation index.
INDEX_FORMAT = "gkdcn-explanations"


@dataclass(frozen=True)
class ExplainLayout:
    """The files of one explanation folder (``gkdcn explain --out``, ``RUN_DIR/explain/<model>``)."""

    root: Path

    INDEX = "index.json"
    SAMPLING_SUMMARY = "sampling_summary.json"
    RANKING_FIGURE = "element_ranking.png"
    ATTRIBUTION_TABLE = "element_attribution.csv"
    GRADCAM_MAP = "gradcam_map.tif"
    GRADCAM_DIR = "gradcam"
    SAMPLING_DIR = "sampling"
    OFFSETS_DIR = "offsets"

    @property
    def index(self) -> Path:
        """``index.json``: what the folder holds (written last)."""
        return self.root / self.INDEX

    @property
    def sampling_summary(self) -> Path:
        """Sampling statistics of the deformable layers."""
        return self.root / self.SAMPLING_SUMMARY

    @property
    def ranking_figure(self) -> Path:
        """The element-contribution bar chart."""
        return self.root / self.RANKING_FIGURE

    @staticmethod
    def attribution_map_name(element: str) -> str:
        """File name of one element's whole-map attribution (``element`` already file-safe)."""
        return f"attribution_{element}.tif"
