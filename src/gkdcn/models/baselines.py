"""Baselines that a network must beat to be worth its training: what a geologist already has.

Four of them, named as in ``gkdcn compare --models``:

``knowledge``
    The knowledge weight itself (fault proximity in [0, 1]) as the map; no training.
``element``
    The single transformed layer (not the knowledge channel), either sign, whose cell value ranks the fold's *training*
    deposits best against the fold's training negatives (AUC over the training window centres);
    chosen inside each fold, so the held-out deposit never takes part in the choice.
``logistic``
    Logistic regression (scikit-learn, L2, standardised features) on per-cell features.
``random-forest``
    A random forest (scikit-learn, 300 trees, seeded) on the same features.

The per-cell features are those of the stack the networks see, transformed with the transform
fitted on the fold's training windows only: each layer's cell value, its mean over the
``window x window`` neighbourhood (the network's receptive field, padded as the windows are),
and the knowledge weight. They are computed for every cell at once with a box filter, once per
fold, and the models are trained on the centres of the fold's training windows with their
labels, exactly the samples the networks train on.

**Background.** With the training recipe's background on (``background_ratio > 0``), the fitted
baselines (``logistic``, ``random-forest``) also see the background the networks learn from: cells drawn once per fold (seeded)
from the very :class:`~gkdcn.data.background.BackgroundPool` the fold's networks draw from
(valid area, away from training deposits, never within the exclusion radius of a held-out
deposit, never a cell held-out deposits are ranked against). A network draws
``background_ratio x training windows`` per epoch, every epoch anew; a baseline is fitted once, on
one draw of :data:`BACKGROUND_EPOCHS` epochs' worth (one: exactly what a network sees per epoch;
ten epochs' worth raised the random forest's held-out AUC on a 60-deposit synthetic district
from 0.908 to 0.919 and logistic not at all, at twice the comparison's time), with the same
total weight a network gives it: the background together weighs ``background_weight`` times the
labelled windows, as in the network loss ``BCE(labelled) + background_weight * risk(background)``.
The background is unlabelled (it may hold undiscovered deposits) and enters as the recipe's
``background_loss`` says: ``bce`` as negatives; ``soft`` and ``nnpu`` as soft labels, each cell
once as a positive with weight ``class_prior`` and once as a negative with ``1 - class_prior``
(the weighted form of positive-unlabelled learning, Elkan & Noto 2008, with a constant
probability; for logistic regression this is exactly the soft-label cross-entropy; nnPU's
negative correction has no non-negative sample-weight form, so both PU settings use it).
``element`` chooses its layer on the fold's training deposits against its training
non-deposits, not by ranking them among background cells: with the background in the choice,
the chosen layer would change with each background draw (docs/results.md has the comparison).

Scores are in [0, 1] and increase with prospectivity: probabilities for the two fitted models,
the weight for ``knowledge``, and a logistic squashing of the signed, standardised layer for
``element`` (a monotone map, so ranks and AUC are those of the layer itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import numpy as np
from scipy.ndimage import uniform_filter
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gkdcn.data.background import BackgroundPool
from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError
from gkdcn.models import registry

BASELINES = registry.names("baseline")  # the declared baselines, in table order
RANDOM_FOREST_TREES = 300
#: A fitted baseline's one background draw holds this many network epochs' worth of cells.
BACKGROUND_EPOCHS = 1
# Box-filter edge modes that pad like the network windows (gkdcn.data.samples.padded_index).
_FILTER_MODE: dict[str, Literal["constant", "mirror"]] = {"zero": "constant", "reflect": "mirror"}


@dataclass(frozen=True)
class CellFeatures:
    """Per-cell features of a transformed stack: ``values`` is ``(F, H, W)`` float32.

    ``n_layers`` cell values come first, then their ``n_layers`` window means, then the knowledge
    weight (0 where there is none).
    """

    values: np.ndarray
    names: list[str]
    n_layers: int

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(N, F)`` features at the given cells."""
        return np.ascontiguousarray(self.values[:, rows, cols].T)

    def table(self) -> np.ndarray:
        """``(H * W, F)`` features of every cell, row by row."""
        return np.ascontiguousarray(self.values.reshape(len(self.names), -1).T)


@dataclass(frozen=True)
class BackgroundCells:
    """Unlabelled background cells a baseline is fitted on, and how they enter its fit.

    ``loss`` is the recipe's ``background_loss`` (``bce``: negatives; ``soft`` / ``nnpu``:
    soft labels with probability ``prior``); ``weight`` is the background's total weight
    relative to the labelled windows' (the recipe's ``background_weight``).
    """

    rows: np.ndarray
    cols: np.ndarray
    loss: str = "soft"
    prior: float = 0.05
    weight: float = 1.0

    def __len__(self) -> int:
        return int(np.asarray(self.rows).size)


def draw_background(
    pool: BackgroundPool,
    n_train: int,
    ratio: float,
    seed: int,
    *,
    loss: str = "soft",
    prior: float = 0.05,
    weight: float = 1.0,
) -> BackgroundCells:
    """One seeded draw of ``ratio x n_train x BACKGROUND_EPOCHS`` cells from ``pool`` (all of
    the pool when it is smaller; without replacement), sorted by cell."""
    n = min(round(ratio * n_train) * BACKGROUND_EPOCHS, len(pool))
    # A stream of its own, so the draw does not depend on what else the seed drives.
    rows, cols = pool.draw(n, np.random.default_rng([seed, 0xBAC6]))
    order = np.lexsort((cols, rows))
    return BackgroundCells(rows[order], cols[order], loss=loss, prior=prior, weight=weight)


def cell_features(
    transformed: np.ndarray,
    names: list[str],
    knowledge: np.ndarray | None,
    window: int,
    padding: str = "zero",
) -> CellFeatures:
    """Cell values, ``window``-mean of each layer and the knowledge weight, for every cell.

    ``transformed`` is ``(C, H, W)`` as :meth:`ChannelTransform.apply` returns it (invalid cells
    already 0). The window mean pads like the network windows: zeros beyond the grid for
    ``"zero"``, the mirror image (edge not repeated) for ``"reflect"``.
    """
    if window < 1 or window % 2 == 0:
        raise GkdcnError(f"window must be a positive odd number of cells, got {window}")
    stack = np.asarray(transformed, dtype=np.float32)
    if stack.ndim != 3 or stack.shape[0] != len(names):
        raise GkdcnError(f"expected ({len(names)}, H, W) transformed layers, got {stack.shape}")
    mode = _FILTER_MODE.get(padding)
    if mode is None:
        raise GkdcnError(f"unknown padding {padding!r} (use 'zero' or 'reflect')")
    # float64 accumulation: uniform_filter sums in the input dtype.
    means = uniform_filter(
        stack.astype(np.float64), size=(1, window, window), mode=mode, cval=0.0
    ).astype(np.float32)
    weight = (
        np.zeros(stack.shape[1:], dtype=np.float32)
        if knowledge is None
        else np.nan_to_num(np.asarray(knowledge, dtype=np.float32), nan=0.0)
    )
    return CellFeatures(
        values=np.concatenate([stack, means, weight[np.newaxis]], axis=0),
        names=[*names, *(f"{n} (window mean)" for n in names), "knowledge"],
        n_layers=len(names),
    )


class CellBaseline(ClassifierMixin, BaseEstimator):
    """A baseline of ``gkdcn compare``: a scikit-learn classifier on per-cell features.

    Subclasses follow scikit-learn's estimator conventions: settings are ``__init__`` keywords
    (so ``get_params`` / ``set_params`` / ``clone`` work), ``fit(X, y, sample_weight=None)``
    learns from ``(N, F)`` rows of :meth:`CellFeatures.at` with 0/1 labels and returns ``self``,
    and ``predict_proba(X)`` returns ``(N, 2)`` probabilities (column 1: a deposit), increasing
    with prospectivity. :func:`fit_baseline` builds one per fold with :meth:`for_features`.
    """

    #: False for a fixed rule that learns nothing from the training windows (the knowledge
    #: weight): it is then fitted on no rows and needs no deposits.
    learns: ClassVar[bool] = True

    @classmethod
    def for_features(cls, features: CellFeatures, seed: int) -> CellBaseline:
        """The estimator for one fold's ``features``: ``random_state=seed`` where it has one."""
        estimator = cls()
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=seed)
        return estimator

    def describe(self) -> str:
        """What was fitted, in words (recorded in the job's ``result.json``)."""
        return type(self).__name__

    def fit_info(self) -> dict[str, Any]:
        """Facts of the fit for the job's ``result.json`` (e.g. the chosen layer)."""
        return {}

    def fitted_record(self, feature_names: Sequence[str]) -> dict[str, Any]:
        """Numbers of the fitted model for its ``baseline.json`` (e.g. coefficients)."""
        return {}

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 at probability 0.5 (scikit-learn's classifier interface; comparisons rank
        :meth:`predict_proba`)."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(N, 2)`` probabilities of no deposit / a deposit."""
        raise NotImplementedError


def _two_columns(p: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 - p, p])


class KnowledgeBaseline(CellBaseline):
    """The knowledge weight itself (the last feature column) as the score; learns nothing."""

    learns = False

    def fit(
        self, X: np.ndarray, y: np.ndarray | None = None, sample_weight: np.ndarray | None = None
    ) -> KnowledgeBaseline:
        """Nothing to learn (scikit-learn's interface)."""
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The knowledge weight of each row, as the probability of a deposit."""
        return _two_columns(np.asarray(X)[:, -1].astype(np.float64))

    def describe(self) -> str:
        return "knowledge weight as the score"


class ElementBaseline(CellBaseline):
    """The single column, either sign, whose values rank the training deposits best (AUC).

    ``columns``: the candidate columns (the element layers' cell values; not the knowledge
    channel, a baseline of its own); ``feature_names`` name every column. The score is a
    logistic squashing of the signed column, so ranks and AUC are the column's own.
    """

    def __init__(
        self, columns: Sequence[int] | None = None, feature_names: Sequence[str] | None = None
    ) -> None:
        self.columns = columns
        self.feature_names = feature_names

    @classmethod
    def for_features(cls, features: CellFeatures, seed: int) -> ElementBaseline:
        """The element layers of ``features`` as the candidates (``seed`` unused: no chance)."""
        columns = [j for j in range(features.n_layers) if features.names[j] != KNOWLEDGE_CHANNEL]
        return cls(columns=tuple(columns), feature_names=tuple(features.names))

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> ElementBaseline:
        """Choose the column on the labelled rows (``sample_weight`` is not used: the choice is
        made against the training non-deposits, never the background)."""
        x = np.asarray(X)
        columns = list(range(x.shape[1])) if self.columns is None else list(self.columns)
        if not columns:
            raise GkdcnError("the element baseline needs at least one element layer")
        best, sign, auc = _best_layer(x[:, columns], np.asarray(y))
        self.layer_ = columns[best]
        self.sign_ = sign
        self.train_auc_ = auc
        self.classes_ = np.array([0, 1])
        return self

    @property
    def layer_name(self) -> str:
        names = self.feature_names
        return str(self.layer_) if names is None else str(names[self.layer_])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Logistic squashing of the chosen column times its sign."""
        z = self.sign_ * np.asarray(X)[:, self.layer_].astype(np.float64)
        return _two_columns(cast(np.ndarray, 1.0 / (1.0 + np.exp(-z))))

    def describe(self) -> str:
        sign = "" if self.sign_ > 0 else "-"
        return f"{sign}{self.layer_name} (training AUC {self.train_auc_:.3f})"

    def fit_info(self) -> dict[str, Any]:
        return {"layer": self.layer_name, "sign": int(self.sign_), "train_auc": self.train_auc_}


class LogisticBaseline(CellBaseline):
    """Logistic regression (L2, standardised features) on every feature column."""

    def __init__(
        self, C: float = 1.0, max_iter: int = 2000, random_state: int | None = None
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> LogisticBaseline:
        """Standardise, then fit the regression with ``sample_weight``."""
        self.pipeline_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state),
        )
        self.pipeline_.fit(X, y, logisticregression__sample_weight=sample_weight)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, self.pipeline_.predict_proba(X))

    def describe(self) -> str:
        return f"logistic regression (L2, C = {self.C:g}) on cell values, window means, knowledge"

    def fitted_record(self, feature_names: Sequence[str]) -> dict[str, Any]:
        scaler, logit = self.pipeline_[0], self.pipeline_[-1]
        return {
            "standardised_coefficients": dict(
                zip(feature_names, logit.coef_[0].tolist(), strict=True)
            ),
            "intercept": float(logit.intercept_[0]),
            "feature_mean": scaler.mean_.tolist(),
            "feature_scale": scaler.scale_.tolist(),
        }


class RandomForestBaseline(CellBaseline):
    """A random forest (scikit-learn, seeded, one thread) on every feature column."""

    def __init__(
        self,
        n_estimators: int = RANDOM_FOREST_TREES,
        min_samples_leaf: int = 2,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> RandomForestBaseline:
        """Grow the forest with ``sample_weight``."""
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
            n_jobs=1,
        )
        self.forest_.fit(X, y, sample_weight=sample_weight)
        self.classes_ = self.forest_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, self.forest_.predict_proba(X))

    def describe(self) -> str:
        return f"random forest ({self.n_estimators} trees) on cell values, window means, knowledge"

    def fitted_record(self, feature_names: Sequence[str]) -> dict[str, Any]:
        importance = self.forest_.feature_importances_.tolist()
        return {"feature_importance": dict(zip(feature_names, importance, strict=True))}


def baseline_estimator(kind: str, features: CellFeatures, seed: int) -> CellBaseline:
    """The unfitted estimator of baseline ``kind`` for one fold's ``features``: the class its
    registry entry names (``fits``), built by its :meth:`CellBaseline.for_features`."""
    entry = registry.find(kind)
    if entry is None or entry.family != "baseline":
        baselines = registry.names("baseline")
        raise GkdcnError(f"unknown baseline {kind!r} (choose from {', '.join(baselines)})")
    estimator_class = registry.load_class(entry)
    if not issubclass(estimator_class, CellBaseline):
        raise TypeError(f"baseline {kind!r}: {estimator_class.__name__} is not a CellBaseline")
    return estimator_class.for_features(features, seed)


@dataclass
class FittedBaseline:
    """A fitted baseline: scores cells of :class:`CellFeatures` built like its training ones.

    ``trained_on`` holds the sample indices it was fitted on (empty for a rule that learns
    nothing, such as ``knowledge``) and ``background_rows`` / ``background_cols`` the
    background cells (empty without background), so a caller can check that no held-out window
    or ranked cell took part; ``description`` says what was chosen.
    """

    kind: str
    description: str
    trained_on: np.ndarray
    estimator: CellBaseline
    background_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    background_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int | None:
        """The chosen feature column of a baseline that chooses one (``element``), else None."""
        return getattr(self.estimator, "layer_", None)

    @property
    def sign(self) -> float:
        """The sign of the chosen column (``element``); 1 otherwise."""
        return float(getattr(self.estimator, "sign_", 1.0))

    def score(self, features: CellFeatures, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] at the given cells (higher = more prospective)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        return self.estimator.predict_proba(features.at(rows, cols))[:, 1]

    def score_map(self, features: CellFeatures, valid: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 score map, NaN off ``valid``."""
        rows, cols = np.nonzero(valid)
        out = np.full(valid.shape, np.nan, dtype=np.float32)
        out[rows, cols] = self.score(features, rows, cols)
        return out


def fit_baseline(
    kind: str,
    features: CellFeatures,
    rows: np.ndarray,
    cols: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    trained_on: np.ndarray | None = None,
    has_knowledge: bool = True,
    background: BackgroundCells | None = None,
) -> FittedBaseline:
    """Fit baseline ``kind`` on training cells ``(rows, cols)`` with 0/1 ``labels``, and (the
    kinds the registry marks ``background``) on the unlabelled ``background`` cells if given
    (how: the module docstring; the others ignore it).

    ``trained_on`` is recorded as given (the sample indices behind the cells).
    """
    estimator = baseline_estimator(kind, features, seed)
    entry = registry.model_kind(kind)
    if entry.needs_knowledge and not has_knowledge:
        raise GkdcnError(
            f"the {kind} baseline needs geological knowledge: set [knowledge] faults or "
            "weights in the config, or leave it out of --models"
        )
    if not estimator.learns:
        estimator.fit(np.zeros((0, len(features.names)), np.float32), np.zeros(0, np.int64))
        return FittedBaseline(kind, estimator.describe(), np.zeros(0, np.int64), estimator)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    used = np.zeros(0, np.int64) if trained_on is None else np.asarray(trained_on, np.int64)
    if not (rows.shape == cols.shape == y.shape):
        raise GkdcnError("training rows, cols and labels differ in length")
    if not (0 < y.sum() < len(y)):
        raise GkdcnError(f"baseline {kind}: training needs both deposits and non-deposits")
    x = features.at(rows, cols)
    bg = background if entry.background and background is not None and len(background) else None
    bg_rows = np.zeros(0, np.int64) if bg is None else np.asarray(bg.rows, np.int64)
    bg_cols = np.zeros(0, np.int64) if bg is None else np.asarray(bg.cols, np.int64)
    x_fit, y_fit, w_fit = _with_background(x, y, features.at(bg_rows, bg_cols), bg)
    estimator.fit(x_fit, y_fit, sample_weight=w_fit)
    on_bg = "" if bg is None else f", with {len(bg)} background cells ({bg.loss})"
    info = estimator.fit_info()
    if bg is not None:
        info.update(n_background=len(bg), background_loss=bg.loss)
    return FittedBaseline(
        kind, estimator.describe() + on_bg, used, estimator, bg_rows, bg_cols, info=info
    )


def _with_background(
    x: np.ndarray, y: np.ndarray, x_bg: np.ndarray, bg: BackgroundCells | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and sample weights of the labelled cells (weight 1 each) and the
    background (together ``bg.weight`` times the labelled cells' weight; module docstring)."""
    w = np.ones(len(y), dtype=np.float64)
    if bg is None:
        return x, y, w
    per_cell = bg.weight * len(y) / len(bg)
    zeros, ones = np.zeros(len(bg), np.int64), np.ones(len(bg), np.int64)
    if bg.loss == "bce":
        return (
            np.concatenate([x, x_bg]),
            np.concatenate([y, zeros]),
            np.concatenate([w, np.full(len(bg), per_cell)]),
        )
    # Soft labels: each cell once as a positive (weight prior) and once as a negative.
    return (
        np.concatenate([x, x_bg, x_bg]),
        np.concatenate([y, ones, zeros]),
        np.concatenate(
            [w, np.full(len(bg), per_cell * bg.prior), np.full(len(bg), per_cell * (1 - bg.prior))]
        ),
    )


def _best_layer(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """The column and sign whose values rank ``y == 1`` highest (AUC); the first on ties."""
    best = (0, 1.0, -1.0)
    for j in range(x.shape[1]):
        auc = float(roc_auc_score(y, x[:, j])) if np.ptp(x[:, j]) > 0 else 0.5
        sign = 1.0 if auc >= 0.5 else -1.0
        signed = max(auc, 1.0 - auc)
        if signed > best[2] + 1e-12:
            best = (j, sign, signed)
    return best


def fold_features(
    raw: np.ndarray,
    names: list[str],
    knowledge: np.ndarray | None,
    transform: ChannelTransform,
    window: int,
    padding: str,
) -> CellFeatures:
    """Per-cell features of ``raw`` under a fold's fitted ``transform``.

    Pass the transform the networks of the fold are trained with
    (:func:`gkdcn.training.windows.prepare_windows` fits it on the training windows' cells), so baselines
    and networks see the same stack.
    """
    return cell_features(transform.apply(raw), names, knowledge, window, padding)


def fit_fold_baseline(
    kind: str,
    features: CellFeatures,
    samples: SampleSet,
    split: Split,
    *,
    seed: int = 0,
    has_knowledge: bool = True,
    background: BackgroundCells | None = None,
) -> FittedBaseline:
    """Fit ``kind`` on the centres and labels of the fold's training windows (``split.train``)
    and on the fold's ``background`` cells if given (:func:`draw_background` from the fold's
    networks' pool)."""
    train = np.asarray(split.train, dtype=np.int64)
    return fit_baseline(
        kind,
        features,
        samples.rows[train],
        samples.cols[train],
        samples.labels[train],
        seed=seed,
        trained_on=train,
        has_knowledge=has_knowledge,
        background=background,
    )
