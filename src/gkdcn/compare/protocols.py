"""The comparison's protocols: how each one cuts the study's windows into training folds.

A new protocol (fold scheme) is one entry in :data:`PROTOCOL_TITLES` and one branch of
:func:`protocol_folds`; jobs, held-out scoring, statistics, tables and figures follow from those.
"lodo" holds out one deposit per fold for up to 20 deposits and spatial groups of deposits
beyond (:func:`gkdcn.data.samples.deposit_folds`; :func:`fold_scheme` says which, and
``summary.json`` and the report state it). A protocol that scores the whole map against
deposits the models saw is *in-sample* (:data:`IN_SAMPLE`); every other protocol holds deposits
out and ranks them among background cells.
"""

from __future__ import annotations

import numpy as np

from gkdcn.data.samples import (
    SampleSet,
    Split,
    check_trains_on_deposits,
    deposit_folds,
    spatial_blocks,
    split_by_window,
)
from gkdcn.data.study import Study

PROTOCOL_TITLES = {
    "authors": "Authors' protocol: random split by window, whole map scored (in-sample)",
    "lodo": "Leave-one-deposit-out: each held-out deposit scored by a model that never saw it",
    "blocks": "Spatial-block cross-validation: held-out blocks scored by models that never saw them",
}
#: Protocols scored on the whole map against every deposit (the others hold deposits out).
IN_SAMPLE = frozenset({"authors"})


def is_heldout(protocol: str) -> bool:
    """Whether ``protocol`` scores held-out deposits (not the whole map in-sample)."""
    return protocol not in IN_SAMPLE


def protocol_folds(
    protocol: str, study: Study, samples: SampleSet, seed: int
) -> list[tuple[str | None, Split]]:
    """The training folds of ``protocol`` for one seed: ``(fold name or None, split)``.

    An in-sample protocol has one unnamed fold; a held-out one has a named fold per held-out
    group, trained on every remaining window (see :func:`fold_split`).
    """
    cfg = study.config.split
    if protocol == "authors":
        return [(None, split_by_window(samples, cfg.validation_fraction, seed))]
    if protocol == "lodo":
        folds, _ = _deposit_folds(study, samples)
    elif protocol == "blocks":
        folds = spatial_blocks(samples, study.sites, study.grid, cfg.block_size, cfg.folds, seed)
    else:
        raise ValueError(
            f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOL_TITLES)})"
        )
    for fold in folds:  # a held-out fold trains on the remaining deposits: there must be one
        check_trains_on_deposits(samples, fold, study.sites)
    return [(fold.name, fold_split(fold)) for fold in folds]


def _deposit_folds(study: Study, samples: SampleSet) -> tuple[list[Split], str]:
    # The same folds for every training seed (grouping seeded by the split config's seed).
    cfg = study.config.split
    return deposit_folds(
        samples, study.sites, study.grid, cfg.exclusion_radius, groups=None, seed=cfg.seed
    )


def fold_scheme(protocol: str, study: Study, samples: SampleSet) -> str:
    """One sentence saying how ``protocol`` cut the folds (which deposit scheme "lodo" used)."""
    if protocol == "lodo":
        return _deposit_folds(study, samples)[1]
    return PROTOCOL_TITLES[protocol]


def fold_split(fold: Split) -> Split:
    """A held-out fold trains on every remaining window for the configured epochs.

    No validation split: with a handful of sites left, a by-site validation set is too small to
    stop on its BCE reliably (it stopped folds after 2-4 epochs), and it would withhold training
    sites. The number of epochs is the fold's stopping rule, unless ``[train] select_epochs``
    chooses it on inner folds of the fold's training deposits (:mod:`gkdcn.compare.selection`).
    """
    return Split(
        name=fold.name,
        train=np.asarray(fold.train, dtype=np.int64),
        val=np.zeros(0, dtype=np.int64),
        description=f"{fold.description}; fixed epochs, no inner validation",
        held_out=np.asarray(fold.held_out, dtype=np.int64),
    )
