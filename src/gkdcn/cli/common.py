"""What every command shares: option types, the consoles, messages, errors, progress, inputs.

Every command is wrapped by :func:`friendly`, which turns user-fixable problems
(:class:`gkdcn.errors.GkdcnError`) into one line on stderr and exit status 2 and shows library
warnings (e.g. index alignment) as one line each; :class:`Commands` does the same for usage
errors (a bad option value, an unknown option, a missing argument).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from typer._click import Context as ClickContext  # Typer's own copy of click parses options
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from gkdcn.config import MAX_SEED, StudyConfig, load_config
from gkdcn.errors import GkdcnError, Note, Terminated

if TYPE_CHECKING:  # a study is loaded inside the commands that need one
    from gkdcn.data.study import Study


class Commands(typer.core.TyperGroup):
    """The command group, whose usage errors are one ``error:`` line.

    A bad option value, an unknown option or a missing argument of any command is one line
    naming the option (exit 2), like every other user error, not Typer's usage box.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: ClickContext | None = None,
        **extra: Any,
    ) -> ClickContext:  # fmt: skip
        """Parse the group's own options (``--threads``) and pick the command."""
        with usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: ClickContext) -> Any:
        """Run the command, parsing its own options."""
        with usage_errors():  # the command's own options are parsed here
            return super().invoke(ctx)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn a usage error raised inside into one ``error:`` line and exit status 2."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # `gkdcn` alone shows the help
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "gkdcn"
        say("error:", f"{exc.format_message()} (see {command} --help)")
        raise typer.Exit(2) from None


# Plain text everywhere: paths, element names and messages may hold brackets ("gkdcn[cluster]",
# "[train]"), which rich would take for markup and drop. Colour comes only from `say`'s labels.
# Piped into a log or a file, rich would cut tables at 80 columns ("area_…"): there the lines
# are as long as their content instead, and a terminal keeps its own width.
_LOG_WIDTH = 10_000
console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(
    stderr=True, markup=False, highlight=False, width=None if sys.stderr.isatty() else _LOG_WIDTH
)
_LABEL_STYLES = {"error:": "bold red", "warning:": "yellow", "note:": "cyan", "done.": "bold green"}


def say(label: str, text: str, *, err: bool = True) -> None:
    """Print one labelled message (``error:``, ``warning:``, ``note:``, ``done.``), one line."""
    line = Text(label, style=_LABEL_STYLES[label])
    line.append(f" {text}")
    (err_console if err else console).print(line, soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder that relative paths in the config resolve against."),
]
# Bounds of the options that are no config key (those are bounded in gkdcn.config): checked by
# Typer before any work, a value outside is one ``error:`` line naming the option.
MAX_THREADS = 1024
MAX_JOBS = 256
MAX_SURVEY_SAMPLES = 1_000_000
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
Precision = Annotated[
    str | None,
    typer.Option(
        help="Training arithmetic: float32, bfloat16 (mixed precision) or auto (bfloat16 "
        "where it is faster: CPUs with AMX, AMD CPUs with AVX512-BF16, CUDA compute "
        "capability 8+); default: the config's \\[train] precision."
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        min=1,
        max=MAX_JOBS,
        help="Trainings run at once, each on one CPU thread (default: the cores, at most 4). "
        "Results do not depend on it.",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Run on a Dask cluster: tcp://HOST:PORT (a running `dask scheduler`) or local:N "
        '(N worker processes here); needs pip install "gkdcn\\[cluster]". Same results.',
    ),
]


def friendly(func: F) -> F:
    """Print GkdcnError as one line (exit 2) and warnings as one line each.

    GDAL's own error lines are silenced (rasterio turns them into exceptions that name the file),
    so the one ``error:`` line is all a user sees.
    """
    # What a stop (Ctrl-C, or SIGTERM while workers run) leaves behind.
    kept = (
        "finished jobs are kept and the comparison resumes when run again"
        if func.__name__ in ("compare", "ablation")
        else "no partial output was kept"
    )

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gkdcn.io.rasters import quiet_gdal

        with warnings.catch_warnings(record=True) as caught, quiet_gdal():
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:
                return func(*args, **kwargs)
            except GkdcnError as exc:
                say("error:", str(exc))
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                err_console.print(f"interrupted; {kept}")
                raise typer.Exit(130) from None
            except Terminated as stop:  # SIGTERM while workers ran: they are stopped
                err_console.print(f"terminated; {kept}")
                raise typer.Exit(128 + stop.signum) from None
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                say("error:", f"{where}{exc.strerror or exc}")
                raise typer.Exit(2) from None
            finally:
                for w in caught:
                    if issubclass(w.category, Note):
                        say("note:", str(w.message))
                    elif issubclass(w.category, UserWarning):
                        say("warning:", str(w.message))

    return wrapper  # type: ignore[return-value]


def progress_bar() -> Progress:
    """The progress display used by every long command."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def workers(jobs: int | None) -> int:
    """The trainings run at once: ``--jobs``, or the runner's default."""
    from gkdcn.runner import default_workers

    return default_workers() if jobs is None else jobs


def names(option: str, text: str | None) -> list[str] | None:
    """A comma-separated option as its names (None when not given).

    Given but naming nothing (``--models ""``, ``--variants ","``) is an error, never the
    defaults.
    """
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise GkdcnError(f"{option} names nothing ({text!r}); leave it out for the defaults")
    return names


def read_config(path: Path, data_dir: Path | None) -> StudyConfig:
    """The study config at ``path``, relative paths resolved against ``data_dir``."""
    return load_config(path, data_dir=data_dir)


def input_paths(config_or_prepared: Path, data_dir: Path | None) -> list[Path]:
    """The paths a command reads from a config (its file and every path in it) or a folder."""
    if config_or_prepared.suffix.lower() == ".toml" and config_or_prepared.is_file():
        return [config_or_prepared, *read_config(config_or_prepared, data_dir).input_paths()]
    return [config_or_prepared]


def read_study(config_or_prepared: Path, data_dir: Path | None) -> Study:
    """A study from a config file, or from a folder written by ``gkdcn prepare``."""
    from gkdcn.data.study import load_prepared, load_study

    if config_or_prepared.is_dir() and (config_or_prepared / "metadata.json").exists():
        return load_prepared(config_or_prepared)
    return load_study(read_config(config_or_prepared, data_dir))


def device_type(name: str) -> str:
    """The device a ``--device`` name resolves to (``auto``: the best one here)."""
    from gkdcn.predict import resolve_device

    return resolve_device(name).type
