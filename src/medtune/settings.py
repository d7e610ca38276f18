"""The base of every stage's settings schema: one pydantic model per stage, one default per field.

A stage's settings are declared once, as a subclass of :class:`Settings`; the command line builds its options
from the same class (:mod:`medtune.cli.options`) and the YAML grid validates its section of the config with it.
Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails before any work starts, and
:func:`validate_settings` turns pydantic's error into one line naming the key (and where it came from).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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


def section_model(name: str, settings_cls: type[Settings], *, exclude: tuple[str, ...] = (),
                  extra: dict[str, Any] | None = None, doc: str | None = None) -> type[BaseModel]:
    """A grid config section made of ``settings_cls``'s fields plus the grid's own (``extra``: name → (type, Field)).

    Each stage field becomes optional with ``None`` meaning "not set here": the stage's own schema supplies the
    default when the grid resolves a cell's settings, so a default exists once, and a preset can tell what a
    config set explicitly. The field descriptions are the stage schema's. Values are validated by the stage's
    schema when a cell's settings are resolved (the grid checks every cell before it runs any).
    """
    from pydantic import Field, create_model

    fields: dict[str, Any] = {}
    for fname, info in settings_cls.model_fields.items():
        if fname in exclude:
            continue
        default = info.get_default(call_default_factory=True)
        desc = (info.description or "").strip()
        fields[fname] = (info.annotation | None, Field(None, description=f"{desc} (default: {default})".strip()))
    fields.update(extra or {})
    model = create_model(name, __base__=GridSection, __doc__=doc or settings_cls.__doc__, **fields)
    model.stage_settings = settings_cls
    return model


class GridSection(BaseModel):
    """Base of generated grid sections: strict like the stage schemas, and able to say what it sets."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    stage_settings: ClassVar[Any] = None  # the stage schema this section mirrors (set per generated class)

    def stage_values(self) -> dict[str, Any]:
        """The stage settings this section sets explicitly (not ``None``), by field name."""
        names = set(type(self).stage_settings.model_fields) if type(self).stage_settings else set()
        return {k: v for k, v in self.model_dump().items() if k in names and v is not None}
