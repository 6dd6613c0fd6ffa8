"""The paper's comparison as one resumable experiment: models x seeds x protocols.

Protocols
---------
``authors``
    The authors' protocol: windows split at random into training and validation (windows of the
    same deposit land on both sides), the whole map scored against every deposit cell. Every
    deposit was seen in training, so these numbers are **in-sample**; kept to reproduce the paper.
``lodo``
    Leave one deposit out: for each deposit, train without its windows (and without any window
    centred within ``split.exclusion_radius`` of it) for the configured epochs (or those chosen
    inside the fold, :mod:`~gkdcn.compare.selection`), predict, and rank the held-out deposit's
    cell among the background cells.
    The held-out ranks of all deposits are pooled into one AUC / success-rate curve per model and
    seed: each deposit is scored by a model that never saw it.
``blocks``
    Spatial-block cross-validation: like ``lodo`` with whole blocks of sites held out per fold.

Only the studied component differs between the four models: same head, optimiser, epochs,
transforms, splits and seeds. Each finished unit of work (one training + its scores) is written
atomically as soon as it ends, so an interrupted run resumes where it stopped.

One file per job: :mod:`~gkdcn.compare.plan` (what to train), :mod:`~gkdcn.compare.protocols`
(fold schemes), :mod:`~gkdcn.compare.fitting` (the model-kind seam),
:mod:`~gkdcn.compare.selection` (epochs chosen inside the fold), :mod:`~gkdcn.compare.jobs`
(one job, the run folder claim), :mod:`~gkdcn.compare.heldout` (held-out ranking),
:mod:`~gkdcn.compare.stats` (over seeds), :mod:`~gkdcn.compare.results` (tables from the jobs),
:mod:`~gkdcn.compare.outputs` (files), :mod:`~gkdcn.compare.layout` (every path),
:mod:`~gkdcn.compare.run` (the whole run), :mod:`~gkdcn.compare.ablation` (one run per lever of the
training recipe).
"""

from typing import TYPE_CHECKING

from gkdcn.lazy import lazy_names

# The names are loaded on first use (PEP 562), not here: `gkdcn report` needs only
# compare.layout, and importing that submodule runs this file; eager imports would pull in torch
# (fitting, run) and matplotlib (outputs) for a command that reads JSON and PNGs.
if TYPE_CHECKING:
    from gkdcn.compare.ablation import ablation_table, plan_ablation, run_ablation
    from gkdcn.compare.fitting import FittedModel, fit_model
    from gkdcn.compare.heldout import (
        HELDOUT_METRICS,
        background_cells,
        heldout_metrics,
        heldout_ranks,
        heldout_shares,
    )
    from gkdcn.compare.jobs import Job, JobContext, make_jobs, run_job
    from gkdcn.compare.layout import ExplainLayout, RunLayout
    from gkdcn.compare.outputs import comparison_figures, mean_maps, write_outputs
    from gkdcn.compare.plan import (
        QUICK_BACKGROUND,
        QUICK_EPOCHS,
        Plan,
        make_plan,
        override_training,
    )
    from gkdcn.compare.protocols import PROTOCOL_TITLES, fold_scheme, is_heldout, protocol_folds
    from gkdcn.compare.results import AUTHORS_METRICS, Comparison, collect
    from gkdcn.compare.run import run_comparison, study_samples
    from gkdcn.compare.stats import (
        METRIC_RANGE,
        PAIRS,
        mean_ci,
        paired_differences,
        summarize_over_seeds,
    )

_LAZY = {
    "AUTHORS_METRICS": "gkdcn.compare.results",
    "Comparison": "gkdcn.compare.results",
    "ExplainLayout": "gkdcn.compare.layout",
    "FittedModel": "gkdcn.compare.fitting",
    "HELDOUT_METRICS": "gkdcn.compare.heldout",
    "Job": "gkdcn.compare.jobs",
    "JobContext": "gkdcn.compare.jobs",
    "METRIC_RANGE": "gkdcn.compare.stats",
    "PAIRS": "gkdcn.compare.stats",
    "PROTOCOL_TITLES": "gkdcn.compare.protocols",
    "Plan": "gkdcn.compare.plan",
    "QUICK_BACKGROUND": "gkdcn.compare.plan",
    "QUICK_EPOCHS": "gkdcn.compare.plan",
    "RunLayout": "gkdcn.compare.layout",
    "ablation_table": "gkdcn.compare.ablation",
    "background_cells": "gkdcn.compare.heldout",
    "collect": "gkdcn.compare.results",
    "comparison_figures": "gkdcn.compare.outputs",
    "fit_model": "gkdcn.compare.fitting",
    "fold_scheme": "gkdcn.compare.protocols",
    "heldout_metrics": "gkdcn.compare.heldout",
    "heldout_ranks": "gkdcn.compare.heldout",
    "heldout_shares": "gkdcn.compare.heldout",
    "is_heldout": "gkdcn.compare.protocols",
    "make_jobs": "gkdcn.compare.jobs",
    "make_plan": "gkdcn.compare.plan",
    "mean_ci": "gkdcn.compare.stats",
    "mean_maps": "gkdcn.compare.outputs",
    "override_training": "gkdcn.compare.plan",
    "plan_ablation": "gkdcn.compare.ablation",
    "paired_differences": "gkdcn.compare.stats",
    "protocol_folds": "gkdcn.compare.protocols",
    "run_ablation": "gkdcn.compare.ablation",
    "run_comparison": "gkdcn.compare.run",
    "run_job": "gkdcn.compare.jobs",
    "study_samples": "gkdcn.compare.run",
    "summarize_over_seeds": "gkdcn.compare.stats",
    "write_outputs": "gkdcn.compare.outputs",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "AUTHORS_METRICS",
    "HELDOUT_METRICS",
    "METRIC_RANGE",
    "PAIRS",
    "PROTOCOL_TITLES",
    "QUICK_BACKGROUND",
    "QUICK_EPOCHS",
    "Comparison",
    "ExplainLayout",
    "FittedModel",
    "Job",
    "JobContext",
    "Plan",
    "RunLayout",
    "ablation_table",
    "background_cells",
    "collect",
    "comparison_figures",
    "fit_model",
    "fold_scheme",
    "heldout_metrics",
    "heldout_ranks",
    "heldout_shares",
    "is_heldout",
    "make_jobs",
    "make_plan",
    "mean_ci",
    "mean_maps",
    "override_training",
    "paired_differences",
    "plan_ablation",
    "protocol_folds",
    "run_ablation",
    "run_comparison",
    "run_job",
    "study_samples",
    "summarize_over_seeds",
    "write_outputs",
]
