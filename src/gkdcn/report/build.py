"""``gkdcn report``: render the collected run into one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from gkdcn.compare.layout import RunLayout
from gkdcn.errors import InputError
from gkdcn.io.atomic import check_writable, write_text
from gkdcn.report.ablation import ablation_section
from gkdcn.report.collect import Report, collect_report

TEMPLATE = "report.html.j2"


def build_report(
    run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write one self-contained HTML report of the comparison run in ``run_dir``; return its path.

    ``out`` defaults to ``RUN_DIR/report.html``. Refuses to replace an existing file unless
    ``overwrite``. Raises :class:`~gkdcn.errors.InputError` when ``run_dir`` is not a finished
    comparison run (no ``run.json`` or ``summary.json``, or unreadable ones).
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    out = Path(out) if out is not None else layout.report_html
    if not run_dir.is_dir():
        raise InputError(run_dir, "not a folder (expected a comparison run folder)")
    if not layout.run_json.is_file():
        raise InputError(
            run_dir, "not a comparison run folder (no run.json; make one with `gkdcn compare`)"
        )
    # Every file of the run is an input of the report (its summary, tables, maps, models), so
    # the report never replaces one of them; only an earlier report (HTML) may be replaced.
    inputs = [p for p in run_dir.rglob("*") if p.is_file() and p.suffix.lower() != ".html"]
    check_writable(out, overwrite, inputs=inputs)
    report = collect_report(run_dir, out)
    # the ablation (gkdcn ablation --out RUN_DIR), when the run folder holds one
    html = render_report(report, ablation_section(layout, report.problems))
    write_text(out, html, overwrite=overwrite, inputs=inputs)
    return out


def render_report(report: Report, ablation: dict[str, Any] | None = None) -> str:
    """The report as HTML text.

    An autoescaped jinja2 template shipped in ``gkdcn/templates``; ``ablation``: the section of
    :func:`~gkdcn.report.ablation.ablation_section`, if any.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gkdcn", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE).render(r=report, ablation=ablation)
