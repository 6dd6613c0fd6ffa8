"""Numbers, names and paths as the report shows them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gkdcn.models import registry

TIE = 1e-12


def model_label(model: str) -> str:
    """Display name of a model kind (``gk-dcn`` -> ``GK-DCN``)."""
    return registry.label(model)


def fmt_number(value: Any, *, percent: bool = False, signed: bool = False) -> str:
    """A metric value: 3 decimals (a 0..1 share as % with 1 decimal); ``—`` when missing."""
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "—"
    sign = "+" if signed else ""
    if percent:
        return f"{100 * number:{sign}.1f}"
    return f"{number:{sign}.3f}"


def fmt_interval(lo: Any, hi: Any, *, percent: bool = False, signed: bool = False) -> str:
    """``[lo, hi]`` with :func:`fmt_number`."""
    return (
        f"[{fmt_number(lo, percent=percent, signed=signed)}, "
        f"{fmt_number(hi, percent=percent, signed=signed)}]"
    )


def as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def coord(value: float) -> str:
    """A map coordinate: whole numbers without decimals, others with three."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def duration(seconds: Any) -> str | None:
    """Seconds as ``1 h 02 min (3,720 s)``, ``3 min 04 s`` or ``5.0 s``; None when not a number."""
    value = as_float(seconds)
    if value is None:
        return None
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min ({value:,.0f} s)"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{value:.1f} s"


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX separators), or absolute when on another drive."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return path.resolve().as_posix()
