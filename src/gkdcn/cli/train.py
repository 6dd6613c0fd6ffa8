"""gkdcn train: train one network (or a seed ensemble) into a model file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gkdcn.cli.common import (
    DataDir,
    Device,
    Overwrite,
    Precision,
    console,
    device_type,
    friendly,
    input_paths,
    progress_bar,
    read_study,
    say,
)
from gkdcn.config import MAX_SEED, MAX_SEEDS
from gkdcn.errors import GkdcnError
from gkdcn.models import registry


@friendly
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
    from gkdcn.compare.plan import with_training_options
    from gkdcn.data.study import build_samples, check_window
    from gkdcn.io.atomic import check_writable
    from gkdcn.train import train_and_write, training_paths

    _check_network(model)
    if seeds < 1:
        raise GkdcnError(f"--seeds must be at least 1, got {seeds}")
    inputs = input_paths(config, data_dir)
    for path in training_paths(out).values():
        check_writable(path, overwrite, inputs=inputs)
    study = read_study(config, data_dir)
    study.config = with_training_options(
        study.config, split=split, epochs=epochs, precision=precision, preset=preset
    )
    check_window(study, config)
    samples, splits = build_samples(study)
    if len(splits) > 1:
        say(
            "note:",
            f"the {study.config.split.method} split has {len(splits)} folds; train "
            f"fits the first ({splits[0].name}); `gkdcn compare` runs every fold",
        )
    with progress_bar() as progress:
        result, paths = train_and_write(
            study, model, out, samples=samples, split=splits[0],
            seed=study.config.train.seed if seed is None else seed, seeds=seeds,
            device=device_type(device), overwrite=overwrite, progress=progress, log=console.print,
        )  # fmt: skip
    last = result.history.iloc[result.best_epoch - 1] if result.best_epoch else None
    if last is not None and "val_auc" in result.history:
        console.print(
            f"best epoch {result.best_epoch}: validation loss {last['val_loss']:.3f}, "
            f"accuracy {last['val_accuracy']:.3f}, AUC {last.get('val_auc', float('nan')):.3f} "
            f"({splits[0].name} split)"
        )
    for kind, path in paths.items():
        console.print(f"wrote {kind}: {path}")


def _check_network(model: str) -> None:
    """Refuse a ``--model`` that is no network of the registry (a baseline has no model file)."""
    if registry.is_baseline(model):
        raise GkdcnError(
            f"--model {model} is a baseline, not a network: baselines have no model file and "
            f"are fitted and scored inside a comparison (gkdcn compare CONFIG --models {model})"
        )
    if not registry.is_network(model):
        networks = ", ".join(registry.names("network"))
        raise GkdcnError(f"--model must be one of {networks}, not {model!r}")
