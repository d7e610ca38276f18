"""The base of every stage's settings schema: one pydantic model per stage, one default per field.

A stage's settings are declared once, as a subclass of :class:`Settings`; the command line builds its options
from the same class (:mod:`medtune.cli.options`) and the YAML grid validates its section of the config with it.
Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails before any work starts, and
:func:`validate_settings` turns pydantic's error into one line naming the key (and where it came from).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_serializer, model_validator

from medtune.errors import ConfigError

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """A stage's settings: strict (unknown keys rejected), validated on assignment, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def field_names(cls) -> list[str]:
        return list(cls.model_fields)


# A model validator's message that already names nested keys (``group.key: message; ...``), e.g. a settings
# group that a schema validates by hand (a plugin method's, medtune.training.config).
_NESTED_MESSAGE = re.compile(r"^[A-Za-z_]\w*(?:\.[\w\[\]]+)+: ")


def format_validation_error(exc: ValidationError, where: str = "") -> str:
    """pydantic's errors as ``where.key: message`` parts, joined by ``; ``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-")))
        key = f"{where}.{loc}" if where and loc else (where or loc or "(top level)")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
        nested = msg.split("; ")
        if not loc and all(_NESTED_MESSAGE.match(m) for m in nested):
            parts += [f"{where}.{m}" if where else m for m in nested]
            continue
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def validate_settings(cls: type[S], data: Any, where: str = "") -> S:
    """``cls.model_validate(data)`` with a :class:`ConfigError` that names the offending key."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def settings_group_class(annotation: Any) -> type[Settings] | None:
    """The schema of a field that nests a group of settings (a :class:`Settings` subclass), else ``None``."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, Settings) else None


def section_model(name: str, settings_cls: type[Settings], *, exclude: tuple[str, ...] = (),
                  extra: dict[str, Any] | None = None, doc: str | None = None,
                  groups: Callable[[], Mapping[str, type[Settings]]] | None = None,
                  normalize: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
                  nest_groups: bool = False) -> type[BaseModel]:
    """A grid config section made of ``settings_cls``'s fields plus the grid's own (``extra``: name → (type, Field)).

    Each stage field becomes optional with ``None`` meaning "not set here": the stage's own schema supplies the
    default when the grid resolves a cell's settings, so a default exists once, and a preset can tell what a
    config set explicitly. The field descriptions are the stage schema's. Values are validated by the stage's
    schema when a cell's settings are resolved (the grid checks every cell before it runs any). With
    ``nest_groups`` a field that nests a group of settings (a method's) becomes a nested section the same way (key
    by key: a preset's other keys of the group stay). ``groups`` names more groups, registered at run time (a
    plugin method's settings): the section takes them as mappings, which the stage's schema validates.
    ``normalize`` rewrites a section's mapping before it is validated (keys of an earlier version into their new
    place).
    """
    from pydantic import Field, create_model

    fields: dict[str, Any] = {}
    for fname, info in settings_cls.model_fields.items():
        if fname in exclude:
            continue
        desc = (info.description or "").strip()
        group = settings_group_class(info.annotation) if nest_groups else None
        if group is not None:
            sub = section_model(f"{name}_{fname}", group)
            fields[fname] = (sub | None, Field(None, description=f"{desc}: {group.__name__}".strip()))
            continue
        default = info.get_default(call_default_factory=True)
        fields[fname] = (info.annotation | None, Field(None, description=f"{desc} (default: {default})".strip()))
    fields.update(extra or {})
    model = create_model(name, __base__=GridSection, __doc__=doc or settings_cls.__doc__, **fields)
    model.stage_settings = settings_cls
    model.settings_groups = staticmethod(groups) if groups is not None else None
    model.normalize = staticmethod(normalize) if normalize is not None else None
    return model


class GridSection(BaseModel):
    """Base of generated grid sections: strict like the stage schemas, and able to say what it sets."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    stage_settings: ClassVar[Any] = None  # the stage schema this section mirrors (set per generated class)
    settings_groups: ClassVar[Any] = None  # the groups registered at run time, by name (see section_model)
    normalize: ClassVar[Any] = None  # rewrites the mapping before validation (see section_model)
    _groups: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _registered_groups(cls, data: Any, handler: Any) -> Any:
        """Take the groups registered at run time (a plugin method's settings), which no field declares."""
        if isinstance(data, Mapping) and cls.normalize is not None:
            data = cls.normalize(data)
        lookup = cls.settings_groups
        if lookup is None or not isinstance(data, Mapping):
            return handler(data)
        known = lookup()
        given = {k: v for k, v in data.items() if k in known and k not in cls.model_fields}
        section = handler({k: v for k, v in data.items() if k not in given})
        for key, value in given.items():
            if not isinstance(value, Mapping):
                raise ValueError(f"{key}: a mapping of {known[key].__name__} keys, got {type(value).__name__}")
        section._groups = {k: dict(v) for k, v in given.items()}
        return section

    @model_serializer(mode="wrap")
    def _dump_groups(self, handler: Any) -> dict[str, Any]:
        return {**handler(self), **self._groups}

    def stage_values(self) -> dict[str, Any]:
        """The stage settings this section sets explicitly (not ``None``), by field name; a nested group's too."""
        names = set(type(self).stage_settings.model_fields) if type(self).stage_settings else set()
        dumped = self.model_dump()
        out: dict[str, Any] = {}
        for k in type(self).model_fields:
            if k not in names:
                continue
            v = getattr(self, k)
            value = (v.stage_values() or None) if isinstance(v, GridSection) else dumped[k]
            if value is not None:
                out[k] = value
        return {**out, **self._groups}


def renamed_names(module: str, renames: Mapping[str, str], names: Mapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that still hands out a schema under the name it had before every schema was named
    ``*Settings`` (``TrainConfig`` is ``TrainSettings``), with a DeprecationWarning, so code written against the
    earlier release keeps importing for one more release."""
    def __getattr__(name: str) -> Any:
        if name in renames:
            warnings.warn(f"{module}.{name} is now {renames[name]}; the old name is removed in the next release",
                          DeprecationWarning, stacklevel=2)
            return names[renames[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
