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
        for implementation in ("medtune.adaptive", "medtune.anchors", "medtune.training.trainer"):
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


# The layers, bottom to top, and which layer each module sits in. A module imports only modules of its own layer and
# of the tiers below it (function-local imports count; TYPE_CHECKING imports do not, they never run). Layers that
# share a tier are siblings and never import each other: adaptive curricula, anchor estimates, the cross-fitted
# difficulty runs and free-text generation all build on training and scoring, each on its own. Every stage (a
# settings schema and its run function) is a layer of its own in the stages tier, so no stage imports another;
# a package whose face re-exports its stage (``medtune.data``, ``medtune.orders``, ``medtune.categories``) sits
# with that stage.
TIERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("artifacts",),
    ("libraries",),
    ("training",),
    ("adaptive", "anchors", "crossfit", "generation"),
    ("data stage", "base model stage", "difficulty stage", "category stage", "order stage", "training stage",
     "anchor stage", "evaluation stage"),
    ("experiments",),
    ("report",),
    ("demo",),
    ("cli",),
)

# Module → layer: ``"a.b"`` places the module ``a.b`` itself, ``"a.b.*"`` every module under it; the most specific
# entry wins (the module itself, then the longest ``.*`` prefix).
LAYERS: dict[str, str] = {
    # core: errors, files, settings, registries, plugins, the machine, the item schema
    "medtune": "core",
    "medtune.errors": "core",
    "medtune.io": "core",
    "medtune.settings": "core",
    "medtune.registry": "core",
    "medtune.plugins": "core",
    "medtune.hardware": "core",
    "medtune.schema": "core",
    # text and artifacts: the prompt and token formats, the side files of an items file, and the one reader and
    # writer of each artifact the stages pass on
    "medtune.prompts": "artifacts",
    "medtune.tokenization": "artifacts",
    "medtune.chat_format": "artifacts",
    "medtune.textbook": "artifacts",
    "medtune.factsheet": "artifacts",
    "medtune.run_record": "artifacts",
    "medtune.categories.categoryfile": "artifacts",
    "medtune.orders.orderfile": "artifacts",
    "medtune.anchors.artifact": "artifacts",
    "medtune.adaptive.decisions": "artifacts",
    "medtune.scoring.store": "artifacts",
    "medtune.training.runlog": "artifacts",
    # libraries: models, loaders, scoring, orders, difficulty, categories, metrics and statistics
    "medtune.models": "libraries",
    "medtune.data.*": "libraries",
    "medtune.scoring": "libraries",
    "medtune.scoring.*": "libraries",
    "medtune.orders.*": "libraries",
    "medtune.order_plot": "libraries",
    "medtune.difficulty": "libraries",
    "medtune.difficulty_sources": "libraries",
    "medtune.irt": "libraries",
    "medtune.bucketing": "libraries",
    "medtune.categories.*": "libraries",
    "medtune.embeddings": "libraries",
    "medtune.bertscore": "libraries",
    "medtune.factcheck": "libraries",
    "medtune.evaluation": "libraries",
    "medtune.stats": "libraries",
    "medtune.foreign_predictions": "libraries",
    # training: the entry, the loop, its methods (KnowTuning included) and their settings
    "medtune.training": "training",
    "medtune.training.*": "training",
    # what is scored and how it is loaded (a run folder's model read through its record and training's schema), for
    # the evaluation stage and the adaptive stage's reference model alike
    "medtune.model_ref": "training",
    # beside one another, above training
    "medtune.adaptive": "adaptive",
    "medtune.adaptive.*": "adaptive",
    "medtune.anchors": "anchors",
    "medtune.anchors.*": "anchors",
    "medtune.difficulty_crossfit": "crossfit",
    "medtune.generation": "generation",
    # the stages
    "medtune.data": "data stage",
    "medtune.data.stage": "data stage",
    "medtune.training.base_model": "base model stage",
    "medtune.difficulty_stage": "difficulty stage",
    "medtune.categories": "category stage",
    "medtune.categories.stage": "category stage",
    "medtune.orders": "order stage",
    "medtune.orders.stage": "order stage",
    "medtune.training.stage": "training stage",
    "medtune.adaptive.stage": "training stage",
    "medtune.anchors.stage": "anchor stage",
    "medtune.evaluation_stage": "evaluation stage",
    # above the stages
    "medtune.experiments": "experiments",
    "medtune.experiments.*": "experiments",
    "medtune.report": "report",
    "medtune.report.*": "report",
    "medtune.demo": "demo",
    "medtune.cli": "cli",
    "medtune.cli.*": "cli",
}

# Imports that still cross the layers, each to be moved away; the test fails when one of them is gone too, so the
# list only shrinks (it is empty: every import goes down).
KNOWN_CROSSINGS: set[tuple[str, str]] = set()


def layer_of(module: str) -> str | None:
    """The layer ``module`` sits in, or ``None`` when ``LAYERS`` does not place it."""
    if module in LAYERS:
        return LAYERS[module]
    prefixes = [key[:-2] for key in LAYERS if key.endswith(".*") and module.startswith(key[:-2] + ".")]
    return LAYERS[max(prefixes, key=len) + ".*"] if prefixes else None


def _tier(layer: str) -> int:
    return next(i for i, tier in enumerate(TIERS) if layer in tier)


def _crossings(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Every import from a module to one of a sibling layer or a higher tier."""
    out = set()
    for module, deps in graph.items():
        here = layer_of(module)
        for dep in deps:
            there = layer_of(dep)
            if here is None or there is None or there == here:
                continue
            if _tier(there) >= _tier(here):
                out.add((module, dep))
    return out


def test_every_layer_is_in_one_tier() -> None:
    named = [layer for tier in TIERS for layer in tier]
    assert len(named) == len(set(named))
    assert set(LAYERS.values()) == set(named)


def test_every_module_has_a_layer() -> None:
    assert sorted(m for m in _modules() if layer_of(m) is None) == []


def test_imports_go_down_the_layers() -> None:
    """A module imports its own layer or a lower tier: nothing up, nothing sideways (``KNOWN_CROSSINGS`` aside)."""
    found = _crossings(_graph())
    new = sorted(f"{m} ({layer_of(m)}) imports {d} ({layer_of(d)})" for m, d in found - KNOWN_CROSSINGS)
    assert new == [], "\n".join(new)
    assert sorted(KNOWN_CROSSINGS - found) == [], "no longer crossing: remove from KNOWN_CROSSINGS"


STAGES = TIERS[next(i for i, tier in enumerate(TIERS) if "training stage" in tier)]


def test_no_library_imports_a_stage_and_no_stage_another() -> None:
    """Below the stages nothing imports a stage module; a stage imports no other stage (each is its own layer)."""
    graph = _graph()
    below = {m for m in graph if _tier(layer_of(m) or "cli") < _tier("training stage")}
    assert sorted((m, d) for m in below for d in graph[m] if layer_of(d) in STAGES) == []
    between = {(m, d) for m in graph for d in graph[m]
               if layer_of(m) in STAGES and layer_of(d) in STAGES and layer_of(m) != layer_of(d)}
    assert sorted(between - KNOWN_CROSSINGS) == []


def test_training_imports_neither_adaptive_nor_anchors() -> None:
    """Training knows the adaptive planner and the anchor check only as ``training.hooks`` protocols: no module
    under ``medtune.training`` imports ``medtune.adaptive`` or ``medtune.anchors`` (``train`` finds the anchor check
    by name in ``training.hooks.SETTINGS_HOOKS``)."""
    graph = _graph()
    found = {(m, d) for m in graph if _within(m, "medtune.training")
             for d in graph[m] if _within(d, "medtune.adaptive", "medtune.anchors")}
    assert sorted(found - KNOWN_CROSSINGS) == []


def test_evaluation_reads_a_run_through_the_run_record() -> None:
    """The evaluation reads a run folder with ``medtune.model_ref`` (``ModelRef.from_run``), which reads it with
    ``medtune.run_record`` (an artifact reader, below training); of training they import only what a record's
    settings mean (the schema and the method registry)."""
    graph = _graph()
    assert "medtune.model_ref" in graph["medtune.evaluation_stage"]
    assert "medtune.run_record" in graph["medtune.model_ref"]
    for module in ("medtune.evaluation", "medtune.evaluation_stage", "medtune.model_ref"):
        assert {d for d in graph[module] if _within(d, "medtune.training")} <= {
            "medtune.training.config", "medtune.training.methods"}, module
    assert layer_of("medtune.run_record") == "artifacts"


def test_adaptive_knowtuning_evaluation_and_anchors_import_none_of_the_others() -> None:
    """Adaptive curricula, KnowTuning, the evaluation metrics and the anchors meet only in lower layers (KnowTuning
    is a training method, inside training; the evaluation metrics are a library the anchors may use)."""
    graph = _graph()
    groups = {"adaptive": ("medtune.adaptive",), "knowtuning": ("medtune.training.methods.knowtuning",),
              "anchors": ("medtune.anchors",), "evaluation": ("medtune.evaluation_stage",)}
    stages = {"medtune.adaptive.stage", "medtune.anchors.stage", "medtune.evaluation_stage"}
    found = set()
    for name, own in groups.items():
        others = [p for other, prefixes in groups.items() if other != name for p in prefixes]
        for module in (m for m in graph if _within(m, *own) and m not in stages):
            found |= {(module, d) for d in graph[module] if _within(d, *others)}
    assert sorted(found) == []
    knowtuning = [m for m in graph if _within(m, "medtune.training.methods.knowtuning")]
    assert not {d for m in knowtuning for d in graph[m] if _within(d, "medtune.evaluation", "medtune.evaluation_stage")}
