"""Ablation of the training recipe: the held-out comparison with each lever switched off in turn.

    python scripts/ablation.py --district synthetic --out runs/ablation-synth
    python scripts/ablation.py --district examples/tianshan.toml --data-dir ../shared/data/tianshan \\
        --out runs/ablation-tianshan --seeds 2 --epochs 10

Every variant is one ``gkdcn compare`` run (same folds, seeds, background cells; resumable, one
folder per variant under ``--out``) whose training config differs from the full recipe by one
lever. The table gives, per variant and model, the held-out AUC (mean [95 % CI over seeds]) and
the paired per-seed difference to the full recipe of the same model. It is written as
``ablation.csv`` and ``ablation.md`` in ``--out`` and printed.

``--district synthetic`` generates a district into ``--out`` (``--synthetic-deposits``,
``--synthetic-seed``, ``--systems``), so the defaults can be chosen without the real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gkdcn.compare import make_plan, mean_ci, run_comparison
from gkdcn.config import TrainConfig, load_config
from gkdcn.data.study import load_study
from gkdcn.data.synthetic import generate_district, spec_from_dict
from gkdcn.errors import GkdcnError

# Each lever off in turn (a TrainConfig update applied to the full recipe), plus the authors'.
VARIANTS: dict[str, dict[str, Any]] = {
    "full recipe": {},
    "no background": {"background_ratio": 0.0},
    "background as nnPU unlabelled": {"background_loss": "nnpu"},
    "background as BCE negatives": {"background_loss": "bce"},
    "no knowledge on background": {"gk_background": False, "knowledge_prior": False},
    "no augmentation": {"augment": False},
    "no value noise": {"noise": 0.0},
    "no knowledge channel": {"knowledge.as_channel": False},
    "authors' settings": {"preset": "authors", "knowledge.as_channel": False},
    # every lever off but our optimiser kept: the setting issue 11 measured
    "recipe off": {
        "background_ratio": 0.0,
        "gk_background": False,
        "knowledge_prior": False,
        "augment": False,
        "noise": 0.0,
        "calibration": "none",
        "knowledge.as_channel": False,
    },
    # a lever that is off by default, switched on: the knowledge weight as an input channel
    "+ knowledge as input channel": {"knowledge.as_channel": True},
    "+ knowledge channel without background": {
        "knowledge.as_channel": True,
        "background_ratio": 0.0,
    },
}
STUDY_KEYS = ("knowledge.as_channel",)
DEFAULT_VARIANTS = (
    "full recipe",
    "no background",
    "background as nnPU unlabelled",
    "no knowledge on background",
    "no augmentation",
    "no value noise",
    "no knowledge channel",
    "recipe off",
)


def variant_config(train: TrainConfig, update: dict[str, Any], epochs: int | None) -> TrainConfig:
    """The full recipe's training config with one lever changed (and the run's epochs)."""
    update = {k: v for k, v in update.items() if k not in STUDY_KEYS}
    if update.get("preset") == "authors":
        base: dict[str, Any] = {"preset": "authors", "width": train.width, "seed": train.seed}
    else:
        base = {**train.model_dump(), **update}
    if epochs is not None:
        base["epochs"] = epochs
    return TrainConfig.model_validate(base)


def ablation_table(runs: dict[str, pd.DataFrame], reference: str = "full recipe") -> pd.DataFrame:
    """One row per variant and model: AUC mean [CI] and the paired difference to ``reference``."""
    rows = []
    ref = runs[reference]
    for variant, frame in runs.items():
        for model, group in frame.groupby("model", sort=False):
            group = group.set_index("seed").sort_index()
            mean, lo, hi = mean_ci(group["auc"].to_numpy(), bounds=(0.0, 1.0))
            row: dict[str, Any] = {
                "variant": variant,
                "model": model,
                "seeds": len(group),
                "auc_mean": mean,
                "auc_lo": lo,
                "auc_hi": hi,
            }
            base = ref[ref["model"] == model].set_index("seed").sort_index()
            if variant != reference and len(base):
                common = group.index.intersection(base.index)
                diffs = group.loc[common, "auc"].to_numpy() - base.loc[common, "auc"].to_numpy()
                d, dlo, dhi = mean_ci(diffs, bounds=(-1.0, 1.0))
                row |= {
                    "diff_vs_full": d,
                    "diff_lo": dlo,
                    "diff_hi": dhi,
                    "seeds_better": int(np.sum(diffs > 1e-12)),
                    "seeds_worse": int(np.sum(diffs < -1e-12)),
                }
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown (as it goes into README)."""
    lines = [
        "| variant | model | held-out AUC [95 % CI] | paired difference vs full [95 % CI] "
        "| seeds better/worse |",
        "|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        auc = f"{r.auc_mean:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}]"
        if pd.notna(r.get("diff_vs_full", np.nan)):
            diff = f"{r.diff_vs_full:+.3f} [{r.diff_lo:+.3f}, {r.diff_hi:+.3f}]"
            counts = f"{int(r.seeds_better)}/{int(r.seeds_worse)}"
        else:
            diff, counts = "—", "—"
        lines.append(f"| {r.variant} | {r.model} | {auc} | {diff} | {counts} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--district", default="synthetic", help="'synthetic' or a study config")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--synthetic-deposits", type=int, default=60)
    parser.add_argument("--synthetic-seed", type=int, default=0)
    parser.add_argument("--systems", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--width", type=int, default=None, help="network width (CPU: 16)")
    parser.add_argument("--models", default="gk-cnn", help="comma-separated compare models")
    parser.add_argument(
        "--extra-models",
        default="cnn",
        help="models also run for the full recipe: the GK effect, the other networks, and the "
        "baselines (knowledge, element, logistic, random-forest) on the same folds",
    )
    parser.add_argument("--protocol", default="lodo", choices=["lodo", "blocks"])
    parser.add_argument(
        "--background", type=int, default=1000, help="background cells held-out deposits rank in"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from: {'; '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--as-channel",
        action="store_true",
        help="every variant with the knowledge weight as an input channel",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="build the table from the variants' finished run folders without training",
    )
    args = parser.parse_args(argv)

    try:
        if args.district == "synthetic":
            folder = args.out / "district"
            config_path = folder / "study.toml"
            if not config_path.exists():
                spec = spec_from_dict(
                    {
                        "seed": args.synthetic_seed,
                        "n_deposits": args.synthetic_deposits,
                        "n_systems": args.systems,
                    }
                )
                generate_district(folder, spec)
            config = load_config(config_path)
        else:
            config = load_config(args.district, args.data_dir)
        if args.as_channel:
            knowledge = config.knowledge.model_copy(update={"as_channel": True})
            config = config.model_copy(update={"knowledge": knowledge})
        train = config.train
        if args.width is not None:
            train = TrainConfig.model_validate({**train.model_dump(), "width": args.width})
        compare = config.compare.model_copy(update={"heldout_background": args.background})
        study = load_study(config)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        extra = [m.strip() for m in args.extra_models.split(",") if m.strip()]
        runs: dict[str, pd.DataFrame] = {}
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if name not in VARIANTS:
                raise GkdcnError(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
            update: dict[str, Any] = {
                "train": variant_config(train, VARIANTS[name], args.epochs),
                "compare": compare,
            }
            as_channel = VARIANTS[name].get("knowledge.as_channel")
            if as_channel is not None:
                update["knowledge"] = config.knowledge.model_copy(update={"as_channel": as_channel})
            cfg = config.model_copy(update=update)
            variant_study = study if as_channel is None or args.table_only else load_study(cfg)
            chosen = (
                models + [m for m in extra if m not in models] if name == "full recipe" else models
            )
            plan = make_plan(cfg, seeds=args.seeds, models=chosen, protocols=[args.protocol])
            slug = name.replace(" ", "-").replace("'", "").replace("+", "plus").replace(",", "")
            if not args.table_only:
                print(f"[{name}] {len(plan.seeds)} seeds, {', '.join(plan.models)}", flush=True)
                run_comparison(
                    dataclasses.replace(variant_study, config=cfg),
                    args.out / slug,
                    plan,
                    workers=args.jobs,
                )
            table_path = args.out / slug / "tables" / f"{args.protocol}_runs.csv"
            if not table_path.exists():
                raise GkdcnError(f"{table_path}: variant not run yet")
            runs[name] = pd.read_csv(table_path)
        table = ablation_table(runs, reference=next(iter(runs)))
        table.to_csv(args.out / "ablation.csv", index=False)
        (args.out / "ablation.md").write_text(to_markdown(table))
        print(to_markdown(table))
    except GkdcnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
