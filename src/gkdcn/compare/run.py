"""Running a comparison: claim the folder, run the unfinished jobs, collect, write outputs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress

from gkdcn.compare.jobs import (
    JobContext,
    Task,
    claim_run_dir,
    fit_job,
    group_jobs,
    make_jobs,
    members,
    write_job,
)
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.outputs import write_outputs
from gkdcn.compare.plan import Plan
from gkdcn.compare.results import Comparison, collect
from gkdcn.data.samples import SampleSet, check_centres, make_samples
from gkdcn.data.study import Study, naming_the_config
from gkdcn.errors import GkdcnError
from gkdcn.models import registry
from gkdcn.pretrain import PretrainResult, pretrain_for_training, trunk_key
from gkdcn.runner import check_workers, resolve_workers, run_jobs

if TYPE_CHECKING:  # the cluster extra may be absent
    from distributed import Client


def study_samples(study: Study) -> SampleSet:
    """All windows of the study's sites (each protocol splits them its own way)."""
    cfg = study.config.samples
    check_centres(study.sites, study.grid.shape, cfg.shift)
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
    scheduler: str | Client | None = None,
    stack_seeds: bool = False,
) -> Comparison:
    """Run (or resume) the comparison into ``out_dir`` and write tables, maps and figures.

    Every training runs on one CPU thread, ``workers`` of them at once in worker processes
    (see :mod:`gkdcn.runner`; the command line uses the available cores, at most 4), so results
    do not depend on ``workers``. On a GPU the jobs run one after another. ``inputs``: paths the
    caller read besides the study's own (e.g. its config file), which the run folder may never
    replace or hold. ``scheduler``
    (``"tcp://HOST:PORT"``, ``"local:N"`` or a connected :class:`distributed.Client`) sends the
    trainings to a Dask cluster instead (:mod:`gkdcn.cluster`), with the same results; each
    job's files come back to this process, which writes them as they arrive. ``stack_seeds``:
    a network's unfinished jobs on one fold that differ only in seed train at once as one
    stacked model (:func:`gkdcn.compare.jobs.group_jobs`; the same results to rounding).
    """
    layout = RunLayout(Path(out_dir))
    started = time.perf_counter()
    check_workers(workers)
    plan = plan.on_device(device)
    needs_knowledge = [m for m in plan.models if registry.model_kind(m).needs_knowledge]
    if study.knowledge is None and needs_knowledge:
        others = ",".join(k.name for k in registry.model_kinds() if not k.needs_knowledge)
        raise GkdcnError(
            f"{', '.join(needs_knowledge)} need geological knowledge: set [knowledge] faults or "
            f"weights in the config, or leave them out with --models {others}"
        )
    with contextlib.ExitStack() as stack:
        client = None if isinstance(scheduler, str) else scheduler
        if isinstance(scheduler, str):
            from gkdcn.cluster import open_client

            client = stack.enter_context(open_client(scheduler))  # unreachable: error now
        comparison = _run(
            study, layout, plan, overwrite, progress, device, workers, client, inputs, stack_seeds
        )
    comparison.seconds = time.perf_counter() - started
    write_outputs(comparison, study)
    return comparison


def _run(
    study: Study,
    layout: RunLayout,
    plan: Plan,
    overwrite: bool,
    progress: Progress | None,
    device: str,
    workers: int,
    client: Client | None,
    inputs: Sequence[str | Path],
    stack_seeds: bool = False,
) -> Comparison:
    with naming_the_config(study.config):  # the folds are checked before the folder is made
        samples = study_samples(study)
        jobs = list(make_jobs(study, samples, plan))
    claim_run_dir(layout, study, plan, overwrite, inputs)
    todo = group_jobs([job for job in jobs if not job.done(layout)], stack=stack_seeds)
    n_workers = resolve_workers(workers, len(todo), device)
    task = None
    if progress is not None:
        info = f"{n_workers} at once" if n_workers > 1 else ""
        if client is not None:
            info = f"on {client.scheduler.address}"
        pending = sum(len(members(t)) for t in todo)
        task = progress.add_task(
            "comparison", total=len(jobs), completed=len(jobs) - pending, info=info
        )

    def finished(job: Task, files: dict[str, str | bytes]) -> None:
        write_job(layout, job, files)  # here, as each job arrives: resuming works as ever
        if progress is not None and task is not None:
            progress.update(task, advance=len(members(job)), info=job.label)

    context = JobContext(
        study, samples, plan, layout, device, pretrained=_pretrained(study, plan, todo, device)
    )
    run_jobs(
        todo, fit_job, context, workers=n_workers, client=client, progress=progress,
        on_done=finished,
    )  # fmt: skip
    if progress is not None and task is not None:
        progress.remove_task(task)
    return collect(layout, plan)


def _pretrained(
    study: Study, plan: Plan, todo: Sequence[Task], device: str
) -> dict[tuple[int, bool], PretrainResult]:
    """One pretrained trunk per seed and architecture the unfinished networks need.

    None when ``[train] pretrain`` is off. Made here once, so every fold and model of a seed
    shares it.
    """
    if plan.train.pretrain == "off":
        return {}
    needed: dict[tuple[int, bool], str] = {}
    for task in todo:
        for job in members(task):
            if registry.is_network(job.model):
                needed.setdefault(trunk_key(job.model, job.seed), job.model)
    return {
        key: pretrain_for_training(study, kind, plan.train, key[0], device=device)
        for key, kind in sorted(needed.items())
    }
