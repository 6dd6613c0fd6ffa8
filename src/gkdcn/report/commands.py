"""Command lines that redo a run, built from what it recorded and the CLI's real defaults."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gkdcn.compare.layout import RunLayout
from gkdcn.explain import defaults as explain_defaults


def reproduce_commands(
    run: Mapping[str, Any], plan: Mapping[str, Any], run_dir: Path, out: Path
) -> list[str]:
    """Command lines that redo this run into a new folder, from the saved config."""
    base_dir = run.get("config_base_dir")
    config = f"{base_dir}/study.toml" if base_dir else "study.toml"
    new_run = f"{run_dir.name}-again"
    args = ["gkdcn", "compare", config, "--out", new_run]
    if plan.get("quick"):
        args.append("--quick")
    if plan.get("seeds"):
        args += ["--seeds", str(len(plan["seeds"]))]
    if plan.get("models"):
        args += ["--models", ",".join(str(m) for m in plan["models"])]
    if plan.get("protocols"):
        args += ["--protocols", ",".join(str(p) for p in plan["protocols"])]
    train = plan.get("train") or {}
    if isinstance(train, dict) and train.get("epochs") is not None:
        args += ["--epochs", str(train["epochs"])]
    if isinstance(train, dict) and train.get("precision"):
        # What ran (resolved from "auto"), so the rerun does the same arithmetic anywhere.
        args += ["--precision", str(train["precision"])]
    commands = [shell_line(args)]
    for explained in RunLayout(run_dir).explanations():
        model = explained.root.name
        try:
            index = json.loads(explained.index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        commands.append(shell_line(explain_command(index, model, run_dir, new_run, config)))
    report = (Path(new_run) / out.name).as_posix()
    commands.append(shell_line(["gkdcn", "report", new_run, "--out", report]))
    return commands


def explain_command(
    index: dict[str, Any], model: str, run_dir: Path, new_run: str, config: str
) -> list[str]:
    """``gkdcn explain`` with the model file and settings its index recorded.

    A model file inside the run folder is pointed at the same place in the new run; an index
    without a recorded file falls back to seed 0 of the authors' protocol.
    """
    recorded = index.get("model_file")
    again = RunLayout(Path(new_run))
    model_file = again.model_file(model).as_posix()
    if isinstance(recorded, str) and recorded:
        try:
            inside = Path(recorded).resolve().relative_to(run_dir.resolve())
            model_file = f"{new_run}/{inside.as_posix()}"
        except ValueError:
            model_file = recorded
    out = again.explain(model).root.as_posix()
    args = ["gkdcn", "explain", model_file, config, "--out", out]
    recorded_settings = index.get("settings")
    settings: dict[str, Any] = recorded_settings if isinstance(recorded_settings, dict) else {}
    for key, option in (("layer", "--layer"), ("element", "--element")):
        if isinstance(settings.get(key), str) and settings[key]:
            args += [option, settings[key]]
    # Options at the CLI's defaults are left out.
    # "sites" may also record "custom" (points given through the API), which no option repeats.
    if settings.get("sites") in ("deposits", "all") and settings["sites"] != explain_defaults.SITES:
        args += ["--sites", settings["sites"]]
    if isinstance(settings.get("top_k"), int) and settings["top_k"] != explain_defaults.TOP_K:
        args += ["--top-k", str(settings["top_k"])]
    has_maps = settings.get(
        "map_outputs",
        any(
            str(f.get("path", "")).endswith(".tif")
            for f in index.get("files") or []
            if isinstance(f, dict)
        ),
    )
    if not has_maps:
        args.append("--no-maps")
    elif (
        isinstance(settings.get("map_ig_steps"), int)
        and settings["map_ig_steps"] != explain_defaults.MAP_IG_STEPS
    ):
        args += ["--map-ig-steps", str(settings["map_ig_steps"])]
    return args


def shell_line(args: Sequence[str], width: int = 88) -> str:
    r"""A quoted command line, continued over lines (``\``) at its options when long."""
    line = shlex.join(args)
    if len(line) <= width:
        return line
    parts: list[list[str]] = [[]]
    for arg in args:
        if arg.startswith("--") and parts[-1]:
            parts.append([])
        parts[-1].append(arg)
    return " \\\n    ".join(shlex.join(p) for p in parts)
