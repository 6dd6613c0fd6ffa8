"""Where everything of a comparison run folder lies: the one place that knows its file names.

The comparison writes a run folder, ``gkdcn explain`` (in the demo) writes into it and the report
reads it back; all of them take their paths from :class:`RunLayout`, so a renamed file changes
here only::

    RUN_DIR/
      run.json                       settings and fingerprint (claims the folder; resumes)
      summary.json                   written last: the run has finished
      <protocol>/<model>/seed<N>/[<fold>/]result.json    one finished job each
      authors/<model>/seed<N>/probability.tif, model.pt, history.csv, training_curve.png
      tables/<protocol>_{runs,summary,paired,calibration}.csv
      maps/<model>_mean_probability.tif
      figures/maps.png, roc_authors.png, success_rate_<protocol>.png, ...
      explain/<model>/index.json ...  (see :class:`ExplainLayout`)
      ablation/<variant>/            one comparison run folder per variant (``gkdcn ablation``)
      ablation/ablation.{csv,md,json}  the ablation table
      report.html

This module imports nothing of gkdcn but the explanation folder's own layout
(:mod:`gkdcn.explain.layout`), so every room may use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gkdcn.explain.layout import ExplainLayout

MEAN_MAP_SUFFIX = "_mean_probability.tif"
MAPS_FIGURE = "maps.png"


def curve_figure_name(kind: str, protocol: str) -> str:
    """File name of a curve figure: ``roc`` / ``success_rate`` / ``prediction_area`` per protocol."""
    return f"{kind}_{protocol}.png"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one comparison run folder, from its root."""

    root: Path

    RUN = "run.json"
    SUMMARY = "summary.json"
    RESULT = "result.json"
    PROBABILITY = "probability.tif"
    MODEL = "model.pt"
    REPORT = "report.html"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- the run as a whole ----------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        """Settings and fingerprint; its presence marks a gkdcn run folder."""
        return self.root / self.RUN

    @property
    def summary_json(self) -> Path:
        """Written last; its presence means the run finished."""
        return self.root / self.SUMMARY

    @property
    def report_html(self) -> Path:
        """Where ``gkdcn report`` writes by default."""
        return self.root / self.REPORT

    # -- jobs --------------------------------------------------------------------------------
    @staticmethod
    def job_key(protocol: str, model: str, seed: int, fold: str | None = None) -> str:
        """A job's folder relative to the root (POSIX), e.g. ``lodo/cnn/seed0/D3``."""
        base = f"{protocol}/{model}/seed{seed}"
        return f"{base}/{fold}" if fold else base

    def job_dir(self, protocol: str, model: str, seed: int, fold: str | None = None) -> Path:
        """The folder of one job (one training and its scores)."""
        return self.root / self.job_key(protocol, model, seed, fold)

    def result(self, protocol: str, model: str, seed: int, fold: str | None = None) -> Path:
        """A job's ``result.json`` (written last: its presence means the job is done)."""
        return self.job_dir(protocol, model, seed, fold) / self.RESULT

    def fold_results(self, protocol: str, model: str, seed: int) -> list[Path]:
        """Every finished fold of a held-out protocol for one model and seed, sorted."""
        return sorted(self.job_dir(protocol, model, seed).glob(f"*/{self.RESULT}"))

    def probability(self, model: str, seed: int, protocol: str = "authors") -> Path:
        """The whole-map probability GeoTIFF of one in-sample job."""
        return self.job_dir(protocol, model, seed) / self.PROBABILITY

    def model_file(self, model: str, seed: int = 0, protocol: str = "authors") -> Path:
        """The saved model of one in-sample job."""
        return self.job_dir(protocol, model, seed) / self.MODEL

    # -- outputs -----------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        """CSV tables per protocol."""
        return self.root / "tables"

    def table(self, protocol: str, name: str) -> Path:
        """``tables/<protocol>_<name>.csv``.

        ``name``: runs, summary, paired, calibration, ensemble, selection.
        """
        return self.tables_dir / f"{protocol}_{name}.csv"

    @property
    def maps_dir(self) -> Path:
        """Seed-mean probability maps."""
        return self.root / "maps"

    def mean_map(self, model: str) -> Path:
        """``maps/<model>_mean_probability.tif``."""
        return self.maps_dir / f"{model}{MEAN_MAP_SUFFIX}"

    def mean_maps(self) -> list[Path]:
        """The GeoTIFFs present in the maps folder, sorted by name."""
        return sorted(self.maps_dir.glob("*.tif"))

    @staticmethod
    def mean_map_model(path: Path) -> str | None:
        """The model kind a seed-mean map belongs to, or None for another GeoTIFF."""
        name = Path(path).name
        return name.removesuffix(MEAN_MAP_SUFFIX) if name.endswith(MEAN_MAP_SUFFIX) else None

    @property
    def figures_dir(self) -> Path:
        """PNG figures of the run."""
        return self.root / "figures"

    def figure(self, name: str) -> Path:
        """``figures/<name>``."""
        return self.figures_dir / name

    # -- explanations ------------------------------------------------------------------------
    @property
    def explain_root(self) -> Path:
        """Folder of the explanation folders, one per model."""
        return self.root / "explain"

    def explain(self, model: str) -> ExplainLayout:
        """The explanation folder of one model."""
        return ExplainLayout(self.explain_root / model)

    def explanations(self) -> list[ExplainLayout]:
        """Explanation folders that hold an index, sorted by name."""
        if not self.explain_root.is_dir():
            return []
        return [
            ExplainLayout(p.parent)
            for p in sorted(self.explain_root.glob(f"*/{ExplainLayout.INDEX}"))
        ]

    # -- the ablation (gkdcn ablation: this folder is its full recipe) --------------------
    @property
    def ablation_dir(self) -> Path:
        """Folder of the ablation's variants and its table."""
        return self.root / "ablation"

    def ablation_run(self, slug: str) -> Path:
        """The comparison run folder of one variant, e.g. ``ablation/no-value-noise``."""
        return self.ablation_dir / slug

    @property
    def ablation_table(self) -> Path:
        """The ablation table (CSV): one row per variant and model."""
        return self.ablation_dir / "ablation.csv"

    @property
    def ablation_markdown(self) -> Path:
        """The same table as GitHub markdown."""
        return self.ablation_dir / "ablation.md"

    @property
    def ablation_json(self) -> Path:
        """The table with its settings (what ``gkdcn report`` reads)."""
        return self.ablation_dir / "ablation.json"

    # -- helpers -----------------------------------------------------------------------------
    def relative(self, path: Path) -> str:
        """``path`` relative to the root, POSIX separators (as shown in the report)."""
        return Path(os.path.relpath(Path(path), self.root)).as_posix()
