"""gkdcn: geochemical anomaly patterns with deformable convolutions guided by geological knowledge.

The front door: the stages and the types they pass, each loaded on first use::

    import gkdcn

    config = gkdcn.load_config("district/study.toml")
    study = gkdcn.load_study(config)
    trained = gkdcn.train_study(study, "gk-dcn")

Stages
------
:func:`load_config` (TOML -> :class:`StudyConfig`), :func:`load_study` (-> :class:`Study`),
:func:`train_study` (-> :class:`TrainResult`, its :class:`ModelBundle`), :func:`predict_map`
(-> :class:`PredictionResult`), :func:`evaluate_map` (-> :class:`Evaluation`),
:func:`make_plan` and :func:`run_comparison` (-> :class:`Comparison`), :func:`explain_model`,
:func:`build_report`; :func:`generate_district` writes a synthetic district to try them on.
``docs/from_python.md`` runs them end to end.

The calls keep the names of the functions they are: ``gkdcn.train``, ``gkdcn.predict``,
``gkdcn.evaluate``, ``gkdcn.compare``, ``gkdcn.explain`` and ``gkdcn.report`` are the submodules
(``docs/ARCHITECTURE.md``, "The front door").
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from gkdcn.lazy import lazy_names

try:
    __version__ = version("gkdcn")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# Loaded on first use (PEP 562), not here: every command imports this package, and most of them
# need neither torch (train, predict, compare) nor matplotlib (figures).
if TYPE_CHECKING:
    from gkdcn.compare.plan import Plan, make_plan
    from gkdcn.compare.results import Comparison
    from gkdcn.compare.run import run_comparison
    from gkdcn.config import StudyConfig, config_from_dict, load_config
    from gkdcn.data.study import Study, load_study
    from gkdcn.data.synthetic import SyntheticSpec, generate_district
    from gkdcn.errors import GkdcnError, InputError
    from gkdcn.evaluate import Evaluation, evaluate_map
    from gkdcn.explain.run import explain_model
    from gkdcn.io.rasters import ArraySource
    from gkdcn.models.bundle import ModelBundle
    from gkdcn.models.registry import ModelKind
    from gkdcn.predict import PredictionResult, predict_map
    from gkdcn.report.build import build_report
    from gkdcn.training.loop import TrainResult
    from gkdcn.training.study import train_study

_LAZY = {
    "ArraySource": "gkdcn.io.rasters",
    "Comparison": "gkdcn.compare.results",
    "Evaluation": "gkdcn.evaluate",
    "GkdcnError": "gkdcn.errors",
    "InputError": "gkdcn.errors",
    "ModelBundle": "gkdcn.models.bundle",
    "ModelKind": "gkdcn.models.registry",
    "Plan": "gkdcn.compare.plan",
    "PredictionResult": "gkdcn.predict",
    "Study": "gkdcn.data.study",
    "StudyConfig": "gkdcn.config",
    "SyntheticSpec": "gkdcn.data.synthetic",
    "TrainResult": "gkdcn.training.loop",
    "build_report": "gkdcn.report.build",
    "config_from_dict": "gkdcn.config",
    "evaluate_map": "gkdcn.evaluate",
    "explain_model": "gkdcn.explain.run",
    "generate_district": "gkdcn.data.synthetic",
    "load_config": "gkdcn.config",
    "load_study": "gkdcn.data.study",
    "make_plan": "gkdcn.compare.plan",
    "predict_map": "gkdcn.predict",
    "run_comparison": "gkdcn.compare.run",
    "train_study": "gkdcn.training.study",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "ArraySource",
    "Comparison",
    "Evaluation",
    "GkdcnError",
    "InputError",
    "ModelBundle",
    "ModelKind",
    "Plan",
    "PredictionResult",
    "Study",
    "StudyConfig",
    "SyntheticSpec",
    "TrainResult",
    "__version__",
    "build_report",
    "config_from_dict",
    "evaluate_map",
    "explain_model",
    "generate_district",
    "load_config",
    "load_study",
    "make_plan",
    "predict_map",
    "run_comparison",
    "train_study",
]
