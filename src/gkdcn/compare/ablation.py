"""The ablation of the training recipe: the held-out comparison with one lever changed at a time.

Every variant is one resumable comparison run (:func:`~gkdcn.compare.run.run_comparison`: same
folds, seeds and background cells) whose training config differs from the full recipe by one
lever (:data:`VARIANTS`). The full recipe itself is the comparison in the run folder, with the
networks and baselines of ``reference_models``; the variants lie in ``RUN/ablation/<variant>/``
(:meth:`~gkdcn.compare.layout.RunLayout.ablation_run`), and the table, per variant and model,
gives the held-out AUC (mean [95 % CI over seeds]) and the paired per-seed difference to the
full recipe of the same model (:func:`ablation_table`), written to ``RUN/ablation/ablation.csv``,
``ablation.md`` and ``ablation.json`` (which ``gkdcn report RUN`` shows).

Run it on a synthetic district (``gkdcn synth --deposits 60``) to choose defaults; run it on the
real data once, with the chosen defaults, to report them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from gkdcn.compare.layout import RunLayout
from gkdcn.compare.plan import Plan, make_plan, override_training
from gkdcn.compare.protocols import is_heldout
from gkdcn.compare.stats import TIE, mean_ci
from gkdcn.compare.variants import CHANNEL_KEY, DEFAULT_VARIANTS, REFERENCE, VARIANTS
from gkdcn.config import KnowledgeConfig, StudyConfig, TrainConfig
from gkdcn.errors import GkdcnError, Note, validation_message
from gkdcn.io.atomic import write_text
from gkdcn.models import registry

if TYPE_CHECKING:
    from rich.progress import Progress

    from gkdcn.data.study import Study

DEFAULT_MODELS = ("gk-dcn",)
METRIC = "auc"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One run of the ablation: its name, folder, config and plan."""

    name: str
    folder: Path
    config: StudyConfig
    plan: Plan

    @property
    def is_reference(self) -> bool:
        """Whether this is the full recipe (the comparison in the run folder itself)."""
        return self.name == REFERENCE


def variant_slug(name: str) -> str:
    """The variant's folder name: ``no value noise`` -> ``no-value-noise``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")


def variant_config(config: StudyConfig, name: str) -> StudyConfig:
    """The full recipe's config (``config``) with the levers of variant ``name`` changed."""
    if name not in VARIANTS:
        raise GkdcnError(f"unknown variant {name!r} (choose from {'; '.join(VARIANTS)})")
    update = dict(VARIANTS[name])
    channel = update.pop(CHANNEL_KEY, None)
    preset = update.pop("preset", None)
    changes: dict[str, Any] = {
        "train": override_training(config.train, update, preset=preset, what=f"variant {name!r}")
    }
    if channel is not None:
        changes["knowledge"] = config.knowledge.model_copy(update={"as_channel": channel})
    return config.model_copy(update=changes)


def recipe_config(
    config: StudyConfig,
    *,
    width: int | None = None,
    background: int | None = None,
    knowledge_channel: bool | None = None,
) -> StudyConfig:
    """The full recipe's config: ``config`` with ``gkdcn ablation``'s own options applied.

    ``width`` sets ``[train] width``, ``background`` ``[compare] heldout_background`` (0: every
    cell) and ``knowledge_channel`` ``[knowledge] as_channel``; each is checked as its config
    key is, a bad value a :class:`GkdcnError` naming the option. ``None`` keeps the config's.
    """
    if width is not None:
        config = config.model_copy(
            update={"train": override_training(config.train, {"width": width}, what="--width")}
        )
    if background is not None:
        if background < 0:
            raise GkdcnError(f"--background must be 0 (all cells) or more, not {background}")
        try:
            compare = type(config.compare).model_validate(
                {**config.compare.model_dump(), "heldout_background": background}
            )
        except ValidationError as exc:
            raise GkdcnError(f"--background: {validation_message(exc)}") from None
        config = config.model_copy(update={"compare": compare})
    if knowledge_channel is not None:
        knowledge = config.knowledge.model_copy(update={"as_channel": knowledge_channel})
        config = config.model_copy(update={"knowledge": knowledge})
    return config


def plan_ablation(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    variants: Sequence[str] | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    reference_models: Sequence[str] | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    protocol: str = "lodo",
) -> list[Variant]:
    """The runs of an ablation, the full recipe first; checks every name before any training.

    ``variants``: names from :data:`~gkdcn.compare.variants.VARIANTS` (default:
    :data:`~gkdcn.compare.variants.DEFAULT_VARIANTS`); ``models``: the networks every variant
    trains; ``reference_models``: what the full recipe
    also runs (default: the config's ``[compare] models``, networks and baselines), so the run
    folder holds the whole comparison. A variant whose settings equal the full recipe's (e.g.
    ``with knowledge channel`` when the config sets it) is left out with a note.
    """
    if not is_heldout(protocol):
        raise GkdcnError(
            f"--protocol {protocol}: the ablation compares held-out AUC; use lodo or blocks"
        )
    for model in models:
        if not registry.is_network(model):
            hint = (
                " (baselines do not depend on the training recipe; the full recipe runs them, "
                "see --reference-models)"
                if registry.is_baseline(model)
                else ""
            )
            networks = ", ".join(registry.names("network"))
            raise GkdcnError(
                f"--models: {model!r} is not a network (choose from {networks})" + hint
            )
    if not models:
        raise GkdcnError("--models: name at least one network")
    names = list(dict.fromkeys(v for v in variants or DEFAULT_VARIANTS if v != REFERENCE))
    for name in names:
        variant_config(config, name)  # an unknown name fails here, before anything is trained
    reference_models = list(reference_models or config.compare.models)
    layout = RunLayout(Path(out_dir))
    runs: list[Variant] = []
    chosen: dict[str, tuple[TrainConfig, KnowledgeConfig]] = {}
    for name in [REFERENCE, *names]:
        cfg = variant_config(config, name)
        if name == REFERENCE:
            run_models = [*models, *(m for m in reference_models if m not in models)]
        else:
            run_models = list(models)
        plan = make_plan(cfg, seeds=seeds, epochs=epochs, models=run_models, protocols=[protocol])
        key = (plan.train, cfg.knowledge)
        same = next((other for other, k in chosen.items() if k == key), None)
        if same is not None:
            warnings.warn(
                f"variant {name!r} has the same settings as {same!r}; left out", Note, stacklevel=2
            )
            continue
        chosen[name] = key
        folder = layout.root if name == REFERENCE else layout.ablation_run(variant_slug(name))
        runs.append(Variant(name, folder, cfg, plan))
    return runs


def run_ablation(
    study: Study,
    out_dir: str | Path,
    variants: Sequence[Variant],
    *,
    overwrite: bool = False,
    workers: int = 1,
    device: str = "cpu",
    progress: Progress | None = None,
    inputs: Sequence[str | Path] = (),
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) every variant of :func:`plan_ablation` and write the ablation table.

    The full recipe runs first into ``out_dir`` (a comparison run folder, which ``gkdcn report``
    reads), each other variant into ``RUN/ablation/<variant>/``. Each run is a resumable
    comparison: an interrupted ablation resumes job by job; ``overwrite`` redoes every run.
    Returns the table of :func:`ablation_table` (also written as CSV, markdown and JSON).
    """
    from gkdcn.compare.run import run_comparison
    from gkdcn.data.study import load_study

    layout = RunLayout(Path(out_dir))
    if not variants or not variants[0].is_reference:
        raise GkdcnError("an ablation starts with the full recipe (use plan_ablation)")
    runs: dict[str, pd.DataFrame] = {}
    protocol = variants[0].plan.protocols[0]
    for variant in variants:
        if log is not None:
            log(
                f"[{variant.name}] {len(variant.plan.seeds)} seeds, "
                f"{', '.join(variant.plan.models)} -> {variant.folder}"
            )
        # The channel changes the stacked inputs: such a variant loads its own study.
        same_inputs = variant.config.knowledge == study.config.knowledge
        variant_study = (
            dataclasses.replace(study, config=variant.config)
            if same_inputs
            else load_study(variant.config)
        )
        # --overwrite replaces the run folder (and so every variant below it) once, first
        redo = overwrite and variant.is_reference
        comparison = run_comparison(
            variant_study, variant.folder, variant.plan, overwrite=redo, progress=progress,
            device=device, workers=workers, inputs=inputs,
        )  # fmt: skip
        runs[variant.name] = comparison.runs[protocol]
    table = ablation_table(runs)
    write_ablation(layout, table, variants)
    return table


def ablation_table(runs: dict[str, pd.DataFrame], reference: str = REFERENCE) -> pd.DataFrame:
    """One row per variant and model, with the paired difference to ``reference``.

    Held-out AUC mean [CI] and the paired difference to ``reference`` (the same model, on the seeds
    both ran), with the seeds each way.

    ``runs``: per variant, a comparison's runs table (``model``, ``seed``, ``auc``).
    ``clear`` says whether the difference's 95 % interval excludes 0 (never with one seed).
    """
    rows = []
    ref = runs[reference]
    for variant, frame in runs.items():
        for model, group in frame.groupby("model", sort=False):
            group = group.set_index("seed").sort_index()
            mean, lo, hi = mean_ci(group[METRIC].to_numpy(), bounds=(0.0, 1.0))
            row: dict[str, Any] = {
                "variant": variant,
                "model": model,
                "kind": "baseline" if registry.is_baseline(str(model)) else "network",
                "seeds": len(group),
                "auc_mean": mean,
                "auc_lo": lo,
                "auc_hi": hi,
            }
            base = ref[ref["model"] == model].set_index("seed").sort_index()
            common = group.index.intersection(base.index)
            if variant != reference and len(common):
                diffs = group.loc[common, METRIC].to_numpy() - base.loc[common, METRIC].to_numpy()
                d, dlo, dhi = mean_ci(diffs, bounds=(-1.0, 1.0))
                row |= {
                    "paired_seeds": len(common),
                    "diff_mean": d,
                    "diff_lo": dlo,
                    "diff_hi": dhi,
                    "seeds_better": int(np.sum(diffs > TIE)),
                    "seeds_worse": int(np.sum(diffs < -TIE)),
                    "clear": bool(len(diffs) > 1 and (dlo > TIE or dhi < -TIE)),
                    "differences": " ".join(f"{x:+.3f}" for x in diffs),
                }
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown."""
    lines = [
        "| variant | model | seeds | held-out AUC [95 % CI] "
        "| paired difference vs full recipe [95 % CI] | seeds better/worse |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        auc = f"{r['auc_mean']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]"
        if pd.notna(r.get("diff_mean", np.nan)):
            diff = f"{r['diff_mean']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]"
            counts = f"{int(r['seeds_better'])}/{int(r['seeds_worse'])}"
        else:
            diff, counts = "—", "—"
        model = registry.label(r["model"])
        lines.append(
            f"| {r['variant']} | {model} | {int(r['seeds'])} | {auc} | {diff} | {counts} |"
        )
    return "\n".join(lines) + "\n"


def write_ablation(layout: RunLayout, table: pd.DataFrame, variants: Sequence[Variant]) -> None:
    """Write the table as ``ablation.csv``, ``ablation.md`` and ``ablation.json``.

    Each is written atomically; they are derived from the runs, so a resumed ablation rewrites them.
    """
    reference = variants[0]
    meta = {
        "metric": METRIC,
        "protocol": reference.plan.protocols[0],
        "seeds": len(reference.plan.seeds),
        "epochs": reference.plan.train.epochs,
        "reference": REFERENCE,
        "variants": [
            {
                "name": v.name,
                "folder": layout.relative(v.folder),
                "changes": VARIANTS[v.name],
                "models": list(v.plan.models),
            }
            for v in variants
        ],
        # NaN (no paired difference: the reference's own rows) is written as null
        "rows": json.loads(table.to_json(orient="records")),
    }
    layout.ablation_dir.mkdir(parents=True, exist_ok=True)
    write_text(layout.ablation_table, table.to_csv(index=False), overwrite=True)
    write_text(layout.ablation_markdown, to_markdown(table), overwrite=True)
    write_text(layout.ablation_json, json.dumps(meta, indent=2), overwrite=True)
