"""The jobs of a comparison: one per protocol x seed x fold x model, each written when it ends.

A job runs anywhere (this process, a local worker, a Dask worker on another host): it writes
into a scratch run folder of its own and returns those files as data (:func:`fit_job`); the
process that runs the comparison writes them into the real run folder (:func:`write_job`,
``result.json`` last), so workers need no shared filesystem and a resumed run finds every
finished job where it expects it.

:func:`make_jobs` lists them from the plan, :func:`claim_run_dir` creates or resumes the run
folder, and :func:`run_job` fits one model on one fold (through the single seam
:func:`gkdcn.compare.fitting.fit_model`) and writes its scores. Only the runner
(:func:`gkdcn.runner.run_jobs`) decides where and how many run at once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from gkdcn.compare.fitting import FittedModel, fit_model, fit_network_seeds
from gkdcn.compare.heldout import background_cells, heldout_scores
from gkdcn.compare.layout import RunLayout
from gkdcn.compare.plan import Plan
from gkdcn.compare.protocols import is_heldout, protocol_folds
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.study import Study, changed_files, data_fingerprint, input_files
from gkdcn.errors import GkdcnError
from gkdcn.evaluate import evaluate_map
from gkdcn.io.atomic import (
    MARKER,
    atomic_path,
    check_not_input,
    clear_output_folder,
    mark_output,
    write_text,
)
from gkdcn.io.rasters import write_probability_map
from gkdcn.models import registry
from gkdcn.models.bundle import package_versions
from gkdcn.pretrain import PretrainResult, trunk_key


@dataclass(frozen=True)
class JobContext:
    """What every job of one comparison shares (sent once to each worker process)."""

    study: Study
    samples: SampleSet
    plan: Plan
    layout: RunLayout
    device: str
    #: Pretrained trunks by :func:`gkdcn.pretrain.trunk_key` (``[train] pretrain``), made once
    #: per comparison so every fold and model of a seed starts from the same one.
    pretrained: dict[tuple[int, bool], PretrainResult] = field(default_factory=dict)


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
        """Whether the job finished in an earlier (interrupted) run.

        Only a ``result.json`` holding a JSON object counts: an empty or truncated one (a crash
        or a full disk while an older version wrote it) means the job runs again.
        """
        path = layout.result(self.protocol, self.model, self.seed, self.fold)
        try:
            return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False


def make_jobs(study: Study, samples: SampleSet, plan: Plan) -> Iterator[Job]:
    """Every job of the plan, protocol by protocol, seed by seed, fold by fold, model by model
    (all models of a fold share its split)."""
    for protocol in plan.protocols:
        for seed in plan.seeds:
            for fold, split in protocol_folds(protocol, study, samples, seed):
                for model in plan.models:
                    yield Job(protocol, model, seed, split, fold=fold)


@dataclass(frozen=True)
class JobGroup:
    """Jobs of one network on one fold that differ only in seed, trained at once as one stacked
    model (:func:`gkdcn.compare.fitting.fit_network_seeds`); each member keeps its own job
    folder and ``result.json``, and is scored on its own, exactly as a single job."""

    members: tuple[Job, ...]

    @property
    def label(self) -> str:
        """Shown in progress bars."""
        first = self.members[0]
        seeds = ",".join(str(job.seed) for job in self.members)
        return f"{first.protocol} {first.model} seeds {seeds}" + (
            f" {first.fold}" if first.fold else ""
        )

    def done(self, layout: RunLayout) -> bool:
        """Whether every member finished in an earlier run."""
        return all(job.done(layout) for job in self.members)


#: What the runner runs: one job, or a stack of them.
Task = Job | JobGroup


def members(task: Task) -> tuple[Job, ...]:
    """The jobs a task stands for."""
    return task.members if isinstance(task, JobGroup) else (task,)


def group_jobs(jobs: Sequence[Job], stack: bool = True, most: int | None = None) -> list[Task]:
    """``jobs`` with those of one network, protocol and fold that differ only in seed (and whose
    folds have equally many training windows) gathered into :class:`JobGroup` s of at most
    ``most`` members, in the order of their first job; baselines and lone jobs stay single.

    The grouping depends on the jobs alone (never on the number of workers), so results do
    not depend on ``--jobs``. ``stack=False``: every job alone.
    """
    if not stack:
        return list(jobs)
    groups: dict[tuple[Any, ...], list[Job]] = {}
    order: list[tuple[Any, ...] | Job] = []
    for job in jobs:
        if not registry.is_network(job.model):
            order.append(job)
            continue
        key = (job.protocol, job.model, job.fold, len(job.split.train), len(job.split.val))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(job)
    out: list[Task] = []
    for item in order:
        if isinstance(item, Job):
            out.append(item)
            continue
        group = groups[item]
        size = len(group) if most is None else max(1, most)
        for start in range(0, len(group), size):
            chunk = tuple(group[start : start + size])
            out.append(chunk[0] if len(chunk) == 1 else JobGroup(chunk))
    return out


def _exclusion(job: Job, context: JobContext) -> np.ndarray | None:
    """Held-out protocols: the cells held-out deposits are ranked against, which stay area no
    model trained on, even as unlabelled background."""
    if not is_heldout(job.protocol):
        return None
    study, plan = context.study, context.plan
    bg_rows, bg_cols = background_cells(
        study, context.samples, plan.background_sample, plan.background_seed
    )
    exclude = np.zeros(study.valid.shape, dtype=bool)
    exclude[bg_rows, bg_cols] = True
    return exclude


def run_job(job: Job, context: JobContext, progress: Progress | None) -> None:
    """Fit, score and write ``result.json`` (last, atomically: its presence means done)."""
    tic = time.perf_counter()
    fitted = fit_model(
        job.model,
        context.study,
        context.samples,
        job.split,
        context.plan.train,
        job.seed,
        device=context.device,
        progress=progress,
        label=job.label,
        exclude_background=_exclusion(job, context),
        pretrained=context.pretrained.get(trunk_key(job.model, job.seed)),
    )
    _score_and_write(job, fitted, context, tic)


def run_group(group: JobGroup, context: JobContext, progress: Progress | None) -> None:
    """Fit every member of ``group`` as one stacked training, then score and write each as
    :func:`run_job` does (its ``seconds``: an equal share of the training plus its scoring)."""
    selecting = context.plan.train.select_epochs != "off" and len(group.members[0].split.held_out)
    if selecting or context.plan.train.pretrain != "off":
        # Selection inside the fold trains inner folds per seed, and a pretrained trunk is one
        # seed's: each member alone.
        for job in group.members:
            run_job(job, context, progress)
        return
    tic = time.perf_counter()
    jobs = group.members
    fitted = fit_network_seeds(
        jobs[0].model,
        context.study,
        context.samples,
        [job.split for job in jobs],
        context.plan.train,
        [job.seed for job in jobs],
        device=context.device,
        progress=progress,
        label=group.label,
        exclude_background=[_exclusion(job, context) for job in jobs],
    )
    share = (time.perf_counter() - tic) / len(jobs)
    for job, model in zip(jobs, fitted, strict=True):
        _score_and_write(job, model, context, time.perf_counter() - share, stacked=len(jobs))


def _score_and_write(
    job: Job, fitted: FittedModel, context: JobContext, tic: float, stacked: int = 1
) -> None:
    study, samples, plan, layout = context.study, context.samples, context.plan, context.layout
    folder = layout.job_dir(job.protocol, job.model, job.seed, job.fold)
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "protocol": job.protocol,
        "model": job.model,
        "seed": job.seed,
        "fold": job.fold,
        **fitted.info,
        "n_train": len(job.split.train),
        # Epochs chosen inside the fold: the inner validation windows they were chosen on.
        "n_val": fitted.info.get("n_val", len(job.split.val)),
    }
    if is_heldout(job.protocol):
        result["heldout"], result["heldout_calibration"], result["heldout_background"] = (
            heldout_scores(
                study, samples, fitted, job.split, plan.background_sample, plan.background_seed
            )
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
    if stacked > 1:
        result["trained_stacked_with"] = stacked  # seeds trained as one model, this one included
    write_text(
        layout.result(job.protocol, job.model, job.seed, job.fold),
        json.dumps(result, indent=2, default=float),
        overwrite=True,
    )


def fit_job(job: Task, context: JobContext, progress: Progress | None) -> dict[str, str | bytes]:
    """Run ``job`` (or a group) into a scratch run folder and return what it wrote: file
    contents (bytes) by path relative to the run folder. Nothing is written to
    ``context.layout``."""
    with tempfile.TemporaryDirectory(prefix="gkdcn-job-") as tmp:
        root = Path(tmp)
        scratch = replace(context, layout=RunLayout(root))
        if isinstance(job, JobGroup):
            run_group(job, scratch, progress)
        else:
            run_job(job, scratch, progress)
        return {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }


def write_job(layout: RunLayout, job: Task, files: dict[str, str | bytes]) -> None:
    """Write the files :func:`fit_job` returned into the run folder, each atomically, the
    jobs' ``result.json`` files last (each one's presence means its job is done)."""
    root = layout.root.resolve()
    results = {
        layout.relative(layout.result(m.protocol, m.model, m.seed, m.fold)) for m in members(job)
    }
    for key in sorted(files, key=lambda k: k in results):
        target = layout.root / key
        if not target.resolve().is_relative_to(root):
            raise ValueError(f"job file {key!r} lies outside the run folder")
        data = files[key]
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(data if isinstance(data, bytes) else data.encode())


def fingerprint(study: Study, plan: Plan) -> str:
    """What makes two runs the same experiment's settings: config and plan (the data are
    checked by content, :func:`gkdcn.data.study.data_fingerprint`, so a moved folder resumes)."""
    blob = json.dumps(_settings(study, plan), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _legacy_fingerprint(study: Study, plan: Plan) -> str:
    """The fingerprint of runs written before the data were fingerprinted (folder, not content)."""
    blob = json.dumps(
        {**_settings(study, plan), "data": str(study.config.base_dir)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settings(study: Study, plan: Plan) -> dict[str, Any]:
    """The fingerprinted settings. The training precision counts as the plan resolved it (the
    config's ``"auto"`` is not what ran), and float32, the only arithmetic before the setting
    existed, is left out, so runs written before it still resume. So are the settings of
    selection inside the fold while it is off (nothing of them ran)."""
    config = study.config.to_toml_dict()
    train = _without_unused_selection(dict(config.get("train") or {}))
    train.pop("precision", None)
    config = (
        {**config, "train": train} if train else {k: v for k, v in config.items() if k != "train"}
    )
    planned = plan.to_dict()
    planned["train"] = _without_unused_selection(planned["train"])
    if planned["train"].get("precision") == "float32":
        planned["train"] = {k: v for k, v in planned["train"].items() if k != "precision"}
    return {"config": config, "plan": planned}


def _without_unused_selection(train: dict[str, Any]) -> dict[str, Any]:
    """``train`` without the ``select_*`` settings when ``select_epochs`` is off (or absent),
    and without the ``pretrain*`` settings when ``pretrain`` is off: nothing of them ran."""
    if train.get("select_epochs", "off") == "off":
        train = {k: v for k, v in train.items() if not k.startswith("select_")}
    if train.get("pretrain", "off") == "off":
        train = {k: v for k, v in train.items() if not k.startswith("pretrain")}
    return train


def claim_run_dir(
    layout: RunLayout,
    study: Study,
    plan: Plan,
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
) -> None:
    """Create the run folder, resume one of the same experiment, or replace a run (--overwrite).

    A run resumes only if its settings and its data (a content hash of the aligned stack, mask,
    knowledge and sites) are the same; otherwise a one-line error names what differs (for data:
    the input files whose size or modification time changed). Only a folder holding a gkdcn run
    is ever deleted, only with ``overwrite``, and never one that is, holds or lies inside one of
    ``inputs`` or the current folder (:func:`gkdcn.io.atomic.check_writable`).
    """
    out_dir = layout.root
    meta_path = layout.run_json
    check_not_input(out_dir, [*study.config.input_paths(), *inputs])
    print_ = fingerprint(study, plan)
    data_print = data_fingerprint(study)
    files = input_files(study.config)
    ours = (out_dir / MARKER).is_file()
    if meta_path.exists() and not ours:
        raise GkdcnError(
            f"{out_dir}: holds a {layout.RUN} but no {MARKER} marker, so gkdcn did not write "
            "this folder; choose another --out"
        )
    if meta_path.exists():
        try:
            existing = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        started = _holds_results(layout)
        if not overwrite and started:
            _check_resumable(out_dir, existing, print_, _legacy_fingerprint(study, plan), plan)
            _check_same_data(out_dir, existing, data_print, files)
            return  # resume
        # With --overwrite, or a run that failed before any job finished (nothing to lose):
        # start afresh. clear_output_folder checks the rule of what gkdcn may delete before it
        # deletes anything, and empties the folder in place: a link to it stays a link.
        clear_output_folder(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise GkdcnError(f"{out_dir}: folder exists and is not a gkdcn run; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_output(out_dir, "compare")
    meta = {
        "fingerprint": print_,
        "data_fingerprint": data_print,
        "input_files": files,
        "study": study.config.name,
        "config": study.config.to_toml_dict(),
        "config_base_dir": str(study.config.base_dir),
        "plan": plan.to_dict(),
        "versions": package_versions(),
    }
    write_text(meta_path, json.dumps(meta, indent=2, default=str), overwrite=True)


def _holds_results(layout: RunLayout) -> bool:
    """Whether any job of the run in ``layout`` has finished (written its result)."""
    return next(layout.root.rglob(layout.RESULT), None) is not None


def _check_resumable(
    out_dir: Path, existing: dict[str, Any], print_: str, legacy: str, plan: Plan
) -> None:
    if existing.get("fingerprint") == print_:
        return
    if existing.get("fingerprint") == legacy and "data_fingerprint" not in existing:
        warnings.warn(
            f"{out_dir}: a run from an older gkdcn, resumed without checking its data "
            "(pass --overwrite to redo it)",
            UserWarning,
            stacklevel=3,
        )
        return
    recorded = ((existing.get("plan") or {}).get("train") or {}).get("precision", "float32")
    if recorded != plan.train.precision:
        # Most likely "auto" resolved otherwise here (another machine or device).
        raise GkdcnError(
            f"{out_dir}: holds a comparison trained in {recorded}, and this one would train in "
            f"{plan.train.precision} (pass --precision {recorded} to resume it, --overwrite to "
            "replace it, or choose another --out)"
        )
    raise GkdcnError(
        f"{out_dir}: holds a comparison with other settings "
        "(pass --overwrite to replace it, or choose another --out)"
    )


def _check_same_data(
    out_dir: Path, existing: dict[str, Any], data_print: str, files: dict[str, list[int]]
) -> None:
    recorded = existing.get("data_fingerprint")
    if recorded is None or recorded == data_print:
        return
    changed = changed_files(existing.get("input_files") or {}, files)
    if changed:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        what = f"{shown} changed since it ran"
    else:
        what = "the aligned data differ although no input file's size or time changed"
    raise GkdcnError(
        f"{out_dir}: holds a comparison of other data ({what}); its results would be stale "
        "(pass --overwrite to redo it, or choose another --out)"
    )
