"""The package's import graph: no cycles, and the command line holds no stage logic.

Imports run one way, down the flow: the CLI, the demo, the report and the experiment runner import the stages,
stages import ``schema``/``prompts``/``tokenization``/``models`` as they need, training and scoring share
``tokenization`` and never import each other, and ``orders`` imports no model code. Imports inside functions count
(a lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` do not count for the direction of the
layers (they never run), but they do for circles: no two modules import each other in any way. And a public
function or class is defined in one module only.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "medtune").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: Path, known: set[str], *, type_checking: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = set() if type_checking else {
        id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("medtune")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("medtune"):
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    out.add(sub if sub in known else module)
    return {m for m in out if m in known and m != name}


def _graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module → the medtune modules it imports; ``type_checking``: those imported only for type checkers too."""
    modules = _modules()
    return {name: _imports(name, path, set(modules), type_checking=type_checking) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reaches(graph: dict[str, set[str]], start: str, prefix: str) -> list[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in graph.get(v, ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return sorted(m for m in seen if m == prefix or m.startswith(prefix + "."))


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_import_circle_even_for_type_checkers() -> None:
    """No circle anywhere in ``medtune``, counting imports inside functions and under TYPE_CHECKING: a module that
    needs another's name at type-checking time only would still tie the two together for a reader and a refactor.
    In training, the settings schema (``config``) and the method specs share ``method_settings`` (the settings
    groups and the method registry) instead of importing each other, so a method module can import the schema at
    run time; in the report, every table, figure and section module reads the run through ``report.results``,
    and only ``report.write`` puts them together."""
    graph = _graph(type_checking=True)
    assert _cycles(graph) == []
    assert _reaches(graph, "medtune.training.config", "medtune.training.methods") == []
    assert _reaches(graph, "medtune.training.method_settings", "medtune.training.methods") == []


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# Above the stages, top down: the command line, the demo (data, grid and report in one run), the report of a run,
# the grid.
UPPER = ("medtune.cli", "medtune.demo", "medtune.report", "medtune.experiments")


def test_imports_run_down_the_flow() -> None:
    graph = _graph()
    stages = [m for m in graph if not _within(m, *UPPER)]
    for module in stages:
        assert not {d for d in graph[module] if _within(d, *UPPER)}, module
    # The grid never reads a report (the report reads what a grid wrote), and neither knows the CLI or the demo.
    for module in (m for m in graph if _within(m, "medtune.experiments")):
        assert not {d for d in graph[module] if _within(d, "medtune.cli", "medtune.demo", "medtune.report")}, module
    for module in (m for m in graph if _within(m, "medtune.report")):
        assert not {d for d in graph[module] if _within(d, "medtune.cli", "medtune.demo")}, module
    for module in (m for m in graph if m.startswith("medtune.scoring")):
        assert not {d for d in graph[module] if d.startswith("medtune.training")}, module
    for module in (m for m in graph if m.startswith("medtune.orders")):
        assert not {d for d in graph[module]
                    if d.startswith(("medtune.training", "medtune.scoring", "medtune.models"))}, module
    assert _reaches(graph, "medtune.orders", "medtune.models") == []


def test_no_cli_module_holds_stage_logic() -> None:
    """A CLI module parses arguments and calls stage functions: it never touches torch, models or the store."""
    for path in (SRC / "medtune" / "cli").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        forbidden = {m for m in imported if m.split(".")[0] in ("torch", "transformers", "peft")
                     or m in ("medtune.models", "medtune.experiments.store", "medtune.experiments.pipeline",
                              "medtune.scoring.engine", "medtune.training.trainer")}
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


def test_the_training_loop_knows_its_hooks_only_as_protocols() -> None:
    """The loop calls the adaptive planner and the in-training anchor check through ``training.hooks``: neither it
    nor anything it imports reaches their implementations (``train()`` plugs them in)."""
    graph = _graph()
    for module in ("medtune.training.loop", "medtune.training.placement", "medtune.training.hooks"):
        for implementation in ("medtune.adaptive", "medtune.anchors", "medtune.training.anchor_check",
                               "medtune.training.trainer"):
            assert _reaches(graph, module, implementation) == [], (module, implementation)


def _defined(body: list[ast.stmt]) -> set[str]:
    """The functions and classes a module defines at its top level (inside top-level ``if``/``try``/``with`` too)."""
    out: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                out |= _defined(block)
            for handler in getattr(node, "handlers", []):
                out |= _defined(handler.body)
    return out


def test_no_public_name_is_defined_in_two_modules() -> None:
    """A public function or class is defined in one module: another module that needs it imports it (a re-export is
    fine), and two different things have two names, so a name tells a reader and a grep which one is meant."""
    where: dict[str, list[str]] = {}
    for module, path in sorted(_modules().items()):
        for name in _defined(ast.parse(path.read_text(encoding="utf-8")).body):
            if not name.startswith("_"):
                where.setdefault(name, []).append(module)
    shared = {name: modules for name, modules in sorted(where.items()) if len(modules) > 1}
    assert not shared, "defined in more than one module: " + "; ".join(
        f"{name} ({', '.join(modules)})" for name, modules in shared.items())
