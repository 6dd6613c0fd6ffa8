"""The model registry: one entry per kind, the config checked against it, and a new baseline
added the way ``docs/ARCHITECTURE.md`` shows (one file, one entry) appearing in ``compare``."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import gkdcn.models
from gkdcn.compare import make_plan, run_comparison
from gkdcn.config import config_from_dict
from gkdcn.data.study import load_study
from gkdcn.errors import InputError
from gkdcn.models import registry
from gkdcn.models.baselines import CellBaseline, ElementBaseline, LogisticBaseline
from gkdcn.report import build_report
from helpers import tiny_comparison_config

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def _example(marker: str) -> str:
    """The python block that follows ``<!-- example: MARKER -->`` in ARCHITECTURE.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- example: {re.escape(marker)} -->\s*```python\n(.*?)```", text, re.DOTALL
    )
    assert found, f"no example {marker!r} in {ARCHITECTURE}"
    return found.group(1)


@pytest.fixture
def naive_bayes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[registry.ModelKind]:
    """The worked example of ARCHITECTURE.md, installed for one test: its file as
    ``gkdcn.models.naive_bayes`` and its entry appended to the registry."""
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "naive_bayes.py").write_text(
        _example("src/gkdcn/models/naive_bayes.py"), encoding="utf-8"
    )
    monkeypatch.setattr(gkdcn.models, "__path__", [*gkdcn.models.__path__, str(folder)])
    entry = eval(_example("registry entry"), {"ModelKind": registry.ModelKind})
    monkeypatch.setattr(registry, "MODELS", (*registry.MODELS, entry))
    yield entry
    sys.modules.pop("gkdcn.models.naive_bayes", None)


def test_look_ups() -> None:
    assert registry.names("network") == ("cnn", "dcn", "gk-cnn", "gk-dcn")
    assert registry.names("baseline") == ("knowledge", "element", "logistic", "random-forest")
    assert registry.names() == (*registry.names("network"), *registry.names("baseline"))
    assert registry.label("gk-dcn") == "GK-DCN" and registry.label("unknown") == "unknown"
    assert registry.is_network("dcn") and not registry.is_network("logistic")
    assert registry.is_baseline("element") and not registry.is_baseline("cnn")
    assert not registry.is_baseline("svm") and registry.find("svm") is None
    needs = [k.name for k in registry.MODELS if k.needs_knowledge]
    assert needs == ["gk-cnn", "gk-dcn", "knowledge"]
    assert [k.name for k in registry.MODELS if k.deformable] == ["dcn", "gk-dcn"]
    assert [k.name for k in registry.MODELS if k.background] == ["logistic", "random-forest"]
    with pytest.raises(ValueError, match=r"unknown model .svm. \(choose from cnn, dcn"):
        registry.model_kind("svm")


def test_the_config_checks_model_names_against_the_registry(
    tiny_study, naive_bayes: registry.ModelKind
) -> None:
    raw = tiny_study.to_toml_dict()
    with pytest.raises(InputError, match=r"compare\.models.*unknown model 'svm'"):
        config_from_dict({**raw, "compare": {"models": ["cnn", "svm"]}}, tiny_study.base_dir)
    config = config_from_dict(
        {**raw, "compare": {"models": ["cnn", "naive-bayes"]}}, tiny_study.base_dir
    )
    assert config.compare.models == ["cnn", "naive-bayes"]
    # The default compares every declared kind, the new one included.
    default = config_from_dict({**raw, "compare": {}}, tiny_study.base_dir)
    assert default.compare.models[-1] == "naive-bayes"


def test_baselines_are_scikit_learn_estimators() -> None:
    logistic = LogisticBaseline(C=0.5, random_state=3)
    assert logistic.get_params() == {"C": 0.5, "max_iter": 2000, "random_state": 3}
    assert clone(logistic).get_params() == logistic.get_params()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = (x[:, 1] > 0).astype(np.int64)
    for estimator in (LogisticBaseline(random_state=0), ElementBaseline()):
        fitted = estimator.fit(x, y)
        assert fitted is estimator
        proba = estimator.predict_proba(x)
        assert proba.shape == (40, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert estimator.score(x, y) > 0.9  # ClassifierMixin's accuracy from predict
    assert ElementBaseline().fit(x, y).layer_ == 1


def test_a_new_baseline_is_one_file_and_one_entry(
    tmp_path: Path, naive_bayes: registry.ModelKind
) -> None:
    estimator_class = registry.load_class(naive_bayes)
    assert issubclass(estimator_class, CellBaseline)
    assert "var_smoothing" in estimator_class().get_params()
    study = load_study(
        tiny_comparison_config(tmp_path / "study", seeds=1, models=["cnn", "naive-bayes"])
    )
    out = tmp_path / "run"
    comparison = run_comparison(study, out, make_plan(study.config))
    for protocol in ("authors", "lodo"):
        summary = pd.read_csv(out / "tables" / f"{protocol}_summary.csv")
        assert list(summary["model"]) == ["cnn", "naive-bayes"]
        assert list(summary["kind"]) == ["network", "baseline"]
        assert summary["auc_mean"].between(0, 1).all()
        paired = pd.read_csv(out / "tables" / f"{protocol}_paired.csv")
        assert "CNN - naive Bayes" in set(paired["comparison"])
        assert list(comparison.summary[protocol]["model"]) == ["cnn", "naive-bayes"]
    # Every held-out fold ranked its deposit with the new baseline.
    n_deposits = int((study.sites.labels == 1).sum())
    assert len(list((out / "lodo" / "naive-bayes" / "seed0").glob("*/result.json"))) == n_deposits
    html = build_report(out).read_text(encoding="utf-8")
    assert "<b>naive-bayes</b>: Gaussian naive Bayes on the same features" in html
