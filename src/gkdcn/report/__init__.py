"""One self-contained HTML report of a comparison run folder (``gkdcn report RUN_DIR``).

:func:`build_report` reads what :func:`gkdcn.compare.run_comparison` wrote (``run.json``,
``summary.json``, ``figures/*.png``, ``maps/*.tif``) and, when present, the explanation folders
``RUN_DIR/explain/<model>/index.json`` written by :func:`gkdcn.explain.run.explain_model`, and
renders ``templates/report.html.j2`` into a single HTML file. Figures are embedded as base64 PNG
data URIs and the stylesheet is inline, so the file opens from disk or an e-mail attachment with
no network access. Optional parts (a protocol, the explanations, a figure) are left out, with a
line saying so, when the run does not have them.

One file per job: :mod:`~gkdcn.report.collect` (read the run folder),
:mod:`~gkdcn.report.tables` (table rows), :mod:`~gkdcn.report.texts` (prose),
:mod:`~gkdcn.report.formatting` (numbers and names), :mod:`~gkdcn.report.images` (embedded PNGs),
:mod:`~gkdcn.report.commands` (reproduce commands), :mod:`~gkdcn.report.build` (render and write).
"""

from gkdcn.report.build import build_report, render_report
from gkdcn.report.collect import Report, collect_report
from gkdcn.report.formatting import fmt_interval, fmt_number, model_label
from gkdcn.report.images import Image, png_data_uri

__all__ = [
    "Image",
    "Report",
    "build_report",
    "collect_report",
    "fmt_interval",
    "fmt_number",
    "model_label",
    "png_data_uri",
    "render_report",
]
