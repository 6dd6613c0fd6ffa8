"""Every model kind, declared once: its name, label, family, flags, how it fits, its report text.

This module is plain data and imports nothing of gkdcn (nor torch, nor scikit-learn), so every
floor may ask it, the config included: it sits on floor 0 although it lives in ``models/``, as
``compare/layout.py`` does in ``compare/``. What fits a kind is named by a dotted path
(``"module:Class"``) into :mod:`gkdcn.models`, loaded only by the code that fits
(:func:`gkdcn.models.nets.build_network` for networks,
:func:`gkdcn.models.baselines.baseline_estimator` for baselines) through :func:`load_class`.

Every question about a kind is a look-up here (:func:`model_kind`, :func:`names`,
:func:`is_baseline`, :func:`label`); no other module compares a kind's name to a string
(``tests/test_architecture.py`` checks it). The table is read at each call, so a test may add an
entry for the length of a test by replacing :data:`MODELS` (``monkeypatch.setattr``).

Adding a model is one file and one entry: see ``docs/ARCHITECTURE.md`` ("A new model kind").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

Family = Literal["network", "baseline"]


@dataclass(frozen=True)
class ModelKind:
    """One model kind of ``gkdcn train`` / ``gkdcn compare``.

    Attributes
    ----------
    name
        What the config, ``--models`` / ``-m`` and the run folder call it.
    label
        Display name in tables, figures and the report.
    family
        ``"network"``: trained by :mod:`gkdcn.training`, saved as a model file, predicted by
        :mod:`gkdcn.predict`; ``"baseline"``: a scikit-learn style estimator on per-cell
        features, fitted and scored only inside a comparison.
    fits
        ``"module:Class"`` of what fits it: an :class:`~gkdcn.models.nets.AnomalyNet` subclass
        (networks) or a :class:`~gkdcn.models.baselines.CellBaseline` subclass (baselines).
    deformable
        A network whose inner 3x3 layers are modulated deformable convolutions.
    knowledge_guided
        A network trained with the geological-knowledge loss term (:class:`~gkdcn.models.losses.GKLoss`).
    needs_knowledge
        Cannot be fitted without a knowledge weight (``[knowledge] faults`` or ``weights``).
    background
        A baseline that also learns from the training recipe's unlabelled background cells.
    text
        What it is, in one phrase of the report (baselines).
    """

    name: str
    label: str
    family: Family
    fits: str
    deformable: bool = False
    knowledge_guided: bool = False
    needs_knowledge: bool = False
    background: bool = False
    text: str = ""


_NETWORK = "gkdcn.models.nets:AnomalyNet"

#: The model kinds, in table order: the four networks, then the baselines.
MODELS: tuple[ModelKind, ...] = (
    ModelKind("cnn", "CNN", "network", _NETWORK),
    ModelKind("dcn", "DCN", "network", _NETWORK, deformable=True),
    ModelKind("gk-cnn", "GK-CNN", "network", _NETWORK, knowledge_guided=True, needs_knowledge=True),
    ModelKind(
        "gk-dcn",
        "GK-DCN",
        "network",
        _NETWORK,
        deformable=True,
        knowledge_guided=True,
        needs_knowledge=True,
    ),
    ModelKind(
        "knowledge",
        "knowledge",
        "baseline",
        "gkdcn.models.baselines:KnowledgeBaseline",
        needs_knowledge=True,
        text="the knowledge weight itself as the map (no training)",
    ),
    ModelKind(
        "element",
        "element",
        "baseline",
        "gkdcn.models.baselines:ElementBaseline",
        text="the single transformed element layer, either sign, that ranks the fold's "
        "training deposits best (chosen inside each fold)",
    ),
    ModelKind(
        "logistic",
        "logistic",
        "baseline",
        "gkdcn.models.baselines:LogisticBaseline",
        background=True,
        text="logistic regression on each layer's cell value and window mean plus the "
        "knowledge weight",
    ),
    ModelKind(
        "random-forest",
        "random-forest",
        "baseline",
        "gkdcn.models.baselines:RandomForestBaseline",
        background=True,
        text="a random forest (300 trees, seeded) on the same features",
    ),
)


def model_kinds(family: Family | None = None) -> tuple[ModelKind, ...]:
    """The declared kinds (of one ``family`` if given), in table order."""
    return tuple(kind for kind in MODELS if family is None or kind.family == family)


def names(family: Family | None = None) -> tuple[str, ...]:
    """The names of the declared kinds (of one ``family`` if given), in table order."""
    return tuple(kind.name for kind in model_kinds(family))


def find(name: str) -> ModelKind | None:
    """The kind called ``name``, or None when there is none."""
    for kind in MODELS:
        if kind.name == name:
            return kind
    return None


def model_kind(name: str) -> ModelKind:
    """The kind called ``name``.

    Raises
    ------
    ValueError
        When no kind has that name; the message lists the names.
    """
    kind = find(name)
    if kind is None:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(names())})")
    return kind


def is_network(name: str) -> bool:
    """Whether ``name`` is a declared network."""
    kind = find(name)
    return kind is not None and kind.family == "network"


def is_baseline(name: str) -> bool:
    """Whether ``name`` is a declared baseline (not a network)."""
    kind = find(name)
    return kind is not None and kind.family == "baseline"


def label(name: str) -> str:
    """Display name of ``name`` (the name itself for an undeclared one)."""
    kind = find(name)
    return name if kind is None else kind.label


def load_class(kind: ModelKind) -> type:
    """The class ``kind.fits`` names (``"package.module:Class"``), imported now."""
    module, _, attribute = kind.fits.partition(":")
    if not attribute:
        raise ValueError(f"model {kind.name!r}: fits must be 'module:Class', not {kind.fits!r}")
    value = getattr(importlib.import_module(module), attribute)
    if not isinstance(value, type):
        raise TypeError(f"model {kind.name!r}: {kind.fits} is not a class")
    return value
