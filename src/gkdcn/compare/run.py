"""Running a comparison: claim the folder, run the unfinished jobs, collect, write outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.progress import Progress

from gkdcn.compare.jobs import Job, JobContext, claim_run_dir, make_jobs, run_job
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.outputs import write_outputs
from gkdcn.compare.plan import Plan
from gkdcn.compare.results import Comparison, collect
from gkdcn.data.samples import SampleSet, make_samples
from gkdcn.data.study import Study
from gkdcn.errors import GkdcnError
from gkdcn.runner import check_workers, resolve_workers, run_jobs


def study_samples(study: Study) -> SampleSet:
    """All windows of the study's sites (each protocol splits them its own way)."""
    cfg = study.config.samples
    return make_samples(study.sites, study.grid.shape, cfg.shift, cfg.rotations, cfg.flips)


def run_comparison(
    study: Study,
    out_dir: str | Path,
    plan: Plan,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    device: str = "cpu",
    workers: int = 1,
    inputs: Sequence[str | Path] = (),
) -> Comparison:
    """Run (or resume) the comparison into ``out_dir`` and write tables, maps and figures.

    Every training runs on one CPU thread, ``workers`` of them at once in worker processes
    (see :mod:`gkdcn.runner`; the command line uses the available cores, at most 4), so results
    do not depend on ``workers``. On a GPU the jobs run one after another. ``inputs``: paths the
    caller read besides the study's own (e.g. its config file), which the run folder may never
    replace or hold.
    """
    layout = RunLayout(Path(out_dir))
    started = time.perf_counter()
    check_workers(workers)
    needs_knowledge = [m for m in plan.models if m.startswith("gk-") or m == "knowledge"]
    if study.knowledge is None and needs_knowledge:
        raise GkdcnError(
            f"{', '.join(needs_knowledge)} need geological knowledge: set [knowledge] faults or "
            "weights in the config, or leave them out with --models "
            "cnn,dcn,element,logistic,random-forest"
        )
    claim_run_dir(layout, study, plan, overwrite, inputs)
    samples = study_samples(study)
    jobs = list(make_jobs(study, samples, plan))
    todo = [job for job in jobs if not job.done(layout)]
    n_workers = resolve_workers(workers, len(todo), device)
    task = None
    if progress is not None:
        task = progress.add_task(
            "comparison",
            total=len(jobs),
            completed=len(jobs) - len(todo),
            info=f"{n_workers} at once" if n_workers > 1 else "",
        )

    def finished(job: Job) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=job.label)

    context = JobContext(study, samples, plan, layout, device)
    run_jobs(todo, run_job, context, workers=n_workers, progress=progress, on_done=finished)
    if progress is not None and task is not None:
        progress.remove_task(task)
    comparison = collect(layout, plan)
    comparison.seconds = time.perf_counter() - started
    write_outputs(comparison, study)
    return comparison
