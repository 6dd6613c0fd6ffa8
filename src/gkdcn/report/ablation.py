"""The report's ablation section: what each lever of the training recipe does to held-out AUC.

Read from ``RUN/ablation/ablation.json`` (:attr:`~gkdcn.compare.layout.RunLayout.ablation_json`),
written by ``gkdcn ablation CONFIG --out RUN``, whose full recipe is the comparison in ``RUN``.
Plain JSON in, plain strings out: no pandas, torch or matplotlib (``gkdcn report`` stays light).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gkdcn.compare.layout import RunLayout
from gkdcn.report.formatting import as_float, fmt_interval, fmt_number, model_label


def ablation_section(layout: RunLayout, problems: list[str]) -> dict[str, Any] | None:
    """The ablation table of the run folder for the template, or None when it has none.

    An unreadable table is left out with a line in ``problems`` (the rest of the report stands).
    """
    path = layout.ablation_json
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [r for r in data["rows"] if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        problems.append(f"{layout.relative(path)}: cannot read the ablation table ({exc})")
        return None
    variants = [v for v in data.get("variants") or [] if isinstance(v, dict)]
    changes = {str(v.get("name")): _changes(v.get("changes") or {}) for v in variants}
    protocol = str(data.get("protocol", ""))
    return {
        "protocol": protocol,
        "seeds": data.get("seeds"),
        "epochs": data.get("epochs"),
        "rows": [_row(r, changes) for r in rows],
        "sentence": clear_levers(rows),
        "source": layout.relative(layout.ablation_table),
        "command": _command(data, variants),
        "folders": [
            (
                str(v.get("name")),
                "this run folder" if v.get("folder") == "." else str(v.get("folder")),
            )
            for v in variants
        ],
    }


def _command(data: Mapping[str, Any], variants: Sequence[Mapping[str, Any]]) -> str:
    """The command that reproduces the ablation with the configuration the report shows.

    Its width, background cells and knowledge channel are in that configuration.
    """
    if not variants:
        return ""
    reference, others = variants[0], variants[1:]
    models = [str(m) for m in others[0].get("models") or []] if others else []
    extra = [str(m) for m in reference.get("models") or [] if str(m) not in models]
    names = ",".join(str(v.get("name")) for v in others)
    parts = ["gkdcn ablation study.toml --out RUN", f"--protocol {data.get('protocol')}"]
    parts += [f"--seeds {data.get('seeds')}", f"--epochs {data.get('epochs')}"]
    if models:
        parts.append(f"--models {','.join(models)}")
    if extra:
        parts.append(f"--reference-models {','.join(extra)}")
    if names:
        parts.append(f'--variants "{names}"')
    return " ".join(parts)


def _changes(update: Mapping[str, Any]) -> str:
    """A variant's config changes as the user would write them (``noise = 0.0``)."""
    return ", ".join(f"{key} = {json.dumps(value)}" for key, value in update.items())


def _row(record: Mapping[str, Any], changes: Mapping[str, str]) -> dict[str, Any]:
    variant = str(record.get("variant", ""))
    diff = as_float(record.get("diff_mean"))
    paired = int(as_float(record.get("paired_seeds")) or 0)
    if diff is None:
        verdict, tone = "reference", "muted"
    elif paired < 2:
        verdict, tone = "1 seed: no interval", "muted"
    elif record.get("clear"):
        verdict, tone = ("lower" if diff < 0 else "higher") + " than the full recipe", "strong"
    else:
        verdict, tone = "within seed noise", "muted"
    return {
        "variant": variant,
        "changes": changes.get(variant, ""),
        "model": model_label(str(record.get("model", ""))),
        "baseline": record.get("kind") == "baseline",
        "seeds": int(as_float(record.get("seeds")) or 0),
        "auc": fmt_number(record.get("auc_mean")),
        "auc_ci": fmt_interval(record.get("auc_lo"), record.get("auc_hi")),
        "diff": "—" if diff is None else fmt_number(diff, signed=True),
        "diff_ci": ""
        if diff is None or paired < 2
        else fmt_interval(record.get("diff_lo"), record.get("diff_hi"), signed=True),
        "counts": "—"
        if diff is None
        else f"{int(record.get('seeds_better') or 0)} / {int(record.get('seeds_worse') or 0)}",
        "differences": str(record.get("differences") or ""),
        "verdict": verdict,
        "tone": tone,
    }


def clear_levers(rows: Sequence[Mapping[Any, Any]]) -> str:
    """One sentence: which variants moved held-out AUC clear of seed noise, and by how much.

    Clear of seed noise: the 95 % interval of the paired difference to the full recipe excludes 0.
    """
    compared = [r for r in rows if as_float(r.get("diff_mean")) is not None]
    if not compared:
        return "No variant was compared with the full recipe."
    seeds = max(int(as_float(r.get("paired_seeds")) or 0) for r in compared)
    if seeds < 2:
        return (
            "With one seed per variant no difference has an interval: none is shown to be "
            "clear of seed noise (run with --seeds 2 or more)."
        )
    clear = [r for r in compared if r.get("clear")]
    if not clear:
        return (
            f"No variant is clear of seed noise over {seeds} seeds: every paired difference to "
            "the full recipe has a 95 % interval that includes 0."
        )
    parts = [
        f"{r.get('variant')} ({model_label(str(r.get('model')))} "
        f"{fmt_number(r.get('diff_mean'), signed=True)} "
        f"{fmt_interval(r.get('diff_lo'), r.get('diff_hi'), signed=True)})"
        for r in clear
    ]
    rest = len(compared) - len(clear)
    tail = f"; the other {rest} are within seed noise" if rest else ""
    return (
        f"Clear of seed noise over {seeds} seeds (95 % interval of the paired difference to "
        f"the full recipe excludes 0): {'; '.join(parts)}{tail}. A negative difference: the "
        "variant ranks held-out deposits worse than the full recipe, so what it removes or "
        "replaces helps."
    )
