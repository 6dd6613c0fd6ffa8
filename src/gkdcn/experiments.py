"""The paper's comparison as one resumable experiment: 4 models x seeds x protocols.

Protocols
---------
``authors``
    The authors' protocol: windows split at random into training and validation (windows of the
    same deposit land on both sides), the whole map scored against every deposit cell. Every
    deposit was seen in training, so these numbers are **in-sample**; kept to reproduce the paper.
``lodo``
    Leave one deposit out: for each deposit, train without its windows (and without any window
    centred within ``split.exclusion_radius`` of it) for the configured epochs, predict, and rank
    the held-out deposit's cell among the background cells.
    The held-out ranks of all deposits are pooled into one AUC / success-rate curve per model and
    seed: each deposit is scored by a model that never saw it.
``blocks``
    Spatial-block cross-validation: like ``lodo`` with whole blocks of sites held out per fold.

Only the studied component differs between the four models: same head, optimiser, epochs,
transforms, splits and seeds. Each finished unit of work (one training + its scores) is written
atomically as soon as it ends, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from rich.progress import Progress
from scipy import stats

from gkdcn.config import MODEL_KINDS, StudyConfig, TrainConfig
from gkdcn.data.samples import (
    SampleSet,
    Split,
    leave_one_deposit_out,
    make_samples,
    spatial_blocks,
    split_by_window,
)
from gkdcn.data.study import Study, build_samples, summarize
from gkdcn.errors import GkdcnError
from gkdcn.evaluate import evaluate_map
from gkdcn.io.atomic import atomic_path, write_text
from gkdcn.io.rasters import ArraySource, write_geotiff
from gkdcn.models.bundle import now_iso, package_versions
from gkdcn.predict import predict_cells, predict_map
from gkdcn.runner import check_workers, resolve_workers, run_jobs
from gkdcn.train import train_study, write_training_outputs

# --quick: 2 seeds, at most this many epochs, and held-out deposits ranked among at most this
# many background cells: 2 min 55 s on Tianshan with 2 cores (the full run: 20 min).
QUICK_EPOCHS = 6
QUICK_BACKGROUND = 1000
AUTHORS_METRICS = ("accuracy", "auc", "kappa", "mcc", "precision", "recall", "f1")
HELDOUT_METRICS = ("auc", "area_50", "area_80", "area_100", "capture_top10")
# Natural range of each metric; intervals over few seeds are clipped to it.
METRIC_RANGE = {"kappa": (-1.0, 1.0), "mcc": (-1.0, 1.0)}
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("GK-DCN - CNN", "gk-dcn", "cnn"),
    ("DCN - CNN", "dcn", "cnn"),
    ("GK-DCN - DCN", "gk-dcn", "dcn"),
    ("GK-CNN - CNN", "gk-cnn", "cnn"),
)
PROTOCOL_TITLES = {
    "authors": "Authors' protocol: random split by window, whole map scored (in-sample)",
    "lodo": "Leave-one-deposit-out: each deposit scored by a model that never saw it",
    "blocks": "Spatial-block cross-validation: held-out blocks scored by models that never saw them",
}


@dataclass(frozen=True)
class Plan:
    """What a comparison run trains."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    protocols: tuple[str, ...]
    train: TrainConfig
    bootstrap: int
    background_sample: (
        int | None
    )  # held-out protocols: background cells ranked against (None = all)
    quick: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "seeds": list(self.seeds),
            "protocols": list(self.protocols),
            "train": self.train.model_dump(mode="json"),
            "bootstrap": self.bootstrap,
            "background_sample": self.background_sample,
            "quick": self.quick,
        }


def make_plan(
    config: StudyConfig,
    *,
    quick: bool = False,
    seeds: int | None = None,
    models: list[str] | None = None,
    protocols: list[str] | None = None,
    epochs: int | None = None,
) -> Plan:
    """The run plan from the config, with ``--quick`` and command-line overrides applied."""
    cmp = config.compare
    n_seeds = seeds if seeds is not None else (2 if quick else cmp.seeds)
    if n_seeds < 1:
        raise GkdcnError(f"--seeds must be at least 1, got {n_seeds}")
    train = config.train
    updates: dict[str, Any] = {}
    if quick:
        updates.update(
            epochs=min(train.epochs, QUICK_EPOCHS), patience=2 if train.patience else None
        )
    if epochs is not None:
        updates["epochs"] = epochs
    if updates:
        try:
            train = TrainConfig.model_validate(
                {**train.model_dump(), **updates, "preset": "default"}
            )
        except ValidationError as exc:
            raise GkdcnError(f"invalid training override: {exc.errors()[0]['msg']}") from None
    chosen_models = tuple(dict.fromkeys(m.strip() for m in (models or cmp.models)))
    for m in chosen_models:
        if m not in MODEL_KINDS:
            raise GkdcnError(f"unknown model {m!r} (choose from {', '.join(MODEL_KINDS)})")
    chosen_protocols = tuple(dict.fromkeys(p.strip() for p in (protocols or cmp.protocols)))
    for p in chosen_protocols:
        if p not in PROTOCOL_TITLES:
            raise GkdcnError(f"unknown protocol {p!r} (choose from {', '.join(PROTOCOL_TITLES)})")
    return Plan(
        models=chosen_models,
        seeds=tuple(range(n_seeds)),
        protocols=chosen_protocols,
        train=train,
        bootstrap=200 if quick else cmp.bootstrap,
        background_sample=(
            min(cmp.heldout_background, QUICK_BACKGROUND) if quick else cmp.heldout_background
        )
        or None,
        quick=quick,
    )


@dataclass
class Comparison:
    """Everything a finished run produced, as tables (also written to disk)."""

    out_dir: Path
    plan: Plan
    runs: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # protocol -> one row per model x seed
    summary: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # protocol -> mean and CI per model
    paired: dict[str, pd.DataFrame] = field(default_factory=dict)  # protocol -> paired differences
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# running


def run_comparison(
    study: Study,
    out_dir: str | Path,
    plan: Plan,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    device: str = "cpu",
    workers: int = 1,
) -> Comparison:
    """Run (or resume) the comparison into ``out_dir`` and write tables, maps and figures.

    Every training runs on one CPU thread, ``workers`` of them at once in worker processes
    (see :mod:`gkdcn.runner`; the command line uses the available cores, at most 4), so results
    do not depend on ``workers``. On a GPU the jobs run one after another.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    check_workers(workers)
    if study.knowledge is None and any(m.startswith("gk-") for m in plan.models):
        raise GkdcnError(
            "GK-CNN and GK-DCN need geological knowledge: set [knowledge] faults or weights in "
            "the config, or leave them out with --models cnn,dcn"
        )
    _claim_run_dir(out_dir, study, plan, overwrite)
    samples = study_samples(study)
    jobs = list(_jobs(study, samples, plan))
    todo = [job for job in jobs if not job.done(out_dir)]
    n_workers = resolve_workers(workers, len(todo), device)
    task = None
    if progress is not None:
        task = progress.add_task(
            "comparison",
            total=len(jobs),
            completed=len(jobs) - len(todo),
            info=f"{n_workers} at once" if n_workers > 1 else "",
        )

    def finished(job: _Job) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=job.label)

    context = _JobContext(study, samples, plan, out_dir, device)
    run_jobs(todo, _Job.run, context, workers=n_workers, progress=progress, on_done=finished)
    if progress is not None and task is not None:
        progress.remove_task(task)
    comparison = collect(out_dir, study, plan)
    comparison.seconds = time.perf_counter() - started
    write_outputs(comparison, study)
    return comparison


def study_samples(study: Study) -> SampleSet:
    """All windows of the study's sites (each protocol splits them its own way)."""
    cfg = study.config.samples
    return make_samples(study.sites, study.grid.shape, cfg.shift, cfg.rotations, cfg.flips)


def _fingerprint(study: Study, plan: Plan) -> str:
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


def _claim_run_dir(out_dir: Path, study: Study, plan: Plan, overwrite: bool) -> None:
    """Create the run folder, resume one of the same experiment, or replace a run (--overwrite).

    Only a folder holding a gkdcn run (``run.json``) is ever deleted, and only with
    ``overwrite``; any other non-empty folder is refused.
    """
    meta_path = out_dir / "run.json"
    fingerprint = _fingerprint(study, plan)
    if meta_path.exists():
        try:
            existing = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        if not overwrite:
            if existing.get("fingerprint") == fingerprint:
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
        "fingerprint": fingerprint,
        "study": study.config.name,
        "config": study.config.to_toml_dict(),
        "config_base_dir": str(study.config.base_dir),
        "plan": plan.to_dict(),
        "versions": package_versions(),
    }
    write_text(meta_path, json.dumps(meta, indent=2, default=str), overwrite=True)


@dataclass(frozen=True)
class _JobContext:
    """What every job of one comparison shares (sent once to each worker process)."""

    study: Study
    samples: SampleSet
    plan: Plan
    out_dir: Path
    device: str


@dataclass(frozen=True)
class _Job:
    protocol: str
    model: str
    seed: int
    split: Split
    fold: str | None = None

    @property
    def folder(self) -> str:
        base = f"{self.protocol}/{self.model}/seed{self.seed}"
        return f"{base}/{self.fold}" if self.fold else base

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.model} seed {self.seed}" + (
            f" {self.fold}" if self.fold else ""
        )

    def done(self, out_dir: Path) -> bool:
        return (out_dir / self.folder / "result.json").exists()

    def run(self, context: _JobContext, progress: Progress | None) -> None:
        """Train, score and write ``result.json`` (last, atomically: its presence means done)."""
        study, samples, plan = context.study, context.samples, context.plan
        out_dir, device = context.out_dir, context.device
        folder = out_dir / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        trained = train_study(
            study,
            self.model,  # type: ignore[arg-type]
            samples=samples,
            split=self.split,
            cfg=plan.train,
            seed=self.seed,
            device=device,
            progress=progress,
            label=self.label,
        )
        result: dict[str, Any] = {
            "protocol": self.protocol,
            "model": self.model,
            "seed": self.seed,
            "fold": self.fold,
            "best_epoch": trained.best_epoch,
            "n_train": len(self.split.train),
            "n_val": len(self.split.val),
        }
        if self.protocol == "authors":
            prob = _predict_in_memory(study, trained.bundle, device)
            write_training_outputs(trained, folder, overwrite=True)
            write_geotiff(
                folder / "probability.tif",
                np.where(study.valid, prob, np.nan).astype(np.float32),
                study.grid,
                nodata=float("nan"),
                descriptions=["probability"],
                overwrite=True,
            )
            deposits = study.sites.deposits()
            ev = evaluate_map(
                prob,
                study.valid,
                deposits.rows,
                deposits.cols,
                n_boot=plan.bootstrap,
                seed=self.seed,
            )
            result["metrics"] = ev.to_dict()
        else:
            result["heldout"] = _heldout_ranks(
                study, samples, trained.bundle, self.split, plan, self.seed, device
            )
        result["seconds"] = round(time.perf_counter() - tic, 2)
        write_text(
            folder / "result.json", json.dumps(result, indent=2, default=float), overwrite=True
        )


def _jobs(study: Study, samples: SampleSet, plan: Plan) -> Iterator[_Job]:
    cfg = study.config.split
    for protocol in plan.protocols:
        for seed in plan.seeds:
            if protocol == "authors":
                split = split_by_window(samples, cfg.validation_fraction, seed)
                for model in plan.models:
                    yield _Job(protocol, model, seed, split)
                continue
            if protocol == "lodo":
                folds = leave_one_deposit_out(
                    samples, study.sites, study.grid, cfg.exclusion_radius
                )
            elif protocol == "blocks":
                folds = spatial_blocks(
                    samples, study.sites, study.grid, cfg.block_size, cfg.folds, seed
                )
            else:
                raise GkdcnError(f"unknown protocol {protocol!r} (choose authors, lodo, blocks)")
            for fold in folds:
                for model in plan.models:
                    yield _Job(protocol, model, seed, _fold_split(fold), fold=fold.name)


def _fold_split(fold: Split) -> Split:
    """A held-out fold trains on every remaining window for the configured epochs.

    No inner validation split: with a handful of sites left, a by-site validation set is too
    small to stop on reliably (it stopped folds after 2-4 epochs), and it would withhold
    training sites. The number of epochs is the fold's only stopping rule.
    """
    return Split(
        name=fold.name,
        train=np.asarray(fold.train, dtype=np.int64),
        val=np.zeros(0, dtype=np.int64),
        description=f"{fold.description}; fixed epochs, no inner validation",
        held_out=np.asarray(fold.held_out, dtype=np.int64),
    )


def _predict_in_memory(study: Study, bundle: Any, device: str) -> np.ndarray:
    source = ArraySource(study.raw, study.names, study.grid)
    result = predict_map(
        bundle,
        source,
        batch_size=study.config.predict.batch_size,
        block_rows=study.config.predict.block_rows,
        device=device,
    )
    return result.mean


def background_cells(
    study: Study, samples: SampleSet, sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Valid cells that held-out deposits are ranked against (seeded sample or all).

    Every cell that is some site's window centre is left out: a training deposit's shifted
    centres would rank high and a training non-deposit's low, because the model was fitted to
    them, not because it generalises. What remains is area no model of the comparison trained on.
    """
    centre = np.zeros(study.valid.shape, dtype=bool)
    centre[samples.rows, samples.cols] = True
    deps = study.sites.deposits()
    centre[deps.rows, deps.cols] = True
    rows, cols = np.nonzero(study.valid & ~centre)
    if sample is not None and len(rows) > sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
        rows, cols = rows[pick], cols[pick]
    return rows, cols


def _heldout_ranks(
    study: Study,
    samples: SampleSet,
    bundle: Any,
    split: Split,
    plan: Plan,
    seed: int,
    device: str,
) -> list[dict[str, Any]]:
    """Share of background area ranked at or above each held-out deposit (ties count half).

    Only the held-out deposits and the background cells are scored (windows cut exactly as
    for the full map), so a fold costs a few thousand windows instead of a whole map.
    """
    held = [s for s in np.asarray(split.held_out, dtype=np.int64) if study.sites.labels[s] == 1]
    bg_rows, bg_cols = background_cells(study, samples, plan.background_sample, seed)
    rows = np.concatenate([study.sites.rows[held], bg_rows])
    cols = np.concatenate([study.sites.cols[held], bg_cols])
    prob = predict_cells(
        bundle, study.raw, study.names, rows, cols,
        batch_size=study.config.predict.batch_size, device=device,
    )  # fmt: skip
    background = prob[len(held) :]
    out = []
    for site, p in zip(held, prob[: len(held)], strict=True):
        share = (np.sum(background > p) + 0.5 * np.sum(background == p)) / len(background)
        out.append(
            {
                "site_id": str(study.sites.ids[site]),
                "probability": float(p),
                "area_share": float(share),
                "n_background": len(background),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# collecting


def heldout_metrics(area_shares: np.ndarray) -> dict[str, float]:
    """Metrics of pooled held-out ranks: AUC = 1 - mean share; area needed for 50/80/100 %."""
    shares = np.sort(np.asarray(area_shares, dtype=float))
    n = len(shares)
    # Ranked among background cells, the held-out AUC is also the area under the success-rate
    # curve (deposits captured vs share of area), so one number serves both.
    return {
        "auc": float(1.0 - shares.mean()),
        "area_50": float(shares[int(np.ceil(0.5 * n)) - 1]),
        "area_80": float(shares[int(np.ceil(0.8 * n)) - 1]),
        "area_100": float(shares[-1]),
        "capture_top10": float(np.mean(shares <= 0.10)),
    }


def heldout_shares(out_dir: Path, protocol: str, model: str, seeds: Iterable[int]) -> np.ndarray:
    """Area shares of every held-out deposit of ``model`` over ``seeds``, from the fold results."""
    shares: list[float] = []
    for seed in seeds:
        for fold_result in sorted(
            (out_dir / protocol / model / f"seed{seed}").glob("*/result.json")
        ):
            shares += [h["area_share"] for h in json.loads(fold_result.read_text())["heldout"]]
    return np.array(shares)


def collect(out_dir: Path, study: Study, plan: Plan) -> Comparison:
    """Read every finished job of the plan back into tables."""
    comparison = Comparison(out_dir=out_dir, plan=plan)
    for protocol in plan.protocols:
        rows = []
        for model in plan.models:
            for seed in plan.seeds:
                base = out_dir / protocol / model / f"seed{seed}"
                if protocol == "authors":
                    res = json.loads((base / "result.json").read_text())
                    metrics = res["metrics"]
                    rows.append(
                        {"model": model, "seed": seed}
                        | {m: metrics[m] for m in AUTHORS_METRICS}
                        | {
                            "auc_ci_lo": metrics["auc_ci"][0],
                            "auc_ci_hi": metrics["auc_ci"][1],
                            "success_auc": metrics["success_auc"],
                            "threshold": metrics["threshold"],
                        }
                    )
                else:
                    shares = heldout_shares(out_dir, protocol, model, [seed])
                    rows.append({"model": model, "seed": seed} | heldout_metrics(shares))
        runs = pd.DataFrame(rows)
        metrics = (*AUTHORS_METRICS, "success_auc") if protocol == "authors" else HELDOUT_METRICS
        comparison.runs[protocol] = runs
        comparison.summary[protocol] = summarize_over_seeds(runs, list(metrics))
        paired_metrics = ["auc", "success_auc"] if protocol == "authors" else ["auc"]
        comparison.paired[protocol] = paired_differences(runs, paired_metrics)
    return comparison


def mean_ci(
    values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and a t-interval over seeds (a point when there is one value or no spread).

    ``bounds`` clips the interval to the metric's natural range: with two or three seeds a
    t-interval is wide enough to leave it.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.allclose(values, values[0]):
        return mean, mean, mean
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, float(lo), float(hi)


def summarize_over_seeds(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, SD and 95 % CI over seeds of each metric, one row per model."""
    rows = []
    for model, group in runs.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model, "seeds": len(group)}
        for m in metrics:
            mean, lo, hi = mean_ci(group[m].to_numpy(), bounds=METRIC_RANGE.get(m, (0.0, 1.0)))
            row[f"{m}_mean"] = mean
            row[f"{m}_sd"] = float(group[m].std(ddof=1)) if len(group) > 1 else 0.0
            row[f"{m}_lo"] = lo
            row[f"{m}_hi"] = hi
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per-seed differences between models trained on the same split and seed, with CIs.

    "GK - no GK" averages the two like-for-like knowledge effects (GK-CNN - CNN, GK-DCN - DCN).
    """
    by_model = {m: g.set_index("seed").sort_index() for m, g in runs.groupby("model")}
    rows = []
    pairs = [(name, [(a, b)]) for name, a, b in PAIRS]
    pairs.append(("GK - no GK", [("gk-cnn", "cnn"), ("gk-dcn", "dcn")]))
    for name, members in pairs:
        if not all(a in by_model and b in by_model for a, b in members):
            continue
        for metric in metrics:
            diffs = np.mean(
                [
                    by_model[a][metric].to_numpy() - by_model[b][metric].to_numpy()
                    for a, b in members
                ],
                axis=0,
            )
            mean, lo, hi = mean_ci(diffs, bounds=(-1.0, 1.0))
            rows.append(
                {
                    "comparison": name,
                    "metric": metric,
                    "mean_difference": mean,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "seeds_first_better": int(np.sum(diffs > 1e-12)),
                    "seeds_second_better": int(np.sum(diffs < -1e-12)),
                    "seeds_tied": int(np.sum(np.abs(diffs) <= 1e-12)),
                    "differences": " ".join(f"{d:+.3f}" for d in diffs),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# outputs


def mean_maps(out_dir: Path, plan: Plan) -> dict[str, np.ndarray]:
    """Seed-mean probability map of each model under the authors' protocol."""
    import rasterio

    maps: dict[str, np.ndarray] = {}
    if "authors" not in plan.protocols:
        return maps
    for model in plan.models:
        stack = []
        for seed in plan.seeds:
            with rasterio.open(
                out_dir / "authors" / model / f"seed{seed}" / "probability.tif"
            ) as src:
                stack.append(src.read(1))
        maps[model] = np.mean(stack, axis=0)
    return maps


def write_outputs(comparison: Comparison, study: Study) -> None:
    """Tables (CSV + JSON), seed-mean maps (GeoTIFF) and figures of a collected run."""
    from gkdcn import figures

    out = comparison.out_dir
    tables = out / "tables"
    for protocol in comparison.plan.protocols:
        for name, frame in (
            ("runs", comparison.runs[protocol]),
            ("summary", comparison.summary[protocol]),
            ("paired", comparison.paired[protocol]),
        ):
            with atomic_path(tables / f"{protocol}_{name}.csv", overwrite=True) as tmp:
                frame.to_csv(tmp, index=False)
    maps = mean_maps(out, comparison.plan)
    for model, prob in maps.items():
        write_geotiff(
            out / "maps" / f"{model}_mean_probability.tif",
            prob.astype(np.float32),
            study.grid,
            nodata=float("nan"),
            descriptions=[f"{model} probability (mean of {len(comparison.plan.seeds)} seeds)"],
            overwrite=True,
        )
    figures.comparison_figures(comparison, study, maps, out / "figures")
    summary = {
        "finished": now_iso(),
        "seconds": round(comparison.seconds, 1),
        "plan": comparison.plan.to_dict(),
        "data": summarize(study, *build_samples(study)),
        "protocols": {
            p: {
                "title": PROTOCOL_TITLES[p],
                "summary": comparison.summary[p].to_dict(orient="records"),
                "paired": comparison.paired[p].to_dict(orient="records"),
            }
            for p in comparison.plan.protocols
        },
    }
    write_text(
        out / "summary.json", json.dumps(summary, indent=2, default=_json_default), overwrite=True
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def format_tables(comparison: Comparison) -> str:
    """Plain-text tables for the terminal and the closing notes."""
    lines = []
    for protocol in comparison.plan.protocols:
        lines.append(PROTOCOL_TITLES[protocol])
        summary = comparison.summary[protocol]
        metrics = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
        header = f"{'model':8s}" + "".join(f"{m:>22s}" for m in metrics)
        lines.append(header)
        for _, row in summary.iterrows():
            cells = "".join(
                f"{row[f'{m}_mean']:8.3f} [{row[f'{m}_lo']:.3f},{row[f'{m}_hi']:.3f}]"
                for m in metrics
            )
            lines.append(f"{row['model']:8s}{cells}")
        paired = comparison.paired[protocol]
        if len(paired):
            lines.append(
                "paired differences (per seed; CI over seeds; seeds favouring first/second)"
            )
            for _, row in paired.iterrows():
                lines.append(
                    f"  {row['comparison']:14s} {row['metric']:12s} {row['mean_difference']:+.3f} "
                    f"[{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}]  "
                    f"{row['seeds_first_better']}/{row['seeds_second_better']}"
                )
        lines.append("")
    return "\n".join(lines)
