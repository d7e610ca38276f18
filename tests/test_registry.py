"""The one registry every extension point uses: names, collisions, unknown names, lazy built-ins, plugins."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from medtune import plugins
from medtune.errors import ConfigError
from medtune.registry import Registry, check_name, same_definition


def shout(text: str) -> str:
    return text.upper()


def whisper(text: str) -> str:
    return text.lower()


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin module from the environment, so a registry's first read imports nothing of the machine's."""
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)


@pytest.mark.parametrize("name", ["hf", "openai", "vllm", "medqa", "synthetic-qa", "self-paced", "norm-only",
                                  "longest-option", "missing_inputs", "qwen2.5", "l2"])
def test_the_name_rule_takes_every_existing_and_documented_name(name: str) -> None:
    assert check_name(name, "thing") == name


@pytest.mark.parametrize("name", ["Bad Name", "LoRA", "a:b", "", "-x", "2x", "a b", None])
def test_the_name_rule_refuses_what_cannot_be_typed_as_is(name: object) -> None:
    with pytest.raises(ConfigError, match=r"widget name .* must be lower-case letters, digits"):
        Registry[object]("widget").register(name, object())  # type: ignore[arg-type]


def test_a_second_object_under_a_taken_name_names_both_registrants(no_plugins: None) -> None:
    reg = Registry[object]("widget")
    reg.register("loud", shout)
    with pytest.raises(ConfigError) as err:
        reg.register("loud", whisper)
    message = str(err.value)
    assert message == (f"widget 'loud' is already registered by {__name__}.shout; {__name__}.whisper registers it "
                       "again (pass replace=True to override it)")
    assert reg.get("loud") is shout


def test_replace_overrides_and_keeps_the_place_in_the_order(no_plugins: None) -> None:
    reg = Registry[object]("widget")
    reg.register("loud", shout)
    reg.register("quiet", whisper)
    assert reg.register("loud", whisper, replace=True) is whisper
    assert reg.get("loud") is whisper and reg.names() == ["loud", "quiet"]


def test_the_same_definition_again_is_a_repeat_not_a_collision(no_plugins: None) -> None:
    reg = Registry[object]("widget")
    reg.register("loud", shout)
    reg.register("loud", shout)
    again = types.FunctionType(shout.__code__, shout.__globals__, "shout")  # its module imported a second time
    again.__qualname__, again.__module__ = shout.__qualname__, shout.__module__
    assert same_definition(shout, again) and not same_definition(shout, whisper)
    reg.register("loud", again)
    assert reg.get("loud") is again
    # one registrant may wrap another object: the registrant is what ``origin`` names
    reg.register("wrapped", {"func": "first"}, origin=shout)
    reg.register("wrapped", {"func": "second"}, origin=shout)
    with pytest.raises(ConfigError, match=r"already registered by .*shout; .*whisper registers it again"):
        reg.register("wrapped", {"func": "third"}, origin=whisper)


def test_an_unknown_name_lists_the_names_and_suggests_the_closest(no_plugins: None) -> None:
    reg = Registry[object]("scoring backend", hint="a plugin module named in MEDTUNE_PLUGINS can register more")
    for name in ("openai", "hf", "vllm"):
        reg.register(name, shout)
    with pytest.raises(ConfigError) as err:
        reg.get("opneai")
    assert str(err.value) == ("unknown scoring backend 'opneai'; did you mean 'openai'? (registered: hf, openai, "
                              "vllm); a plugin module named in MEDTUNE_PLUGINS can register more")
    with pytest.raises(ConfigError, match=r"^unknown scoring backend 'zzz' \(registered: hf, openai, vllm\);"):
        reg.get("zzz")
    where = reg.unknown("nosuch", where=" in model spec 'nosuch:x'", hint="")
    assert str(where) == "unknown scoring backend 'nosuch' in model spec 'nosuch:x' (registered: hf, openai, vllm)"
    assert "did you mean" not in str(reg.unknown("opneai", suggest=False))  # where the hint names the real fix
    assert "nosuch" not in reg and "hf" in reg and list(reg) == ["openai", "hf", "vllm"] and len(reg) == 3


def _lazy_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """A real module file whose every import appends to ``sys.registry_test_imports``."""
    (tmp_path / f"{name}.py").write_text(
        "import sys\n"
        "sys.registry_test_imports = [*getattr(sys, 'registry_test_imports', []), __name__]\n"
        "def build(text):\n    return text * 2\n"
        "OTHER = 'other'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "registry_test_imports", [], raising=False)
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_builtins_are_imported_on_first_use_and_once(no_plugins: None, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    _lazy_module(monkeypatch, tmp_path, "registry_lazy_builtin")
    reg = Registry[object]("widget", builtins={"double": "registry_lazy_builtin:build",
                                               "other": "registry_lazy_builtin:OTHER"})
    assert reg.names() == ["double", "other"] and "double" in reg
    assert sys.registry_test_imports == []  # listing names imports nothing
    first = reg.get("double")
    assert first("ab") == "abab" and reg.get("double") is first and reg.get("other") == "other"
    assert sys.registry_test_imports == ["registry_lazy_builtin"]
    assert reg.names() == ["double", "other"]  # a resolved built-in keeps its place
    # A taken name gets one message, whether or not the built-in has been imported yet.
    unloaded = Registry[object]("widget", builtins={"double": "registry_lazy_builtin:build"})
    messages = []
    for registry in (unloaded, reg):
        with pytest.raises(ConfigError, match=r"widget 'double' is already registered by "
                                              r"registry_lazy_builtin\.build; .*shout registers it again") as caught:
            registry.register("double", shout)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    override = Registry[object]("widget", builtins={"double": "registry_lazy_builtin:build"})
    override.register("double", shout, replace=True)
    assert override.get("double") is shout


def test_scoped_restores_the_registry(no_plugins: None) -> None:
    reg = Registry[object]("widget")
    reg.register("loud", shout)
    with reg.scoped(without=["loud"]):
        assert "loud" not in reg
        reg.register("loud", whisper)
        reg.register("extra", whisper)
    assert reg.items() == [("loud", shout)]
    reg.unregister("loud")
    assert reg.names() == []
    with pytest.raises(ConfigError, match="unknown widget 'loud'"):
        reg.unregister("loud")


HOST = "registry_test_host"


def test_a_plugin_from_an_entry_point_is_there_on_the_first_read(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """A package installed with a ``medtune.plugins`` entry point: its module registers on the first lookup."""
    reg = Registry[object]("widget")
    host = types.ModuleType(HOST)
    host.REGISTRY = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, HOST, host)
    (tmp_path / "registry_test_plugin.py").write_text(
        f"from {HOST} import REGISTRY\n\ndef make(text):\n    return '<' + text + '>'\n\n"
        "REGISTRY.register('from-plugin', make)\n")
    dist = tmp_path / "registry_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: registry-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\ndemo = registry_test_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delitem(sys.modules, "registry_test_plugin", raising=False)
    reg.register("built-in", shout)  # registering reads nothing: the plugin is not imported yet
    assert "registry_test_plugin" not in sys.modules
    assert reg.get("from-plugin")("x") == "<x>"
    assert reg.names() == ["built-in", "from-plugin"] and "registry_test_plugin" in plugins.loaded_plugins()
    sys.modules.pop("registry_test_plugin")
