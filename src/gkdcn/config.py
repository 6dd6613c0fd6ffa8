"""The study config: one TOML file describing inputs, knowledge, transforms, samples, splits, training.

Relative paths are resolved against ``data_dir`` (``--data-dir`` on the command line) when given,
otherwise against the folder holding the config file. Validation errors name the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gkdcn.errors import InputError, validation_message
from gkdcn.models import registry

Align = Literal["strict", "resample", "index"]
# Upper bounds of the sizes a user sets (config keys and command-line options alike): each is
# far beyond any sensible study, and checked before any work, so a typo (an extra zero or
# three) is one line naming the key instead of hours of work or memory exhausted.
MAX_SEED = 2**32 - 1  # numpy and torch take every seed up to here
MAX_SEEDS = 100  # seeds of a comparison or members of an ensemble
MAX_BOOTSTRAP = 100_000  # bootstrap replicates: more do not sharpen a 95 % interval
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536  # windows per batch (training and prediction)
MAX_WIDTH = 1024  # channels of the first layers (the paper: 64)
MAX_WINDOW = 255  # cells
MAX_SHIFT = 25  # cells: a site's shift x shift neighbourhood of window centres
MAX_SITES = 1_000_000


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite lr or weight decay is a typo, not a setting (it would only
    # surface later as "Input contains NaN")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ElementsConfig(_Section):
    """Element layers: a folder of single-band GeoTIFFs (name = file stem) or one multi-band GeoTIFF."""

    path: Path
    layers: list[str] = Field(
        default_factory=list, description="explicit channel order; empty = sorted layer names"
    )
    exclude: list[str] = Field(default_factory=list, description="layer names to leave out")
    auxiliary: list[str] = Field(
        default_factory=list,
        description="layers that are not concentrations (magnetics, a distance raster): only "
        "scaled, left out of the log / centred log-ratio",
    )
    nodata: float | dict[str, float] | None = Field(
        None,
        description="no-value code besides each file's own nodata: one number for every layer, "
        "or a table by layer name (key 'default' for the others), e.g. { Au = -1, Te = -1 }",
    )
    valid_range: dict[str, tuple[float, float]] | None = Field(
        None,
        description="[low, high] per layer name (key 'default' for the others): values outside "
        "are nodata, e.g. { pH = [0, 14] }",
    )

    @field_validator("valid_range")
    @classmethod
    def _ordered(
        cls, value: dict[str, tuple[float, float]] | None
    ) -> dict[str, tuple[float, float]] | None:
        for name, (low, high) in (value or {}).items():
            if not low < high:
                raise ValueError(f"{name}: low {low:g} must be below high {high:g}")
        return value


class RasterSitesConfig(_Section):
    """Sites marked in a label raster."""

    raster: Path
    value: float = Field(1, description="cell value that marks a site (tianshan non_deposits: 0)")


class PointSitesConfig(_Section):
    """Sites as points: a CSV with coordinate columns, or any vector file geopandas reads."""

    points: Path
    x: str = "x"
    y: str = "y"
    crs: str | None = Field(None, description="CRS of a CSV's coordinates (default: grid CRS)")
    id: str | None = Field(None, description="column with site ids (default: row number)")


SiteSource = RasterSitesConfig | PointSitesConfig


class NegativeSamplingConfig(_Section):
    """How to draw non-deposit sites when none are given."""

    count: int | None = Field(None, ge=1, le=MAX_SITES, description="default: as many as deposits")
    min_distance: float = Field(5000.0, ge=0, description="map units from any deposit")
    seed: int = Field(0, ge=0, le=MAX_SEED)


class SitesConfig(_Section):
    deposits: SiteSource
    non_deposits: SiteSource | None = None
    negatives: NegativeSamplingConfig = NegativeSamplingConfig()


class DecayConfig(_Section):
    """Distance-to-fault -> weight in [0, 1]."""

    kind: Literal["rings", "exponential"] = "rings"
    ring_width: float = Field(2000.0, gt=0, description="rings: width of each ring in map units")
    rings: int = Field(
        12, ge=2, le=100_000, description="rings: ring index at which the weight reaches 0"
    )
    exponent: float = Field(0.46, gt=0, description="rings: power-law exponent")
    scale: float = Field(5000.0, gt=0, description="exponential: e-folding distance in map units")


class KnowledgeConfig(_Section):
    """Geological knowledge: fault lines turned into a proximity weight, or a ready weight raster."""

    faults: Path | None = None
    weights: Path | None = None
    decay: DecayConfig = DecayConfig()
    as_channel: bool = Field(False, description="also feed the weight to the network as a channel")

    @model_validator(mode="after")
    def _one_source(self) -> KnowledgeConfig:
        if self.faults is not None and self.weights is not None:
            raise ValueError("give either 'faults' or 'weights', not both")
        return self


class TransformConfig(_Section):
    """Per-cell value transform then per-channel scaling, fitted on training windows only."""

    method: Literal["none", "log", "clr"] = "clr"
    scaling: Literal["none", "standard", "robust"] = "standard"


class SamplesConfig(_Section):
    window: int = Field(9, ge=3, le=MAX_WINDOW, description="odd window size in cells")
    padding: Literal["zero", "reflect"] = "zero"
    shift: int = Field(
        3, ge=1, le=MAX_SHIFT, description="k: each site contributes its k x k neighbourhood"
    )
    rotations: bool = False
    flips: bool = False

    @field_validator("window", "shift")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value


class SplitConfig(_Section):
    """How samples are split into training and validation."""

    method: Literal["site", "window", "lodo", "blocks"] = "site"
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    exclusion_radius: float = Field(
        0.0,
        ge=0,
        description="lodo: also drop training windows centred this close to the held-out deposit",
    )
    block_size: float = Field(20000.0, gt=0, description="blocks: block edge in map units")
    folds: int = Field(5, ge=2, le=100, description="blocks: number of folds")


class TrainConfig(_Section):
    """Optimisation. Defaults are ours; ``preset = "authors"`` applies the authors' settings."""

    preset: Literal["default", "authors"] = "default"
    epochs: int = Field(60, ge=1, le=MAX_EPOCHS)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int | None = Field(
        15, ge=1, le=MAX_EPOCHS, description="early stopping on validation loss; none = off"
    )
    head: Literal["gap", "flatten"] = "gap"
    gk_loss: Literal["sigmoid-mse", "weighted-abs"] = "sigmoid-mse"
    gk_lambda: float = Field(0.1, ge=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    width: int = Field(
        64, ge=4, le=MAX_WIDTH, description="channels of the first layers (the paper: 64)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # The recipe for held-out performance (``preset = "authors"`` switches all of it off).
    background_ratio: float = Field(
        2.0,
        ge=0,
        le=100,
        description="unlabelled background windows per labelled training window, redrawn each "
        "epoch from the valid area away from every deposit of the split; 0 = off",
    )
    background_distance: float | None = Field(
        None,
        ge=0,
        description="map units: no background centre this close to a training deposit (and "
        "none within max(this, split.exclusion_radius) of a held-out one); "
        "default half a window",
    )
    background_loss: Literal["nnpu", "bce", "soft"] = Field(
        "soft",
        description="how background enters: 'nnpu' non-negative positive-unlabelled risk "
        "(Kiryo et al. 2017) with class_prior; 'bce' as certain negatives; 'soft' as "
        "positives with probability class_prior (soft labels)",
    )
    class_prior: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="share of the background assumed mineralised (known + undiscovered): the "
        "nnPU class prior, and the mean probability the prior-shift calibration aims at",
    )
    background_weight: float = Field(1.0, ge=0, description="weight of the background risk")
    gk_background: bool = Field(
        True,
        description="GK models: apply the knowledge term to background windows too "
        "(sigmoid-mse form only), so the map follows the prior where geochemistry is silent",
    )
    knowledge_prior: bool = Field(
        True,
        description="GK models with background_loss 'soft': the background's soft label "
        "follows the knowledge weight (class_prior * w / mean w), so the map leans on the "
        "geological prior where the geochemistry is silent",
    )
    augment: bool = Field(
        True,
        description="a random rotation by k*90 degrees and flip of every training window, "
        "redrawn each epoch",
    )
    noise: float = Field(
        0.05,
        ge=0,
        description="standard deviation of Gaussian value noise added to training windows "
        "(transformed units), redrawn each epoch; 0 = off",
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="arithmetic of the training steps: 'bfloat16' runs the convolutions and "
        "matrix products in bfloat16 (mixed precision: float32 weights, optimiser, loss, "
        "deformable offsets, masks and sampling); 'auto' is bfloat16 where that is faster (CPUs "
        "with AMX, AMD CPUs with AVX512-BF16, GPUs of compute capability 8+), float32 "
        "elsewhere; a comparison resolves it once, on the machine that runs gkdcn. Prediction "
        "always runs in float32",
    )
    calibration: Literal["none", "prior-shift"] = Field(
        "prior-shift",
        description="'prior-shift': with background, shift the output logit so the mean "
        "probability over background cells equals class_prior (recorded in the model file, "
        "applied by predict); AUC and ranks are unchanged",
    )
    select_epochs: Literal["off", "inner", "inner-restore"] = Field(
        "off",
        description="networks in a comparison's held-out folds: how many epochs to train. "
        "'off': all epochs. 'inner': the fold's training deposits are cut into select_folds "
        "spatial groups (inner folds); one network per inner fold trains all epochs while its "
        "held-out deposits are ranked among background cells every select_every epochs; the "
        "fold's network is then retrained on all its training deposits for the earliest epoch "
        "whose pooled inner AUC is within select_tolerance of the best (select_folds extra "
        "trainings per network and fold). 'inner-restore': one inner fold only, and its "
        "network, restored to that epoch, is the fold's model (no extra training, but that "
        "inner fold's deposits are withheld from it; it stops patience epochs after the "
        "best). Folds with fewer than 2 training deposits train all epochs",
    )
    select_folds: int = Field(
        2,
        ge=2,
        le=10,
        description="inner folds (spatial groups of the fold's training deposits) epochs are "
        "selected on; fewer when the fold has fewer training deposits",
    )
    select_every: int = Field(
        1, ge=1, le=100, description="epochs between two evaluations of the inner AUC"
    )
    select_tolerance: float = Field(
        0.005,
        ge=0,
        le=0.1,
        description="the earliest epoch whose inner AUC is within this of the best is chosen",
    )
    pretrain: Literal["off", "masked-channels"] = Field(
        "off",
        description="self-supervised pretraining of the network trunk before training: "
        "'masked-channels' reconstructs randomly hidden element channels of windows drawn from "
        "every valid cell of the map (no label is read; the transform is then fitted on all "
        "valid cells too). One trunk per seed and architecture serves every fold and model of "
        "a comparison, each fold fine-tunes it. Uses the unlabelled cells of the whole map",
    )
    pretrain_epochs: int = Field(10, ge=1, le=500, description="pretraining epochs")
    pretrain_windows: int = Field(
        4096, ge=64, le=1_000_000, description="windows drawn afresh per pretraining epoch"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "authors":
            return {**AUTHORS_TRAINING, **data}
        return data


# The authors' release (GK_DCN.py): Adam, lr 1e-4, batch 64, 80 epochs, no weight decay, no early
# stopping, global-average-pooling head; labelled windows only, no augmentation, no calibration.
AUTHORS_TRAINING: dict[str, Any] = {
    "epochs": 80,
    "lr": 1e-4,
    "batch_size": 64,
    "weight_decay": 0.0,
    "patience": None,
    "head": "gap",
    "background_ratio": 0.0,
    "gk_background": False,
    "knowledge_prior": False,
    "augment": False,
    "noise": 0.0,
    "calibration": "none",
}


class PredictConfig(_Section):
    batch_size: int = Field(1024, ge=1, le=MAX_BATCH)
    block_rows: int = Field(64, ge=1, le=65_536)


ProtocolName = Literal["authors", "lodo", "blocks"]
DEFAULT_PROTOCOLS: tuple[ProtocolName, ...] = ("authors", "lodo")


class CompareConfig(_Section):
    seeds: int = Field(5, ge=1, le=MAX_SEEDS)
    models: list[str] = Field(
        default_factory=lambda: list(registry.names()),
        description="networks and baselines to compare (default: every kind of "
        "gkdcn.models.registry, the four networks and the four baselines)",
    )
    protocols: list[ProtocolName] = Field(default_factory=lambda: list(DEFAULT_PROTOCOLS))
    bootstrap: int = Field(1000, ge=0, le=MAX_BOOTSTRAP)
    heldout_background: int = Field(
        5000,
        ge=0,
        le=10_000_000,
        description="held-out protocols rank each deposit among this many background cells, "
        "drawn once (with the first seed) and shared by all seeds and models, from the valid cells "
        "that are no site's "
        "window centre (0 = all of them)",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        for name in value:
            registry.model_kind(name)  # ValueError naming the choices
        return value


class StudyConfig(_Section):
    """A whole study. ``base_dir`` is where relative paths resolve (not read from the file)."""

    name: str = "study"
    align: Align = Field(
        "strict",
        description="'strict': grids must match; 'resample': warp onto the element grid; "
        "'index': line rasters up by array index from the top-left cell",
    )
    elements: ElementsConfig
    sites: SitesConfig
    knowledge: KnowledgeConfig = KnowledgeConfig()
    transform: TransformConfig = TransformConfig()
    samples: SamplesConfig = SamplesConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    compare: CompareConfig = CompareConfig()
    base_dir: Annotated[Path, Field(exclude=True)] = Path(".")
    source: Annotated[str | None, Field(exclude=True)] = None  # the config file, for errors

    def resolve(self, path: Path) -> Path:
        """Absolute path for a config path (relative ones resolve against ``base_dir``)."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def input_paths(self) -> list[Path]:
        """Every file or folder the study reads (resolved), so no output may replace one."""
        sources = [self.sites.deposits, self.sites.non_deposits]
        paths = [self.elements.path, self.knowledge.faults, self.knowledge.weights]
        paths += [s.raster if isinstance(s, RasterSitesConfig) else s.points for s in sources if s]
        return [self.resolve(p) for p in paths if p is not None]

    def to_toml_dict(self) -> dict[str, Any]:
        """The config as plain data (paths as strings), for recording next to results."""
        return self.model_dump(mode="json", exclude_none=True)


def load_config(path: str | Path, data_dir: str | Path | None = None) -> StudyConfig:
    """Read and validate a study config. Errors name the file and the offending key."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    base = Path(data_dir) if data_dir is not None else path.parent
    return config_from_dict(raw, base_dir=base.resolve(), source=path)


def config_from_dict(
    raw: dict[str, Any], base_dir: str | Path = ".", source: str | Path | None = None
) -> StudyConfig:
    """Validate a config given as a dict (used by tests, the demo and the synthetic district)."""
    try:
        return StudyConfig.model_validate(
            {**raw, "base_dir": Path(base_dir), "source": None if source is None else str(source)}
        )
    except ValidationError as exc:
        raise InputError(source or "config", validation_message(exc)) from None
