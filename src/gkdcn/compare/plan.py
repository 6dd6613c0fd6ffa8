"""What a comparison run trains: the :class:`Plan` and its overrides (``--quick``, ``--epochs``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from gkdcn.compare.protocols import PROTOCOL_TITLES
from gkdcn.config import AUTHORS_TRAINING, StudyConfig, TrainConfig
from gkdcn.errors import GkdcnError, validation_message
from gkdcn.models import registry
from gkdcn.runtime import resolve_precision

# --quick: 2 seeds, at most this many epochs, and held-out deposits ranked among at most this
# many background cells: 2 min 55 s on Tianshan with 2 cores (the full run: 20 min).
QUICK_EPOCHS = 6
QUICK_BACKGROUND = 1000


@dataclass(frozen=True)
class Plan:
    """What a comparison run trains."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    protocols: tuple[str, ...]
    train: TrainConfig
    bootstrap: int
    background_sample: (
        int | None
    )  # held-out protocols: background cells ranked against (None = all)
    quick: bool

    @property
    def background_seed(self) -> int:
        """Seed of the one draw of held-out background cells every seed's jobs rank against
        (the plan's first seed), so seeds differ only by training randomness."""
        return self.seeds[0]

    def on_device(self, device: str) -> Plan:
        """This plan with the training precision resolved for ``device`` (``"auto"`` becomes
        what runs there), so the fingerprint tells runs of different arithmetic apart and every
        worker, a cluster's included, trains in the same one."""
        precision = resolve_precision(self.train.precision, device)
        if precision == self.train.precision:
            return self
        return replace(self, train=self.train.model_copy(update={"precision": precision}))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``run.json``, ``summary.json``, the fingerprint)."""
        return {
            # Runs that drew the held-out background once per seed lack this key, so their
            # fingerprint differs and they are never resumed into a run of this kind.
            "heldout_background_seed": self.background_seed,
            "models": list(self.models),
            "seeds": list(self.seeds),
            "protocols": list(self.protocols),
            "train": self.train.model_dump(mode="json"),
            "bootstrap": self.bootstrap,
            "background_sample": self.background_sample,
            "quick": self.quick,
        }


# Settings a training preset sets (optimiser and the recipe); choosing a preset on the command
# line resets them to it.
PRESET_KEYS = tuple(AUTHORS_TRAINING)


def override_training(
    train: TrainConfig,
    updates: dict[str, Any],
    *,
    preset: str | None = None,
    what: str = "training override",
) -> TrainConfig:
    """``train`` with command-line ``updates`` (and optionally a ``preset``) applied, validated.

    ``preset`` replaces the settings a preset controls (:data:`PRESET_KEYS`) before ``updates``
    apply, so ``--preset authors --epochs 5`` is the authors' settings with 5 epochs. Raises
    :class:`GkdcnError` naming the first invalid value (``what`` says which option it was).
    """
    if not updates and preset is None:
        return train
    raw = train.model_dump()
    if preset is not None:
        raw["preset"] = preset
        for key in PRESET_KEYS:
            raw.pop(key, None)
    raw.update(updates)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise GkdcnError(f"invalid {what}: {validation_message(exc)}") from None


def with_training_options(
    config: StudyConfig,
    *,
    split: str | None = None,
    epochs: int | None = None,
    precision: str | None = None,
    preset: str | None = None,
) -> StudyConfig:
    """``config`` with ``gkdcn train``'s options applied: the split method and the training.

    ``epochs``, ``precision`` and ``preset`` change ``[train]`` as :func:`override_training`
    does (checked, a bad value a :class:`GkdcnError`); ``split`` replaces ``[split] method``.
    Options left ``None`` keep the config's values.
    """
    updates: dict[str, Any] = {}
    if split is not None:
        updates["split"] = config.split.model_copy(update={"method": split})
    train_updates: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    if precision is not None:
        train_updates["precision"] = precision
    updates["train"] = override_training(
        config.train, train_updates, preset=preset, what="training option"
    )
    return config.model_copy(update=updates)


def make_plan(
    config: StudyConfig,
    *,
    quick: bool = False,
    seeds: int | None = None,
    models: list[str] | None = None,
    protocols: list[str] | None = None,
    epochs: int | None = None,
    precision: str | None = None,
) -> Plan:
    """The run plan from the config, with ``--quick`` and command-line overrides applied
    (``precision`` stays as given; :meth:`Plan.on_device` resolves ``"auto"``)."""
    cmp = config.compare
    n_seeds = seeds if seeds is not None else (2 if quick else cmp.seeds)
    if n_seeds < 1:
        raise GkdcnError(f"--seeds must be at least 1, got {n_seeds}")
    train = config.train
    updates: dict[str, Any] = {}
    if quick:
        updates.update(
            epochs=min(train.epochs, QUICK_EPOCHS), patience=2 if train.patience else None
        )
    if epochs is not None:
        updates["epochs"] = epochs
    if precision is not None:
        updates["precision"] = precision
    if updates:
        # The values are resolved now: the run records them under the plain label.
        train = override_training(train, {**updates, "preset": "default"})
    chosen_models = tuple(dict.fromkeys(m.strip() for m in (models or cmp.models)))
    for m in chosen_models:
        if registry.find(m) is None:
            raise GkdcnError(f"unknown model {m!r} (choose from {', '.join(registry.names())})")
    chosen_protocols = tuple(dict.fromkeys(p.strip() for p in (protocols or cmp.protocols)))
    for p in chosen_protocols:
        if p not in PROTOCOL_TITLES:
            raise GkdcnError(f"unknown protocol {p!r} (choose from {', '.join(PROTOCOL_TITLES)})")
    return Plan(
        models=chosen_models,
        seeds=tuple(range(n_seeds)),
        protocols=chosen_protocols,
        train=train,
        bootstrap=200 if quick else cmp.bootstrap,
        background_sample=(
            min(cmp.heldout_background, QUICK_BACKGROUND) if quick else cmp.heldout_background
        )
        or None,
        quick=quick,
    )
