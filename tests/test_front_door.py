"""``import gkdcn``: the stages by name, loaded lazily, and the example of docs/from_python.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import gkdcn
from gkdcn.data.synthetic import SyntheticSpec, generate_district

FROM_PYTHON = Path(__file__).resolve().parents[1] / "docs" / "from_python.md"
SUBMODULES = (
    "train",
    "training",
    "runtime",
    "predict",
    "evaluate",
    "compare",
    "explain",
    "report",
    "config",
    "cli",
)


def _run(code: str) -> str:
    """stdout of ``code`` in a fresh interpreter (modules other tests imported do not count)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_import_gkdcn_loads_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys, gkdcn; gkdcn.__version__; "
        "print(','.join(m for m in ('torch', 'matplotlib', 'pydantic') if m in sys.modules))"
    )
    assert _run(code).strip() == ""


def test_the_front_door_names_every_stage_lazily() -> None:
    assert sorted(gkdcn._LAZY) == sorted(n for n in gkdcn.__all__ if n != "__version__")
    for name in gkdcn.__all__:
        value = getattr(gkdcn, name)
        assert getattr(value, "__name__", name) == name
        assert value.__doc__, f"gkdcn.{name} has no docstring"
    assert gkdcn.train_study.__module__ == "gkdcn.training.study"
    with pytest.raises(AttributeError, match="no_such_stage"):
        _ = gkdcn.no_such_stage  # type: ignore[attr-defined]


def test_the_front_door_survives_the_submodule_imports() -> None:
    """Importing ``gkdcn.train`` binds the module on the package; no front-door name is one of
    them, so every name still means its function or type, before and after."""
    assert not set(gkdcn.__all__) & set(SUBMODULES)
    code = (
        "import gkdcn, importlib, inspect\n"
        "before = {n: getattr(gkdcn, n) for n in gkdcn.__all__}\n"
        f"for sub in {SUBMODULES!r}: importlib.import_module('gkdcn.' + sub)\n"
        "after = {n: getattr(gkdcn, n) for n in gkdcn.__all__}\n"
        "assert before == after\n"
        "assert not any(inspect.ismodule(v) for v in after.values())\n"
        "assert inspect.ismodule(gkdcn.train) and inspect.ismodule(gkdcn.compare)\n"
        "import gkdcn.train as train_module\n"
        "assert train_module.train_study is gkdcn.train_study\n"
        "print('ok')"
    )
    assert _run(code).strip() == "ok"


def test_the_from_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The python block of docs/from_python.md, run as written on a small synthetic district."""
    blocks = re.findall(r"```python\n(.*?)```", FROM_PYTHON.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1
    spec = SyntheticSpec(height=40, width=48, n_layers=6, n_deposits=5, seed=2)
    generate_district(tmp_path / "district", spec)
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(FROM_PYTHON), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert re.search(r"in-sample AUC 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", out)
    assert (tmp_path / "gk-dcn.pt").is_file()
    for model in ("cnn", "gk-dcn", "knowledge", "logistic"):
        assert model in out
    assert (tmp_path / "runs" / "quick" / "report.html").is_file()
    assert gkdcn.ModelBundle.load(tmp_path / "gk-dcn.pt").kind == "gk-dcn"
