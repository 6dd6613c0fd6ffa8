"""Command-line interface: a thin Typer layer over the library API.

Every command turns user-fixable problems (:class:`gkdcn.errors.GkdcnError`) into one line on
stderr and exit status 2, and shows library warnings (e.g. index alignment) as one line each.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

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

from gkdcn.compare.variants import DEFAULT_VARIANTS as ABLATION_DEFAULTS
from gkdcn.compare.variants import VARIANTS as ABLATION_VARIANTS
from gkdcn.config import (
    MAX_BATCH,
    MAX_BOOTSTRAP,
    MAX_SEED,
    MAX_SEEDS,
    StudyConfig,
    load_config,
)
from gkdcn.errors import GkdcnError, InputError, Note, Terminated
from gkdcn.explain import defaults as explain_defaults
from gkdcn.models import registry

if TYPE_CHECKING:  # a study is loaded inside the commands that need one
    from gkdcn.data.study import Study


class _Commands(typer.core.TyperGroup):
    """The command group, whose usage errors are one ``error:`` line.

    A bad option value, an unknown option or a missing argument of any command is one line
    naming the option (exit 2), like every other user error, not Typer's usage box.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: ClickContext | None = None,
        **extra: Any,
    ) -> ClickContext:  # fmt: skip
        with _usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: ClickContext) -> Any:
        with _usage_errors():  # the command's own options are parsed here
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_errors() -> Any:
    try:
        yield
    except NoArgsIsHelpError:
        raise  # `gkdcn` alone shows the help
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "gkdcn"
        _say("error:", f"{exc.format_message()} (see {command} --help)")
        raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="gkdcn: geochemical anomaly patterns with geology-guided deformable convolutions.",
    pretty_exceptions_enable=False,
)
# Plain text everywhere: paths, element names and messages may hold brackets ("gkdcn[cluster]",
# "[train]"), which rich would take for markup and drop. Colour comes only from `_say`'s labels.
# Piped into a log or a file, rich would cut tables at 80 columns ("area_…"): there the lines
# are as long as their content instead, and a terminal keeps its own width.
_LOG_WIDTH = 10_000
console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(
    stderr=True, markup=False, highlight=False, width=None if sys.stderr.isatty() else _LOG_WIDTH
)
_LABEL_STYLES = {"error:": "bold red", "warning:": "yellow", "note:": "cyan", "done.": "bold green"}


def _say(label: str, text: str, *, err: bool = True) -> None:
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


def _friendly(func: F) -> F:
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
                _say("error:", str(exc))
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                err_console.print(f"interrupted; {kept}")
                raise typer.Exit(130) from None
            except Terminated as stop:  # SIGTERM while workers ran: they are stopped
                err_console.print(f"terminated; {kept}")
                raise typer.Exit(128 + stop.signum) from None
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                _say("error:", f"{where}{exc.strerror or exc}")
                raise typer.Exit(2) from None
            finally:
                for w in caught:
                    if issubclass(w.category, Note):
                        _say("note:", str(w.message))
                    elif issubclass(w.category, UserWarning):
                        _say("warning:", str(w.message))

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


def _workers(jobs: int | None) -> int:
    from gkdcn.runner import default_workers

    return default_workers() if jobs is None else jobs


def _names(option: str, text: str | None) -> list[str] | None:
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


def _validated(section: Any, updates: dict[str, Any], option: str) -> Any:
    """A config section with a command-line option's value, checked as the config key is."""
    from pydantic import ValidationError

    from gkdcn.errors import validation_message

    try:
        return type(section).model_validate({**section.model_dump(), **updates})
    except ValidationError as exc:
        raise GkdcnError(f"{option}: {validation_message(exc)}") from None


def _config(path: Path, data_dir: Path | None) -> StudyConfig:
    return load_config(path, data_dir=data_dir)


def _inputs(config_or_prepared: Path, data_dir: Path | None) -> list[Path]:
    """The paths a command reads from a config (its file and every path in it) or a folder."""
    if config_or_prepared.suffix.lower() == ".toml" and config_or_prepared.is_file():
        return [config_or_prepared, *_config(config_or_prepared, data_dir).input_paths()]
    return [config_or_prepared]


def _study(config_or_prepared: Path, data_dir: Path | None) -> Study:
    """A study from a config file, or from a folder written by ``gkdcn prepare``."""
    from gkdcn.data.study import load_prepared, load_study

    if config_or_prepared.is_dir() and (config_or_prepared / "metadata.json").exists():
        return load_prepared(config_or_prepared)
    return load_study(_config(config_or_prepared, data_dir))


@app.command()
@_friendly
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create for the synthetic district.")],
    seed: Seed = 0,
    height: Annotated[int, typer.Option(help="Rows of the grid.")] = 96,
    width: Annotated[int, typer.Option(help="Columns of the grid.")] = 128,
    layers: Annotated[int, typer.Option(help="Number of element layers.")] = 12,
    deposits: Annotated[int, typer.Option(help="Number of deposits.")] = 10,
    systems: Annotated[
        int | None,
        typer.Option(
            help="Fault-controlled anomaly systems (0: bodies scattered along the faults; "
            "default: 0 up to 12 deposits, else one per 10 deposits)."
        ),
    ] = None,
    undiscovered: Annotated[
        float | None,
        typer.Option(help="With systems: share of mineralised bodies without a known deposit."),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            max=MAX_SURVEY_SAMPLES,
            help="Also write samples.csv: a survey of this many point samples.",
        ),
    ] = 0,
    cell_size: Annotated[float, typer.Option(help="Cell size of the true layers (map units).")] = (
        1000.0
    ),
    barren: Annotated[
        int | None,
        typer.Option(
            min=0, max=100, help="Barren anomalies (default: 3, or 2 per anomaly system)."
        ),
    ] = None,
    signature_spread: Annotated[
        float,
        typer.Option(
            help="With systems: how much each element's anomaly contrast differs between "
            "systems (0-1; 0 = one signature)."
        ),
    ] = 0.0,
    survey_cell: Annotated[
        float | None,
        typer.Option(
            help="With --samples: grid the survey (IDW) onto cells of this size and write "
            "survey.toml, a study of the gridded survey instead of the true layers."
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Generate a synthetic district (GeoTIFFs, deposits, faults, study.toml)."""
    from gkdcn.data.synthetic import generate_district, spec_from_dict

    if samples and samples < 3:
        raise GkdcnError(f"--samples must be at least 3 (or 0 for none), not {samples}")
    if survey_cell is not None and not samples:
        raise GkdcnError("--survey-cell grids a survey: give --samples as well")
    if survey_cell is not None and not survey_cell > 0:
        raise GkdcnError(f"--survey-cell must be a positive cell size, not {survey_cell}")
    # Validated like a spec file, so a bad value is one line, not a traceback.
    spec = spec_from_dict(
        {
            "seed": seed,
            "height": height,
            "width": width,
            "n_layers": layers,
            "n_deposits": deposits,
            "n_systems": systems,
            "undiscovered": undiscovered,
            "cell_size": cell_size,
            "n_barren_anomalies": barren,
            "signature_spread": signature_spread,
        }
    )
    config_path = generate_district(out_dir, spec, overwrite=overwrite)
    console.print(f"wrote synthetic district to {out_dir} (study config: {config_path})")
    if survey_cell is not None:
        from gkdcn.data.survey import write_survey_study

        survey = write_survey_study(
            out_dir, spec, samples, survey_cell, log=lambda text: _say("note:", text)
        )
        console.print(f"wrote a survey of {samples} samples gridded onto {survey_cell:g} cells")
        console.print(f"study of the gridded survey: {survey}")
    elif samples:
        from gkdcn.data.survey import write_survey

        path = write_survey(out_dir / "samples.csv", spec, samples)
        console.print(f"wrote a survey of {samples} samples: {path}")


@app.command()
@_friendly
def prepare(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the prepared dataset (default: print only).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Read and align the inputs, place the sites, cut the samples; print a summary."""
    from gkdcn.console import format_summary
    from gkdcn.data.study import build_samples, check_window, load_study, save_prepared, summarize

    cfg = _config(config, data_dir)
    if out is not None:
        from gkdcn.io.atomic import check_writable

        check_writable(out, overwrite, inputs=[config, *cfg.input_paths()], folder=True)
    study = load_study(cfg)
    check_window(study, config)
    samples, splits = build_samples(study)
    console.print(format_summary(summarize(study, samples, splits)))
    if out is not None:
        save_prepared(study, out, overwrite=overwrite, inputs=[config])
        console.print(f"wrote prepared dataset to {out}")


@app.command()
@_friendly
def train(
    config: Annotated[Path, typer.Argument(help="Study config (TOML) or prepared folder.")],
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="cnn, dcn, gk-cnn or gk-dcn (baselines run inside compare)."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for model.pt, history.csv, training_curve.png.")
    ],
    data_dir: DataDir = None,
    seed: Annotated[
        int | None, typer.Option(min=0, max=MAX_SEED, help="Seed (default: the config's).")
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            max=MAX_SEEDS,
            help="Train this many seeds (seed, seed + 1, ...) into ONE model file whose members "
            "predict averages (a seed ensemble).",
        ),
    ] = 1,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    preset: Annotated[
        str | None, typer.Option(help="'authors' applies the authors' training settings.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Override the split: site, window (authors'), lodo, blocks.")
    ] = None,
    device: Device = "cpu",
    precision: Precision = None,
    overwrite: Overwrite = False,
) -> None:
    """Train one of the four models and write its model file, history and training curve.

    With ``--seeds N`` the N trainings go into one model file (members averaged by ``predict``);
    history.csv and training_curve.png are the first member's.
    """
    from dataclasses import replace

    from gkdcn.compare.plan import override_training
    from gkdcn.data.study import build_samples, check_window
    from gkdcn.io.atomic import check_writable
    from gkdcn.models.bundle import ModelBundle
    from gkdcn.train import train_study, training_paths, write_training_outputs

    if registry.is_baseline(model):
        raise GkdcnError(
            f"--model {model} is a baseline, not a network: baselines have no model file and "
            f"are fitted and scored inside a comparison (gkdcn compare CONFIG --models {model})"
        )
    if not registry.is_network(model):
        networks = ", ".join(registry.names("network"))
        raise GkdcnError(f"--model must be one of {networks}, not {model!r}")
    if seeds < 1:
        raise GkdcnError(f"--seeds must be at least 1, got {seeds}")
    inputs = _inputs(config, data_dir)
    for path in training_paths(out).values():
        check_writable(path, overwrite, inputs=inputs)
    study = _study(config, data_dir)
    updates: dict[str, Any] = {}
    if split is not None:
        updates["split"] = study.config.split.model_copy(update={"method": split})
    train_updates: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    if precision is not None:
        train_updates["precision"] = precision
    updates["train"] = override_training(
        study.config.train, train_updates, preset=preset, what="training option"
    )
    study.config = study.config.model_copy(update=updates)
    check_window(study, config)
    samples, splits = build_samples(study)
    if len(splits) > 1:
        _say(
            "note:",
            f"the {study.config.split.method} split has {len(splits)} folds; train "
            f"fits the first ({splits[0].name}); `gkdcn compare` runs every fold",
        )
    first_seed = study.config.train.seed if seed is None else seed
    with progress_bar() as progress:
        results = [
            train_study(
                study,
                model,
                samples=samples,
                split=splits[0],
                seed=first_seed + i,
                device=_device(device),
                progress=progress,
                label=f"{model} seed {first_seed + i}" if seeds > 1 else None,
            )
            for i in range(seeds)
        ]
    result = results[0]
    if seeds > 1:
        result = replace(result, bundle=ModelBundle.ensemble([r.bundle for r in results]))
        console.print(
            f"{seeds} members (seeds {first_seed}-{first_seed + seeds - 1}) in one model file; "
            "history and training curve of the first"
        )
    paths = write_training_outputs(result, out, overwrite=overwrite)
    last = result.history.iloc[result.best_epoch - 1] if result.best_epoch else None
    if last is not None and "val_auc" in result.history:
        console.print(
            f"best epoch {result.best_epoch}: validation loss {last['val_loss']:.3f}, "
            f"accuracy {last['val_accuracy']:.3f}, AUC {last.get('val_auc', float('nan')):.3f} "
            f"({splits[0].name} split)"
        )
    for kind, path in paths.items():
        console.print(f"wrote {kind}: {path}")


def _check_site_options(sites: Path, given: dict[str, object]) -> None:
    """Refuse evaluate's site options that the kind of ``sites`` would ignore.

    A study config says where its deposits are, a raster has no columns, points have no marker
    value.
    """
    suffix = sites.suffix.lower()
    applies: tuple[str, ...]
    if suffix == ".toml":
        kind, applies = "a study config (its [sites.deposits] says where they are)", ()
    elif suffix in (".tif", ".tiff"):
        kind, applies = "a deposit raster", ("--value",)
    else:
        kind, applies = "deposit points", ("--x", "--y", "--crs")
    ignored = [name for name, value in given.items() if value is not None and name not in applies]
    if ignored:
        raise InputError(sites, f"{', '.join(ignored)} does not apply to {kind}")


def _device(name: str) -> str:
    from gkdcn.predict import resolve_device

    return resolve_device(name).type


@app.command()
@_friendly
def predict(
    models: Annotated[
        list[Path],
        typer.Argument(metavar="MODEL...", help="Model file(s); several form an ensemble."),
    ],
    data: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG_OR_DATA",
            help="Study config (TOML), element folder or multi-band GeoTIFF.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output GeoTIFF.")],
    data_dir: DataDir = None,
    csv: Annotated[Path | None, typer.Option(help="Also write x, y, probability as CSV.")] = None,
    mc_dropout: Annotated[
        int, typer.Option(help="Monte-Carlo dropout passes (adds a std band).")
    ] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_BATCH, help="Windows per batch (default: the config's \\[predict])."
        ),
    ] = None,
    block_rows: Annotated[
        int | None,
        typer.Option(
            min=1, max=65_536, help="Rows per streamed block (default: the config's \\[predict])."
        ),
    ] = None,
    device: Device = "auto",
    cog: Annotated[bool, typer.Option(help="Write a Cloud-Optimized GeoTIFF.")] = False,
    overwrite: Overwrite = False,
    scheduler: SchedulerOption = None,
) -> None:
    """Map the anomaly probability of every valid cell onto the element grid (GeoTIFF)."""
    from gkdcn.io.atomic import check_writable
    from gkdcn.predict import MAX_MC_DROPOUT, check_output_names, predict_to_file

    if not 0 <= mc_dropout <= MAX_MC_DROPOUT:
        raise GkdcnError(f"--mc-dropout must be between 0 and {MAX_MC_DROPOUT}, not {mc_dropout}")
    check_output_names(out, csv)

    with contextlib.ExitStack() as stack:
        engine = None
        if scheduler is not None:
            from gkdcn.cluster import open_client, predict_map_on_cluster

            check_writable(out, overwrite)  # before a cluster is started or reached
            client = stack.enter_context(open_client(scheduler))
            engine = functools.partial(predict_map_on_cluster, client)
        progress = stack.enter_context(progress_bar())
        written = predict_to_file(
            models, data, out, csv_path=csv, data_dir=data_dir, mc_dropout=mc_dropout,
            batch_size=batch_size, block_rows=block_rows, device=_device(device),
            overwrite=overwrite, progress=progress, cog=cog, engine=engine,
        )  # fmt: skip
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"wrote {written[0].with_suffix('.qml')} (QGIS style)")


@app.command()
@_friendly
def evaluate(
    map_path: Annotated[Path, typer.Argument(metavar="MAP", help="Probability GeoTIFF.")],
    sites: Annotated[
        Path, typer.Argument(help="Study config (TOML), deposit points (CSV/vector) or raster.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, curves (CSV) and plots.")],
    data_dir: DataDir = None,
    x: Annotated[
        str | None, typer.Option(help="x column of a CSV or Excel table (any case; default x).")
    ] = None,
    y: Annotated[
        str | None, typer.Option(help="y column of a CSV or Excel table (any case; default y).")
    ] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of CSV coordinates.")] = None,
    value: Annotated[
        float | None, typer.Option(help="Marker value in a deposit raster (default 1).")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC CI.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Bootstrap seed.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Score a probability map against deposits: metrics, ROC/PR, success-rate, P-A, CIs."""
    from gkdcn.data.sites import deposit_cells
    from gkdcn.evaluate import check_evaluation_outputs, evaluate_map, write_evaluation
    from gkdcn.io.rasters import read_probability_map

    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise GkdcnError(
            f"--bootstrap must be between 0 (no CI) and {MAX_BOOTSTRAP}, not {bootstrap}"
        )
    _check_site_options(sites, {"--x": x, "--y": y, "--crs": crs, "--value": value})
    inputs = [map_path, *_inputs(sites, data_dir)]
    check_evaluation_outputs(out, overwrite, inputs=inputs)
    prob, valid, grid = read_probability_map(map_path)
    rows, cols, notes = deposit_cells(
        sites, grid, valid, data_dir=data_dir, x=x or "x", y=y or "y", crs=crs,
        value=1 if value is None else value,
    )  # fmt: skip
    for note in notes:
        _say("note:", note)
    ev = evaluate_map(prob, valid, rows, cols, n_boot=bootstrap, seed=seed)
    written = write_evaluation(ev, out, overwrite=overwrite, title=map_path.stem, inputs=inputs)
    m = ev.to_dict()
    low, high = m["auc_ci"]
    ci = "no CI" if low is None or high is None else f"95% CI {low:.3f}-{high:.3f}"
    console.print(
        f"AUC {m['auc']:.3f} ({ci}), "
        f"success-rate AUC {m['success_auc']:.3f}, F1 {m['f1']:.3f} at threshold {m['threshold']:.3f}; "
        f"{len(rows)} deposits, {int(valid.sum())} valid cells"
    )
    console.print(f"wrote {len(written)} files to {out}")


@app.command()
@_friendly
def compare(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    out: Annotated[Path, typer.Option(help="Run folder (resumable).")] = Path("runs/compare"),
    data_dir: DataDir = None,
    quick: Annotated[bool, typer.Option(help="Small version: 2 seeds, short training.")] = False,
    seeds: Annotated[int | None, typer.Option(max=MAX_SEEDS, help="Number of seeds.")] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of the networks cnn,dcn,gk-cnn,gk-dcn and the "
            "baselines knowledge,element,logistic,random-forest (default: all eight)."
        ),
    ] = None,
    protocols: Annotated[
        str | None, typer.Option(help="Comma-separated: authors, lodo, blocks.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.")] = None,
    jobs: Jobs = None,
    device: Device = "cpu",
    precision: Precision = None,
    overwrite: Overwrite = False,
    scheduler: SchedulerOption = None,
    stack_seeds: Annotated[
        bool,
        typer.Option(
            help="Train a network's seeds on one fold at once as one stacked model (the same "
            "results to rounding; see README, Benchmarks, for when it is faster)."
        ),
    ] = False,
) -> None:
    """Train CNN, DCN, GK-CNN and GK-DCN and fit four baselines over seeds, in-sample and held out."""
    from gkdcn.compare import make_plan, run_comparison
    from gkdcn.console import comparison_tables
    from gkdcn.data.study import load_study

    cfg = _config(config, data_dir)
    plan = make_plan(
        cfg, quick=quick, seeds=seeds, epochs=epochs, precision=precision,
        models=_names("--models", models), protocols=_names("--protocols", protocols),
    )  # fmt: skip
    study = load_study(cfg)
    if scheduler is not None and jobs is not None:
        # The cluster's workers decide how many trainings run at once.
        _say(
            "note:",
            f"--jobs {jobs} is not used with --scheduler: every worker of the "
            "cluster runs one training at a time",
        )
    with progress_bar() as progress:
        comparison = run_comparison(
            study, out, plan, overwrite=overwrite, progress=progress, device=_device(device),
            workers=_workers(jobs), inputs=[config], scheduler=scheduler,
            stack_seeds=stack_seeds,
        )  # fmt: skip
    # soft_wrap: wide tables stay one row per line in logs and narrow terminals
    for table in comparison_tables(comparison):
        console.print(table)
    console.print(f"finished in {comparison.seconds:.0f} s; results in {out}")


@app.command()
@_friendly
def ablation(
    config: Annotated[Path, typer.Argument(help="Study config (TOML).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder (resumable): the full recipe's comparison, the variants in "
            "OUT/ablation/<variant>/, the table in OUT/ablation/ablation.{csv,md,json}."
        ),
    ] = Path("runs/ablation"),
    data_dir: DataDir = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated levers to change, one run each (default: "
            + ", ".join(ABLATION_DEFAULTS)
            + "; also: "
            + ", ".join(v for v in ABLATION_VARIANTS if v not in ABLATION_DEFAULTS)
            + ")."
        ),
    ] = None,
    models: Annotated[
        str, typer.Option(help="Comma-separated networks every variant trains.")
    ] = "gk-dcn",
    reference_models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models the full recipe also runs: the other networks and "
            "the baselines, on the same folds (default: the config's \\[compare] models)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(max=MAX_SEEDS, help="Number of seeds.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.")] = None,
    protocol: Annotated[str, typer.Option(help="Held-out protocol: lodo or blocks.")] = "lodo",
    width: Annotated[
        int | None, typer.Option(help="Override the network width (on a CPU: 16).")
    ] = None,
    background: Annotated[
        int | None,
        typer.Option(help="Background cells each held-out deposit is ranked among (0: all)."),
    ] = None,
    knowledge_channel: Annotated[
        bool | None,
        typer.Option(
            "--knowledge-channel/--no-knowledge-channel",
            help="The full recipe with / without the knowledge weight as an input channel "
            "(default: the config's \\[knowledge] as_channel).",
        ),
    ] = None,
    jobs: Jobs = None,
    device: Device = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Held-out AUC of the training recipe with one lever changed at a time, paired over seeds."""
    from gkdcn.compare.ablation import plan_ablation, run_ablation, to_markdown
    from gkdcn.compare.plan import override_training
    from gkdcn.data.study import load_study
    from gkdcn.report.ablation import clear_levers

    cfg = _config(config, data_dir)
    if width is not None:
        cfg = cfg.model_copy(
            update={"train": override_training(cfg.train, {"width": width}, what="--width")}
        )
    if background is not None:
        if background < 0:
            raise GkdcnError(f"--background must be 0 (all cells) or more, not {background}")
        compare_cfg = _validated(cfg.compare, {"heldout_background": background}, "--background")
        cfg = cfg.model_copy(update={"compare": compare_cfg})
    if knowledge_channel is not None:
        knowledge = cfg.knowledge.model_copy(update={"as_channel": knowledge_channel})
        cfg = cfg.model_copy(update={"knowledge": knowledge})
    runs = plan_ablation(
        cfg, out, seeds=seeds, epochs=epochs, protocol=protocol,
        variants=_names("--variants", variants), models=_names("--models", models) or [],
        reference_models=_names("--reference-models", reference_models),
    )  # fmt: skip
    study = load_study(cfg)
    say = lambda text: console.print(text, soft_wrap=True)  # noqa: E731
    with progress_bar() as progress:
        table = run_ablation(
            study, out, runs, overwrite=overwrite, workers=_workers(jobs),
            device=_device(device), progress=progress, inputs=[config], log=say,
        )  # fmt: skip
    say(to_markdown(table))
    say(clear_levers(table.to_dict("records")))
    say(f"results in {out}; gkdcn report {out} shows them")


@app.command()
@_friendly
def explain(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    config: Annotated[Path, typer.Argument(help="Study config (TOML) or prepared folder.")],
    out: Annotated[Path, typer.Option(help="Folder for figures, maps and index.json.")],
    data_dir: DataDir = None,
    layer: Annotated[str | None, typer.Option(help="Layer for Grad-CAM (default conv2).")] = None,
    element: Annotated[
        str | None,
        typer.Option(
            help="Element shown beside the CAM (default: the one contributing most at the deposits)."
        ),
    ] = None,
    sites: Annotated[str, typer.Option(help="deposits or all.")] = explain_defaults.SITES,
    top_k: Annotated[
        int, typer.Option(min=1, max=1000, help="Attribution maps for the top-k elements.")
    ] = explain_defaults.TOP_K,
    maps: Annotated[bool, typer.Option(help="Write full-map GeoTIFFs.")] = True,
    map_ig_steps: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="Integrated-gradient steps per cell for the attribution maps."
        ),
    ] = explain_defaults.MAP_IG_STEPS,
    overwrite: Overwrite = False,
) -> None:
    """Grad-CAM, deformable sampling and per-element attribution for a trained model."""
    from gkdcn.explain.run import SiteChoice, explain_model
    from gkdcn.io.atomic import check_writable
    from gkdcn.models.bundle import ModelBundle

    check_writable(out, overwrite, inputs=[model, *_inputs(config, data_dir)], folder=True)
    bundle = ModelBundle.load(model)
    if len(bundle.members) > 1:
        _say(
            "note:",
            f"{model} holds {len(bundle.members)} members (a seed ensemble); "
            "explain shows the first",
        )
    study = _study(config, data_dir)
    from gkdcn.predict import check_model_grid

    check_model_grid([bundle], study.grid, config)
    # A plain str on the command line (so a wrong one gets explain's one-line error, not
    # Typer's usage box); explain_model refuses anything but "deposits" and "all".
    choice = cast("SiteChoice", sites)
    with progress_bar() as progress:
        index = explain_model(
            bundle, study, out, sites=choice, layer=layer, element=element, top_k=top_k,
            map_outputs=maps, map_ig_steps=map_ig_steps, overwrite=overwrite, progress=progress,
            model_file=model,
        )  # fmt: skip
    console.print(f"wrote {len(index.get('files', index))} outputs to {out} (see index.json)")


@app.command()
@_friendly
def report(
    run_dir: Annotated[Path, typer.Argument(help="A comparison run folder.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default RUN_DIR/report.html).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Build a self-contained HTML report from a comparison run."""
    from gkdcn.report import build_report

    path = build_report(run_dir, out, overwrite=overwrite)
    console.print(f"wrote report: {path}")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path(
        "gkdcn-demo"
    ),
    overwrite: Overwrite = False,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the synthetic district.")
    ] = 0,
    jobs: Jobs = None,
) -> None:
    """Run the whole pipeline on a generated district and write DIR/report.html."""
    from gkdcn.demo import run_demo

    with progress_bar() as progress:
        report_path = run_demo(
            out, overwrite=overwrite, seed=seed, workers=_workers(jobs), progress=progress,
            log=lambda text: console.print(text, soft_wrap=True),
        )  # fmt: skip
    console.print()
    _say("done.", f"Open the report: {report_path.resolve()}", err=False)


@app.command()
@_friendly
def grid(
    samples: Annotated[
        Path, typer.Argument(help="Point samples: CSV with coordinate columns, or a vector file.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for <element>.tif: a study's elements folder.")],
    x: Annotated[str, typer.Option(help="x column of a CSV or Excel table (any case).")] = "x",
    y: Annotated[str, typer.Option(help="y column of a CSV or Excel table (any case).")] = "y",
    crs: Annotated[
        str | None, typer.Option(help="CRS of CSV coordinates, e.g. EPSG:32645.")
    ] = None,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns to grid (default: all numeric).")
    ] = None,
    cell: Annotated[
        float | None, typer.Option(help="Cell size in map units (default: from the spacing).")
    ] = None,
    like: Annotated[
        Path | None, typer.Option(help="Grid onto the grid of this raster instead.")
    ] = None,
    to_crs: Annotated[
        str | None,
        typer.Option(help="Projected CRS to grid in (default for lon/lat: the UTM zone)."),
    ] = None,
    method: Annotated[str, typer.Option(help="idw or verde-spline.")] = "idw",
    max_distance: Annotated[
        float | None,
        typer.Option(help="Cells farther than this from every sample are nodata (map units)."),
    ] = None,
    nodata: Annotated[
        list[float] | None, typer.Option(help="Missing-value code in the samples (repeatable).")
    ] = None,
    below_detection: Annotated[
        str,
        typer.Option(
            help="Values below detection (-d, <d, BDL, n.d., zeros, below a detection-limit "
            "column): half (d/2), nodata, or keep (negative numbers and zeros kept as they are)."
        ),
    ] = "half",
    survey_column: Annotated[
        str | None,
        typer.Option(help="Column of survey codes (warns when survey medians differ > 10x)."),
    ] = None,
    level: Annotated[
        str,
        typer.Option(
            help="Levelling by survey: none, quantile (each survey matched to the pooled "
            "distribution) or robust-z (each survey's log median and MAD set to the pooled ones)."
        ),
    ] = "none",
    overwrite: Overwrite = False,
) -> None:
    """Grid point geochemistry (CSV, Excel or a vector file) into one GeoTIFF per element.

    With a cross-validated error; every rule applied is stated.
    """
    from gkdcn.data.gridding import (
        CV_FILE,
        BelowDetection,
        GriddingOptions,
        GridMethod,
        LevelMethod,
        format_cross_validation,
        grid_file,
        parse_columns,
    )

    options = GriddingOptions(
        x=x, y=y, crs=crs, columns=parse_columns(columns), cell=cell, like=like, to_crs=to_crs,
        # Plain str options, so a wrong value gets grid_file's one-line error (it checks both).
        method=cast("GridMethod", method),
        max_distance=max_distance, nodata=tuple(nodata or ()),
        below_detection=cast("BelowDetection", below_detection),
        survey_column=survey_column, level=cast("LevelMethod", level),
    )  # fmt: skip
    say = lambda text: console.print(f"note: {text}", soft_wrap=True)  # noqa: E731
    warn = lambda text: _say("warning:", text)  # noqa: E731
    result = grid_file(samples, out, options, overwrite=overwrite, log=say, warn=warn)
    # soft_wrap: the table's lines stay whole in a log, whatever the terminal width.
    console.print(format_cross_validation(result.cross_validation), soft_wrap=True)
    console.print(
        f"wrote {len(result.layers)} element grids ({result.grid.height} x {result.grid.width}) "
        f'and {CV_FILE} to {out}; use it as [elements] path = "{out}", or run '
        f"gkdcn init {out.parent} with the deposits and faults there",
        soft_wrap=True,
    )


@app.command()
@_friendly
def init(
    data_dir: Annotated[Path, typer.Argument(help="Folder with element grids, deposits, faults.")],
    out: Annotated[
        Path | None, typer.Option(help="Config to write (default DATA_DIR/study.toml).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a commented study.toml from the files found in a folder (every guess stated)."""
    from gkdcn.data.discover import discover, write_study

    found = discover(data_dir)
    for key, lines in found.comments.items():
        for line in lines:
            console.print(f"{key}: {line}", soft_wrap=True)
    for note in found.notes:
        console.print(f"note: {note}", soft_wrap=True)
    path = write_study(found, out, overwrite=overwrite)
    console.print(f"wrote {path}; check it, then run: gkdcn prepare {path}", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
