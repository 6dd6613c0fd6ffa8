"""The command line as users know it: its commands, in order, and their options and defaults.

The commands live one per module in ``gkdcn.cli``; these tests pin what ``gkdcn --help`` and
``gkdcn CMD --help`` offer, so moving code between those modules cannot rename, reorder or
re-default anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from gkdcn.cli import app

COMMANDS = [
    "synth",
    "prepare",
    "train",
    "predict",
    "evaluate",
    "compare",
    "ablation",
    "explain",
    "report",
    "demo",
    "grid",
    "init",
]


def _group() -> Any:
    return typer.main.get_command(app)


def _options(command: str) -> list[tuple[str, Any]]:
    """Each parameter of ``command`` as its first spelling (or argument name) and default."""
    return [(param.opts[0], param.default) for param in _group().commands[command].params]


def test_the_commands_and_their_order() -> None:
    assert list(_group().commands) == COMMANDS


def test_threads_is_the_one_option_before_the_command() -> None:
    assert [param.opts for param in _group().params] == [["--threads"]]


def test_train_options_and_defaults() -> None:
    assert _options("train") == [
        ("config", None),
        ("--model", None),
        ("--out", None),
        ("--data-dir", None),
        ("--seed", None),
        ("--seeds", 1),
        ("--epochs", None),
        ("--preset", None),
        ("--split", None),
        ("--device", "cpu"),
        ("--precision", None),
        ("--overwrite", False),
    ]
    model = _group().commands["train"].params[1]
    assert model.opts == ["--model", "-m"]
    assert model.required


def test_grid_options_and_defaults() -> None:
    assert _options("grid") == [
        ("samples", None),
        ("--out", None),
        ("--x", "x"),
        ("--y", "y"),
        ("--crs", None),
        ("--columns", None),
        ("--cell", None),
        ("--like", None),
        ("--to-crs", None),
        ("--method", "idw"),
        ("--max-distance", None),
        ("--nodata", None),
        ("--below-detection", "half"),
        ("--survey-column", None),
        ("--level", "none"),
        ("--overwrite", False),
    ]


def test_explain_and_demo_defaults() -> None:
    assert _options("explain") == [
        ("model", None),
        ("config", None),
        ("--out", None),
        ("--data-dir", None),
        ("--layer", None),
        ("--element", None),
        ("--sites", "deposits"),
        ("--top-k", 3),
        ("--maps", True),
        ("--map-ig-steps", 16),
        ("--overwrite", False),
    ]
    assert _options("demo") == [
        ("--out", Path("gkdcn-demo")),
        ("--overwrite", False),
        ("--seed", 0),
        ("--jobs", None),
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_help_and_helped_options(command: str) -> None:
    found = _group().commands[command]
    assert found.help and found.help.strip()
    assert all(getattr(param, "help", None) for param in found.params), command


def test_python_m_gkdcn_cli_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gkdcn.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout
