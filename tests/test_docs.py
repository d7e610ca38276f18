"""The documentation is checked like code: its links resolve, its examples run, and it speaks of the project only.

A guide whose example no longer runs against the current API, or whose link points at a file that moved, is
worse than none: a reader trusts it. So the links of the Markdown files are resolved (files and heading
anchors), the Python blocks of docs/EXTENDING.md are compiled, and each plugin example is executed and its
own test run, against the real registries (a copy of each, so the suite's registries stay as they were).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medtune.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
EXTENDING = ROOT / "docs" / "EXTENDING.md"

# Words about how the project was made, which mean nothing to a user: work-item numbers, the briefing a change
# was made from, a design document that is not shipped.
PROCESS_WORDS = re.compile(r"[Ii]ssue [0-9]+|\b[Tt]he brief\b|DESIGN\.md|\b[Tt]he design says\b")
SCANNED = ("docs", "README.md", "configs", "benchmarks", "src")
TEXT_SUFFIXES = frozenset({".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".json", ".sh",
                           ".html", ".css", ".jinja", ".j2", ".rst"})
SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache"})

MARKDOWN = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "configs" / "README.md",
            ROOT / "benchmarks" / "README.md")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# ----------------------------------------------------------------------------------------------------------
# Process words


def text_files() -> Iterator[Path]:
    for entry in SCANNED:
        path = ROOT / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and p.suffix in TEXT_SUFFIXES and not (SKIPPED_DIRS & set(p.parts)) \
                        and not any(part.endswith(".egg-info") for part in p.parts):
                    yield p


def test_no_file_speaks_of_how_the_project_was_made():
    places = []
    for path in text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            for match in PROCESS_WORDS.finditer(line):
                places.append(f"{path.relative_to(ROOT)}:{lineno}: '{match.group(0)}' in: {line.strip()[:120]}")
    assert not places, ("words about how the project was made, meaningless to a user (say what the reference "
                        "means instead):\n" + "\n".join(places))


def test_the_process_words_pattern_catches_them_and_spares_an_upstream_bug_reference():
    for text in ("see DESIGN.md", "(issue 3)", "Issue 12 asked", "as the brief defines", "the design says so"):
        assert PROCESS_WORDS.search(text), text
    for text in ("reported as medmcqa/medmcqa issue #9", "a brief pause", "designed to"):
        assert not PROCESS_WORDS.search(text), text


# ----------------------------------------------------------------------------------------------------------
# Links


def heading_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = heading_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    """Link targets outside code (fenced blocks and inline code may hold brackets that are not links)."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not SCHEME.match(t)]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file ({dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_links_and_catches_a_broken_one(tmp_path):
    """The check above must be able to fail: a page with one good and one broken link and anchor."""
    (tmp_path / "other.md").write_text("# Some Title: here\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#some-title-here) [bad](missing.md) [no anchor](other.md#nope) "
                    "`[code](not-a-link.md)` [web](https://example.org/x)\n```\n[x](in-a-fence.md)\n```\n")
    assert relative_links(page) == ["other.md#some-title-here", "missing.md", "other.md#nope"]
    assert anchors(tmp_path / "other.md") == {"some-title-here"}


# ----------------------------------------------------------------------------------------------------------
# The examples of docs/EXTENDING.md


def python_blocks() -> dict[str, str]:
    """The guide's Python blocks by the file name on their first line (``# medtune_x.py``)."""
    blocks = re.findall(r"^```python\n(.*?)^```", EXTENDING.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    named = {}
    for i, block in enumerate(blocks):
        first = block.splitlines()[0] if block.strip() else ""
        named[first.removeprefix("# ").strip() if first.startswith("# ") else f"block {i + 1}"] = block
    return named


def test_every_python_block_of_the_guide_compiles():
    blocks = python_blocks()
    assert len(blocks) >= 8  # four plugins and their tests
    for name, block in blocks.items():
        compile(block, f"{EXTENDING.relative_to(ROOT)} ({name})", "exec")


# (plugin module, its test file, registry module, registry attribute, the registered name)
EXAMPLES = [
    ("medtune_mixed_buckets", "tests/test_mixed_buckets.py", "medtune.orders.strategies", "STRATEGIES",
     "mixed-buckets"),
    ("medtune_quiz_loader", "tests/test_quiz_loader.py", "medtune.data.registry", "LOADERS", "quiz"),
    ("medtune_norm_only", "tests/test_norm_only.py", "medtune.training.methods.base", "_REGISTRY", "norm-only"),
    ("medtune_longest_option", "tests/test_longest_option.py", "medtune.scoring.backends", "BACKENDS",
     "longest-option"),
    ("medtune_word_count", "tests/test_word_count.py", "medtune.difficulty_sources", "SOURCES", "word-count"),
]


def import_example(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Run the guide's module ``name`` as the module ``name`` (importable by the example's test)."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(python_blocks()[f"{name}.py"], f"docs/EXTENDING.md ({name}.py)", "exec"), module.__dict__)
    return module


def run_example_tests(test_file: str, tmp_path: Path) -> list[str]:
    namespace: dict[str, Any] = {"__name__": "docs_example_test"}
    exec(compile(python_blocks()[test_file], f"docs/EXTENDING.md ({test_file})", "exec"), namespace)
    ran = []
    for fname, func in namespace.items():
        if fname.startswith("test_") and callable(func):
            fixtures = {"tmp_path": tmp_path}
            func(**{p: fixtures[p] for p in inspect.signature(func).parameters})
            ran.append(fname)
    return ran


@pytest.mark.parametrize(("module", "test_file", "registry_module", "attr", "registered"), EXAMPLES,
                         ids=[e[0] for e in EXAMPLES])
def test_each_plugin_example_registers_its_name_and_passes_its_own_test(
        module, test_file, registry_module, attr, registered, tmp_path, monkeypatch):
    import importlib

    registry_mod = importlib.import_module(registry_module)
    registry = getattr(registry_mod, attr)
    # Without the name: the example registers it, and the suite's registry is left as it was.
    if isinstance(registry, Registry):
        scope = registry.scoped(without=[registered])
    else:
        monkeypatch.setattr(registry_mod, attr, {k: v for k, v in registry.items() if k != registered})
        scope = contextlib.nullcontext()
    with scope:
        import_example(module, monkeypatch)
        assert registered in getattr(registry_mod, attr)
        assert run_example_tests(test_file, tmp_path), f"{test_file} of the guide has no test function"


def test_the_strategy_example_is_known_to_the_order_stage_settings(monkeypatch):
    """What the CLI and a grid go through: the order settings accept the plugin's name and parse its option."""
    from medtune.errors import ConfigError
    from medtune.orders import OrderSettings, strategies
    from medtune.settings import validate_settings

    with strategies.STRATEGIES.scoped(without=["mixed-buckets"]):
        with pytest.raises(ConfigError, match="unknown strategy 'mixed-buckets'"):
            validate_settings(OrderSettings, {"strategy": "mixed-buckets", "seed": 0})
        import_example("medtune_mixed_buckets", monkeypatch)
        _use_the_strategy_example()


def _use_the_strategy_example() -> None:
    from medtune.errors import ConfigError
    from medtune.orders import OrderItem, OrderSettings, build_order
    from medtune.settings import validate_settings

    given = {"strategy": "mixed-buckets", "seed": 0, "options": {"start": "medium"}}
    settings = validate_settings(OrderSettings, given)
    assert settings.options == {"start": "medium"}
    with pytest.raises(ConfigError, match="start must be one of"):
        validate_settings(OrderSettings, {"strategy": "mixed-buckets", "seed": 0, "options": {"start": "soon"}})
    items = [OrderItem(f"q{i}", bucket=("easy", "medium", "hard")[i % 3]) for i in range(6)]
    order = build_order(items, "mixed-buckets", 0, **settings.options)["epochs"][0]
    assert [it.bucket for it in sorted(items, key=lambda it: order.index(it.id))] == ["medium", "hard", "easy"] * 2


def test_the_loader_example_is_known_to_the_data_stage(tmp_path, monkeypatch):
    """The data stage (what `medtune data load` and a grid's datasets call) reads the plugin's source."""
    import json

    from medtune.data import DataSettings, registry, run_data
    from medtune.schema import read_items

    path = tmp_path / "export.jsonl"
    rows = [{"q": f"Q{i}?", "choices": ["a", "b", "c"], "correct": "ABC"[i % 3], "topic": "t"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with registry.LOADERS.scoped(without=["quiz"]):
        import_example("medtune_quiz_loader", monkeypatch)
        summary = run_data(DataSettings(source="quiz", path=str(path), options={"split": "test"}), tmp_path / "out")
    assert summary["splits"] == {"test": 4}
    items = read_items(tmp_path / "out" / "items.parquet")
    assert [it.answer for it in items] == [0, 1, 2, 0] and items[0].id == "quiz-test-1"


# ----------------------------------------------------------------------------------------------------------
# The import directions docs/ARCHITECTURE.md states


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (imports inside functions count too)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def offending_imports(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(ROOT)} imports {name}"
            for p in files for name in sorted(imported_modules(p))
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


def test_the_import_directions_of_the_architecture_hold():
    src = ROOT / "src" / "medtune"
    upper = ("cli", "demo.py", "report", "experiments")  # above the stages: CLI, demo, report, grid
    stages = [p for p in sorted(src.rglob("*.py")) if p.relative_to(src).parts[0] not in upper]
    found = offending_imports(stages, ("medtune.cli", "medtune.demo", "medtune.report", "medtune.experiments"))
    found += offending_imports(sorted((src / "experiments").rglob("*.py")),
                               ("medtune.cli", "medtune.demo", "medtune.report"))
    # The two exceptions ARCHITECTURE.md states, both through the scorer's public interface
    # (medtune.scoring.backends) and nothing else of scoring: KnowTuning ranks facts by the base model's perplexity,
    # the preference stage scores chosen and rejected answers, and training.scores scores the model being trained
    # (an adaptive decision point, the anchor check).
    allowed = (str((src / "training" / "methods" / "knowtuning").relative_to(ROOT)),
               str((src / "training" / "methods" / "preference.py").relative_to(ROOT)),
               str((src / "training" / "scores.py").relative_to(ROOT)))
    found += [f for f in offending_imports(sorted((src / "training").rglob("*.py")), ("medtune.scoring",))
              if not (f.startswith(allowed) and f.endswith(" medtune.scoring.backends"))]
    found += offending_imports(sorted((src / "scoring").rglob("*.py")), ("medtune.training",))
    found += offending_imports(sorted((src / "orders").rglob("*.py")),
                               ("torch", "transformers", "peft", "medtune.models", "medtune.training",
                                "medtune.scoring"))
    assert not found, "imports against docs/ARCHITECTURE.md (Which way imports run):\n" + "\n".join(found)
