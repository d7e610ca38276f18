"""The base of every stage's settings schema: one pydantic model per stage, one default per field.

A stage's settings are declared once, as a subclass of :class:`Settings`; the command line builds its options
from the same class (:mod:`medtune.cli.options`) and the YAML grid validates its section of the config with it.
Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails before any work starts, and
:func:`validate_settings` turns pydantic's error into one line naming the key (and where it came from).
"""

from __future__ import annotations

from typing import Any, TypeVar

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
