"""Command-line interface: a thin Typer layer over the library API, one module per command.

``app`` is the ``gkdcn`` command (the console entry point ``gkdcn.cli:app``). Each command
lives in the module of its name (``gkdcn.cli.train``, ...) and parses its options, calls the
library and prints the result; what they share (option types, the consoles, the one-line
errors, the progress display) is :mod:`gkdcn.cli.common`. Every command turns user-fixable
problems (:class:`gkdcn.errors.GkdcnError`) into one line on stderr and exit status 2, and
shows library warnings (e.g. index alignment) as one line each.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gkdcn.cli import (
    ablation,
    compare,
    demo,
    evaluate,
    explain,
    grid,
    init,
    predict,
    prepare,
    report,
    synth,
    train,
)
from gkdcn.cli.common import MAX_THREADS, Commands

__all__ = ["app", "main"]

app = typer.Typer(
    cls=Commands,
    add_completion=False,
    no_args_is_help=True,
    help="gkdcn: geochemical anomaly patterns with geology-guided deformable convolutions.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            max=MAX_THREADS,
            help="CPU threads for PyTorch (default: all cores). On a busy shared machine, "
            "1 avoids threads waiting on each other.",
        ),
    ] = None,
) -> None:
    """gkdcn: geochemical anomaly patterns with geology-guided deformable convolutions."""
    from gkdcn.threads import reuse_freed_memory, set_threads

    if threads is not None:
        if threads < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--threads")
        set_threads(threads)
    reuse_freed_memory()


# Registered in this order, which is the order of `gkdcn --help`.
for _command in (
    synth.synth,
    prepare.prepare,
    train.train,
    predict.predict,
    evaluate.evaluate,
    compare.compare,
    ablation.ablation,
    explain.explain,
    report.report,
    demo.demo,
    grid.grid,
    init.init,
):
    app.command()(_command)


def main() -> None:  # pragma: no cover - console entry point
    """Run the ``gkdcn`` command."""
    app()
