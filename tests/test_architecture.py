"""The house has one direction of flow: no import cycle among gkdcn's modules.

Every ``import`` counts, at module level, inside functions and under ``TYPE_CHECKING`` alike: a
cycle hidden in a function-level import is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gkdcn"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a name inside one) belongs to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, modules: dict[str, Path]) -> set[str]:
    """gkdcn modules that importing ``module`` executes (besides its own parent packages)."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"))
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            found = _resolve(name, modules)
            if found is None:
                continue
            # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            parts = found.split(".")
            for i in range(1, len(parts) + 1):
                targets.add(".".join(parts[:i]))
    own_parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return targets - own_parents - {module, PACKAGE}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, modules) for m in modules}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports() -> None:
    graph = _graph()
    # The compare command imports the comparison inside its command function only.
    assert "gkdcn.compare" in graph["gkdcn.cli.compare"]
    assert "gkdcn.io.atomic" in graph["gkdcn.figures"]


def _cli_modules(graph: dict[str, set[str]]) -> set[str]:
    return {m for m in graph if m == "gkdcn.cli" or m.startswith("gkdcn.cli.")}


def test_the_cli_is_the_top_floor() -> None:
    """Nothing imports the command line; its commands share only ``cli.common``."""
    graph = _graph()
    cli = _cli_modules(graph)
    assert {"gkdcn.cli", "gkdcn.cli.common", "gkdcn.cli.train"} <= cli
    below = {m: graph[m] & cli for m in graph if m not in cli and graph[m] & cli}
    assert below == {}, f"modules below the command line import it: {below}"
    commands = cli - {"gkdcn.cli", "gkdcn.cli.common", "gkdcn.cli.__main__"}
    for command in sorted(commands):
        assert graph[command] & cli <= {"gkdcn.cli.common"}, command
    assert graph["gkdcn.cli.common"] & cli == set()


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("leaf", "allowed"),
    [
        (
            "gkdcn.figures",
            {
                "gkdcn.config",
                "gkdcn.errors",
                "gkdcn.io",
                "gkdcn.io.atomic",
                "gkdcn.io.grid",
                "gkdcn.models",
                "gkdcn.models.registry",
            },
        ),
        ("gkdcn.models.registry", set()),
        ("gkdcn.config", {"gkdcn.errors", "gkdcn.models", "gkdcn.models.registry"}),
        ("gkdcn.compare.layout", {"gkdcn.explain", "gkdcn.explain.layout"}),
        ("gkdcn.explain.layout", set()),
        ("gkdcn.io.jsonsafe", set()),
        ("gkdcn.lazy", set()),
        ("gkdcn.runtime", {"gkdcn.errors"}),
        ("gkdcn.threads", {"gkdcn.errors", "gkdcn.runtime"}),
    ],
)
def test_leaves_stay_leaves(leaf: str, allowed: set[str]) -> None:
    """The plotting module, the run-folder layouts, the config, the model registry and the
    runtime (device, precision, threads) import nothing above the bottom floor."""
    assert _graph()[leaf] <= allowed


EXPLAIN_STEPS = {"gkdcn.explain.sites", "gkdcn.explain.maps"}
EXPLAIN_SHARED = {"gkdcn.explain.index", "gkdcn.explain.options"}


def test_explain_steps_point_down_to_the_index() -> None:
    """explain.run orchestrates the site and map steps; neither step calls the other or the
    orchestrator, and what they share (the index with its file list, the options) imports no
    step."""
    graph = _graph()
    assert graph["gkdcn.explain.run"] >= EXPLAIN_STEPS | EXPLAIN_SHARED
    for step in EXPLAIN_STEPS:
        assert not (EXPLAIN_STEPS - {step} | {"gkdcn.explain.run"}) & graph[step]
    for shared in EXPLAIN_SHARED:
        assert not (EXPLAIN_STEPS | {"gkdcn.explain.run"}) & graph[shared]


RUN_FOLDER_NAMES = {
    "run.json",
    "summary.json",
    "result.json",
    "probability.tif",
    "report.html",
    "maps.png",
    "_mean_probability.tif",
    "index.json",
    "sampling_summary.json",
    "element_ranking.png",
    "element_attribution.csv",
    "gradcam_map.tif",
}
LAYOUTS = {"gkdcn.compare.layout", "gkdcn.explain.layout"}


def test_run_folder_names_live_in_the_layouts() -> None:
    """Only RunLayout / ExplainLayout spell the file names of a run folder (no hidden names)."""
    found = []
    for module, path in _modules().items():
        if module in LAYOUTS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in RUN_FOLDER_NAMES:
                found.append(f"{module}:{node.lineno}: {node.value!r}")
    assert not found, "run-folder names outside the layouts:\n" + "\n".join(found)


def test_training_folder_names_live_in_training_outputs() -> None:
    """A training folder's file names are spelled in ``training.outputs.TRAINING_FILES`` only
    (and the model file's once more in RunLayout, whose job folders are training folders)."""
    from gkdcn.compare.layout import RunLayout
    from gkdcn.training.outputs import TRAINING_FILES

    assert TRAINING_FILES["model"] == RunLayout.MODEL
    names = set(TRAINING_FILES.values())
    found = []
    for module, path in _modules().items():
        if module in ("gkdcn.training.outputs", "gkdcn.compare.layout"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{module}:{node.lineno}: {node.value!r}")
    assert not found, "training-folder names outside training/outputs.py:\n" + "\n".join(found)


#: The rooms above the training package (floor 2's others, and floors 3 to 6).
ABOVE_TRAINING = (
    "gkdcn.predict",
    "gkdcn.evaluate",
    "gkdcn.runner",
    "gkdcn.cluster",
    "gkdcn.compare",
    "gkdcn.explain",
    "gkdcn.report",
    "gkdcn.console",
    "gkdcn.demo",
    "gkdcn.cli",
)
#: The rooms below it (floors 0 and 1), which never import training.
BELOW_TRAINING = ("gkdcn.io", "gkdcn.config", "gkdcn.errors", "gkdcn.runtime", "gkdcn.threads",
                  "gkdcn.data", "gkdcn.models")  # fmt: skip


def _in_rooms(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def test_training_sits_on_floor_two() -> None:
    """The training package imports only the floors below it (and pretraining, beside it), its
    modules import each other one way, and nothing below it imports it."""
    graph = _graph()
    training = sorted(m for m in graph if m.startswith("gkdcn.training."))
    assert {"gkdcn.training.loop", "gkdcn.training.study", "gkdcn.runtime"} <= set(graph)
    for module in training:
        above = sorted(m for m in graph[module] if _in_rooms(m, ABOVE_TRAINING))
        assert not above, f"{module} imports a room above it: {above}"
    for module, imports in graph.items():
        if _in_rooms(module, BELOW_TRAINING):
            up = sorted(m for m in imports if _in_rooms(m, ("gkdcn.training", "gkdcn.train")))
            assert not up, f"{module} (below training) imports {up}"
    # The package's own order: the windows first, the study adapters last.
    assert graph["gkdcn.training.windows"].isdisjoint(training)
    assert not [m for m in training if "gkdcn.training.study" in graph[m]]


def test_the_train_module_re_exports_the_training_package() -> None:
    """``gkdcn.train`` (for code written against the one-file trainer) names the same objects
    as the modules that define them, and defines none itself."""
    import inspect

    import gkdcn.train as train

    assert train.__all__
    for name in train.__all__:
        value = getattr(train, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__module__.startswith(("gkdcn.training.", "gkdcn.runtime")), name
    from gkdcn.training.study import train_study

    assert train.train_study is train_study


def test_the_report_does_not_import_torch_or_matplotlib() -> None:
    """``gkdcn report`` reads JSON and PNGs: importing it (and so compare.layout, which runs
    compare/__init__) must not pull in torch or matplotlib. A fresh interpreter, so modules the
    other tests imported do not count."""
    import subprocess
    import sys

    code = (
        "import sys, gkdcn.report, gkdcn.compare.layout; "
        "print(','.join(m for m in ('torch', 'matplotlib', 'gkdcn.compare.run') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_compare_exports_every_name_lazily() -> None:
    import gkdcn.compare as compare

    assert sorted(compare._LAZY) == sorted(compare.__all__)
    for name in compare.__all__:
        value = getattr(compare, name)
        assert getattr(value, "__name__", name) == name or not callable(value)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = compare.no_such_name  # type: ignore[attr-defined]


def _kind_comparisons(tree: ast.AST, kinds: set[str]) -> list[tuple[int, str]]:
    """``(line, kind)`` of every model-kind string literal that ``tree`` compares: an operand of
    ``==`` / ``!=`` / ``in`` / ``not in`` (alone or in a tuple, list or set literal), or the
    argument of ``startswith`` / ``endswith`` that is a kind's name or the start of one."""

    def literals(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [v for element in node.elts for v in literals(element)]
        return []

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, v) for v in literals(operand) if v in kinds]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
        ):
            for arg in node.args:
                found += [
                    (node.lineno, v)
                    for v in literals(arg)
                    if len(v) > 1 and any(k.startswith(v) or k.endswith(v) for k in kinds)
                ]
    return found


def test_the_kind_finder_finds_comparisons() -> None:
    code = (
        "a = kind == 'cnn'\n"
        "b = kind in ('gk-cnn', 'gk-dcn')\n"
        "c = kind.startswith('gk-')\n"
        "d = 'logistic' != kind\n"
        "e = {'cnn': 1}['cnn']\n"  # a look-up, not a comparison
        "f = name == 'other'\n"
    )
    kinds = {"cnn", "gk-cnn", "gk-dcn", "logistic"}
    assert _kind_comparisons(ast.parse(code), kinds) == [
        (1, "cnn"),
        (2, "gk-cnn"),
        (2, "gk-dcn"),
        (3, "gk-"),
        (4, "logistic"),
    ]


def test_every_model_kind_is_declared_once_in_the_registry() -> None:
    """One entry per name; what fits it lies in ``gkdcn.models`` (the floor that fits) and is
    the class its family needs; the config's default compares every kind."""
    from gkdcn.config import CompareConfig
    from gkdcn.models import registry
    from gkdcn.models.baselines import CellBaseline
    from gkdcn.models.nets import AnomalyNet

    names = [kind.name for kind in registry.MODELS]
    assert len(names) == len(set(names)), "a model kind declared twice"
    assert len({kind.label for kind in registry.MODELS}) == len(names), "two kinds, one label"
    base = {"network": AnomalyNet, "baseline": CellBaseline}
    for kind in registry.MODELS:
        assert kind.fits.startswith("gkdcn.models."), kind
        assert issubclass(registry.load_class(kind), base[kind.family]), kind
        assert kind.family == "baseline" or not kind.background, kind
        assert kind.family == "baseline" or not kind.text, kind
        assert kind.family == "network" or not (kind.deformable or kind.knowledge_guided), kind
        assert not kind.knowledge_guided or kind.needs_knowledge, kind
    assert CompareConfig().models == names


def test_no_model_kind_is_compared_outside_the_registry() -> None:
    """What a kind is (network, deformable, knowledge-guided, ...) is asked of the registry,
    never read off its name: no module compares a kind's name to a string literal."""
    from gkdcn.models import registry

    kinds = set(registry.names())
    found = []
    for module, path in _modules().items():
        if module == "gkdcn.models.registry":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{module}:{line}: {kind!r}" for line, kind in _kind_comparisons(tree, kinds)]
    assert not found, "model kinds compared outside the registry:\n" + "\n".join(found)
