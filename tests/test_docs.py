"""The documentation stays true to the code: the generated config reference and the README."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from gkdcn.config import StudyConfig

REPO = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", REPO / "scripts" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _load_script()


def _section(text: str, name: str) -> str:
    """The part of a rendered reference that documents the model class ``name``."""
    start = text.index(f'<a id="{name.lower()}"></a>')
    end = text.find('<a id="', start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_config_reference_is_current(reference: ModuleType) -> None:
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert reference.render() == committed, (
        "docs/config.md is not current: run python scripts/config_reference.py"
    )


def test_config_reference_lists_every_key_of_every_table(reference: ModuleType) -> None:
    text = reference.render()
    classes = reference._model_classes(StudyConfig)
    assert {"ElementsConfig", "TrainConfig", "CompareConfig"} <= set(classes)
    for name, cls in classes.items():
        section = _section(text, "StudyConfig" if cls is StudyConfig else name)
        for key, info in cls.model_fields.items():
            if info.exclude:
                assert f"| `{key}` |" not in section, f"{name}.{key} is not read from the file"
            else:
                assert f"| `{key}` |" in section, f"{name}.{key} missing from the reference"


class _Inner(BaseModel):
    """An inner table."""

    model_config = ConfigDict(extra="forbid")
    rate: float = Field(0.5, gt=0, lt=1, description="a share | with a pipe")


class _Named(BaseModel):
    """A table of named tables."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(1, ge=0)


class _Toy(BaseModel):
    """A toy config."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    count: int | None = Field(None, ge=1, le=9, description="how many")
    kind: Literal["a", "b"] = "a"
    names: list[str] = Field(default_factory=lambda: ["x", "y"])
    inner: _Inner = _Inner()
    named: dict[str, _Named] = Field(default_factory=dict)
    hidden: str = Field("secret", exclude=True)


def test_a_toy_schema_renders_types_defaults_bounds_and_descriptions(
    reference: ModuleType,
) -> None:
    text = reference.render(_Toy)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    assert set(rows) == {"path", "count", "kind", "names", "inner", "named", "rate", "size"}
    assert rows["path"] == "| `path` | path | *required* |  |  |"
    assert rows["count"] == "| `count` | integer (optional) | not set | ≥ 1, ≤ 9 | how many |"
    assert rows["kind"] == '| `kind` | `"a"` \\| `"b"` | `"a"` |  |  |'
    assert rows["names"] == '| `names` | list of string | `["x", "y"]` |  |  |'
    assert "[_Inner](#_inner)" in rows["inner"] and "see the table" in rows["inner"]
    assert rows["rate"] == "| `rate` | number | `0.5` | > 0, < 1 | a share \\| with a pipe |"
    assert "## `[inner]`" in text and "An inner table." in _section(text, "_Inner")
    assert "table of name → table ([_Named](#_named))" in rows["named"]
    assert "## `[named.<name>]`" in text and "≥ 0" in _section(text, "_Named")


def test_the_check_mode_fails_on_a_stale_file(reference: ModuleType, tmp_path: Path) -> None:
    target = tmp_path / "config.md"
    assert reference.main(["--out", str(target)]) == 0
    assert reference.main(["--check", "--out", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert reference.main(["--check", "--out", str(target)]) == 1


def test_the_readme_is_short_and_runs_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 450
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in readme, "the README's test command must be .ci/run's command"
    demo = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && gkdcn demo"
    assert demo in readme
    assert "docs/config.md" in readme
