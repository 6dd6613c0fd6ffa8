"""What gkdcn prints on the terminal: the study summary and the comparison tables.

Display text lives here, not in the data layer or the comparison: both hand over plain data
(:func:`gkdcn.data.study.summarize`, :class:`gkdcn.compare.Comparison`) and this module words it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from gkdcn.compare import PROTOCOL_TITLES, Comparison
from gkdcn.compare.stats import best_network_against_best_baseline
from gkdcn.models import registry
from gkdcn.report.texts import baseline_sentence

if TYPE_CHECKING:
    import pandas as pd


def _model_label(name: str) -> str:
    """A model's display name in the comparison tables, baselines marked."""
    return registry.label(name) + (" (baseline)" if registry.is_baseline(name) else "")


def _shorten(names: list[str], limit: int = 12) -> str:
    return ", ".join(names) if len(names) <= limit else ", ".join(names[:limit]) + ", ..."


def _transform_line(t: dict[str, Any]) -> str:
    """Which layers go through the log / CLR and which are only scaled."""
    scaling = "no scaling" if t["scaling"] == "none" else f"{t['scaling']} scaling"
    if t["method"] == "none":
        return f"  transform  none, {scaling} of every layer"
    parts, others = t["log_ratio"], t["scaled_only"]
    if not others:
        return f"  transform  {t['method']} on all {len(parts)} layers, then {scaling}"
    return (
        f"  transform  {t['method']} on {len(parts)} layers ({_shorten(parts)}); "
        f"{scaling} only: {', '.join(others)}"
    )


def format_summary(summary: dict[str, Any]) -> str:
    """Readable multi-line text of :func:`gkdcn.data.study.summarize`'s dict (what ``gkdcn prepare`` prints)."""
    layers = summary["layers"]
    shown = ", ".join(layers) if len(layers) <= 12 else ", ".join(layers[:12]) + ", ..."
    valid, cells = summary["valid_cells"], summary["cells"]
    lines = [
        f"study {summary['name']}",
        f"  grid       {summary['grid']}",
        f"  layers     {len(layers)}: {shown}",
        f"  valid      {valid} of {cells} cells ({100 * valid / max(cells, 1):.1f}%)",
        f"  sites      {summary['deposits']} deposits, {summary['non_deposits']} non-deposits"
        + (f" ({summary['skipped_sites']} skipped)" if summary["skipped_sites"] else ""),
    ]
    k = summary.get("knowledge")
    if k:
        lines.append(
            f"  knowledge  from {k['source']}{', also as a channel' if k['as_channel'] else ''}: "
            f"mean weight {k['mean']:.3f}, {100 * k['nonzero_fraction']:.1f}% of valid cells > 0"
        )
    else:
        lines.append("  knowledge  none")
    if summary.get("transform"):  # optional: a summary without a transform record has none
        lines.append(_transform_line(summary["transform"]))
    s = summary.get("samples")
    if s:
        lines.append(f"  samples    {s['total']} windows ({s['positive']} +, {s['negative']} -)")
    for split in summary.get("splits", [])[:10]:
        lines.append(
            f"  split {split['name']}: train {split['train']} ({split['train_positive']} +), "
            f"val {split['val']} ({split['val_positive']} +)"
        )
    if len(summary.get("splits", [])) > 10:
        lines.append(f"  ... and {len(summary['splits']) - 10} more splits")
    notes = summary.get("notes", [])
    if notes:
        lines.append(f"  notes ({len(notes)}):")
        lines += [f"    - {n}" for n in notes]
    return "\n".join(lines)


def comparison_tables(comparison: Comparison) -> list[Table]:
    """One table per protocol, and one of paired differences where the run has them.

    The protocol tables give the mean [95 % CI] over seeds per model.
    """
    tables = []
    for protocol in comparison.plan.protocols:
        summary = comparison.summary[protocol]
        metrics = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
        check = best_network_against_best_baseline(summary, comparison.paired[protocol])
        table = Table(
            title=PROTOCOL_TITLES[protocol] + _interval_note(summary),
            title_justify="left",
            caption=baseline_sentence(check, in_sample=protocol == "authors") or None,
            caption_justify="left",
        )
        table.add_column("model")
        for m in metrics:
            table.add_column(m, justify="right")
        for _, row in summary.iterrows():
            table.add_row(
                _model_label(str(row["model"])),
                *(
                    f"{row[f'{m}_mean']:.3f} [{row[f'{m}_lo']:.3f},{row[f'{m}_hi']:.3f}]"
                    for m in metrics
                ),
            )
        tables.append(table)
        paired = comparison.paired[protocol]
        if len(paired):
            title = "paired differences (per seed; CI over seeds)"
            if "interval" in paired:
                title = "paired differences" + _interval_note(paired)
            diff = Table(title=title, title_justify="left")
            for name in ("comparison", "metric", "mean", "95% CI", "seeds first/second better"):
                diff.add_column(
                    name, justify="left" if name in ("comparison", "metric") else "right"
                )
            for _, row in paired.iterrows():
                diff.add_row(
                    str(row["comparison"]),
                    str(row["metric"]),
                    f"{row['mean_difference']:+.3f}",
                    f"[{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}]",
                    f"{row['seeds_first_better']}/{row['seeds_second_better']}",
                )
            tables.append(diff)
        ensemble = comparison.ensemble.get(protocol)
        if ensemble is not None and len(ensemble):
            tables.append(_ensemble_table(ensemble))
        selection = comparison.selection.get(protocol)
        if selection is not None and len(selection):
            tables.append(_selection_table(selection))
    return tables


def _interval_note(table: pd.DataFrame) -> str:
    """Which 95 % interval the rows of ``table`` give, where its ``interval`` column says."""
    if "interval" not in table or not len(table):
        return ""
    kinds = list(dict.fromkeys(str(k) for k in table["interval"]))
    return f" (95% CI: {'; '.join(kinds)})"


def _selection_table(selection: pd.DataFrame) -> Table:
    """The epochs each network's held-out folds chose on their inner folds."""
    first = selection.iloc[0]
    table = Table(
        title=f"epochs chosen inside the fold ({first['method']}, of {first['epochs_configured']}"
        "; by the inner folds' held-out AUC)",
        title_justify="left",
    )
    for name in ("model", "seed", "folds", "mean epochs", "range", "inner auc"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for _, row in selection.iterrows():
        table.add_row(
            _model_label(str(row["model"])),
            str(row["seed"]),
            str(row["folds"]),
            f"{row['epochs_mean']:.1f}",
            f"{row['epochs_min']}-{row['epochs_max']}",
            f"{row['inner_auc']:.3f}",
        )
    return table


def _ensemble_table(ensemble: pd.DataFrame) -> Table:
    """Each model's seed ensemble against its single seeds (``tables/<protocol>_ensemble.csv``)."""
    table = Table(
        title="seed ensembles (mean probability over seeds; difference paired by deposit)",
        title_justify="left",
    )
    for name in ("model", "seeds", "ensemble auc", "single-seed auc", "difference", "95% CI",
                 "deposits ensemble/single better", "ensemble top 15%"):  # fmt: skip
        table.add_column(name, justify="left" if name == "model" else "right")
    for _, row in ensemble.iterrows():
        table.add_row(
            _model_label(str(row["model"])),
            str(row["seeds"]),
            f"{row['auc']:.3f}",
            f"{row['single_auc']:.3f}",
            f"{row['auc_difference']:+.3f}",
            f"[{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}]",
            f"{row['deposits_ensemble_better']}/{row['deposits_single_better']}",
            f"{row['capture_top15']:.0%}",
        )
    return table


def format_tables(comparison: Comparison, width: int = 160) -> str:
    """:func:`comparison_tables` as plain text (logs, closing notes)."""
    out = io.StringIO()
    # Text as written, as on the command line (gkdcn.cli): a bracketed cell is not markup.
    console = Console(file=out, width=width, color_system=None, markup=False, highlight=False)
    for table in comparison_tables(comparison):
        console.print(table)
    return out.getvalue()
