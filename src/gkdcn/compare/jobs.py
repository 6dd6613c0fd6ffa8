"""The jobs of a comparison: one per protocol x seed x fold x model, each written when it ends.

:func:`make_jobs` lists them from the plan, :func:`claim_run_dir` creates or resumes the run
folder, and :func:`run_job` fits one model on one fold (through the single seam
:func:`gkdcn.compare.fitting.fit_model`) and writes its scores. Only the runner
(:func:`gkdcn.runner.run_jobs`) decides where and how many run at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.progress import Progress

from gkdcn.compare.fitting import fit_model
from gkdcn.compare.heldout import background_cells, heldout_scores
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.plan import Plan
from gkdcn.compare.protocols import is_heldout, protocol_folds
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.study import Study
from gkdcn.errors import GkdcnError
from gkdcn.evaluate import evaluate_map
from gkdcn.io.atomic import write_text
from gkdcn.io.rasters import write_probability_map
from gkdcn.models.bundle import package_versions


@dataclass(frozen=True)
class JobContext:
    """What every job of one comparison shares (sent once to each worker process)."""

    study: Study
    samples: SampleSet
    plan: Plan
    layout: RunLayout
    device: str


@dataclass(frozen=True)
class Job:
    """One training and its scores: a model on one fold of one protocol, for one seed."""

    protocol: str
    model: str
    seed: int
    split: Split
    fold: str | None = None

    @property
    def folder(self) -> str:
        """The job's folder relative to the run folder."""
        return RunLayout.job_key(self.protocol, self.model, self.seed, self.fold)

    @property
    def label(self) -> str:
        """Shown in progress bars."""
        return f"{self.protocol} {self.model} seed {self.seed}" + (
            f" {self.fold}" if self.fold else ""
        )

    def done(self, layout: RunLayout) -> bool:
        """Whether the job finished in an earlier (interrupted) run."""
        return layout.result(self.protocol, self.model, self.seed, self.fold).exists()


def make_jobs(study: Study, samples: SampleSet, plan: Plan) -> Iterator[Job]:
    """Every job of the plan, protocol by protocol, seed by seed, fold by fold, model by model
    (all models of a fold share its split)."""
    for protocol in plan.protocols:
        for seed in plan.seeds:
            for fold, split in protocol_folds(protocol, study, samples, seed):
                for model in plan.models:
                    yield Job(protocol, model, seed, split, fold=fold)


def run_job(job: Job, context: JobContext, progress: Progress | None) -> None:
    """Fit, score and write ``result.json`` (last, atomically: its presence means done)."""
    study, samples, plan, layout = context.study, context.samples, context.plan, context.layout
    folder = layout.job_dir(job.protocol, job.model, job.seed, job.fold)
    folder.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    exclude = None
    if is_heldout(job.protocol):
        # The cells held-out deposits are ranked against stay area no model trained on, even
        # as unlabelled background.
        bg_rows, bg_cols = background_cells(study, samples, plan.background_sample, job.seed)
        exclude = np.zeros(study.valid.shape, dtype=bool)
        exclude[bg_rows, bg_cols] = True
    fitted = fit_model(
        job.model,
        study,
        samples,
        job.split,
        plan.train,
        job.seed,
        device=context.device,
        progress=progress,
        label=job.label,
        exclude_background=exclude,
    )
    result: dict[str, Any] = {
        "protocol": job.protocol,
        "model": job.model,
        "seed": job.seed,
        "fold": job.fold,
        **fitted.info,
        "n_train": len(job.split.train),
        "n_val": len(job.split.val),
    }
    if is_heldout(job.protocol):
        result["heldout"], result["heldout_calibration"] = heldout_scores(
            study, samples, fitted, job.split, plan.background_sample, job.seed
        )
    else:
        prob = fitted.score_map()
        fitted.save(folder)
        write_probability_map(
            layout.probability(job.model, job.seed, job.protocol),
            np.where(study.valid, prob, np.nan),
            study.grid,
            overwrite=True,
        )
        deposits = study.sites.deposits()
        ev = evaluate_map(
            prob, study.valid, deposits.rows, deposits.cols, n_boot=plan.bootstrap, seed=job.seed
        )
        result["metrics"] = ev.to_dict()
    result["seconds"] = round(time.perf_counter() - tic, 2)
    write_text(
        layout.result(job.protocol, job.model, job.seed, job.fold),
        json.dumps(result, indent=2, default=float),
        overwrite=True,
    )


def fingerprint(study: Study, plan: Plan) -> str:
    """What makes two runs the same experiment: config, data folder and plan."""
    blob = json.dumps(
        {
            "config": study.config.to_toml_dict(),
            "data": str(study.config.base_dir),
            "plan": plan.to_dict(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def claim_run_dir(layout: RunLayout, study: Study, plan: Plan, overwrite: bool) -> None:
    """Create the run folder, resume one of the same experiment, or replace a run (--overwrite).

    Only a folder holding a gkdcn run (``run.json``) is ever deleted, and only with
    ``overwrite``; any other non-empty folder is refused.
    """
    out_dir = layout.root
    meta_path = layout.run_json
    print_ = fingerprint(study, plan)
    if meta_path.exists():
        try:
            existing = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        if not overwrite:
            if existing.get("fingerprint") == print_:
                return  # resume
            raise GkdcnError(
                f"{out_dir}: holds a comparison with other settings "
                "(pass --overwrite to replace it, or choose another --out)"
            )
        shutil.rmtree(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise GkdcnError(f"{out_dir}: folder exists and is not a gkdcn run; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "fingerprint": print_,
        "study": study.config.name,
        "config": study.config.to_toml_dict(),
        "config_base_dir": str(study.config.base_dir),
        "plan": plan.to_dict(),
        "versions": package_versions(),
    }
    write_text(meta_path, json.dumps(meta, indent=2, default=str), overwrite=True)
