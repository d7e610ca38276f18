"""Where in a grid's YAML a config error is: pydantic's error locations as dotted key paths and YAML lines.

:mod:`medtune.experiments.config` validates a config and reports each error as ``file:line: key.path: message``
(``configs/x.yaml:12: training.lr_rate: unknown key``); this module holds the location arithmetic it uses: a
pydantic location cleaned of its union tags, turned into a dotted path and back, and the line of a key in the
composed YAML node tree, and the error lines made of them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError


def loc_to_path(loc: tuple[Any, ...]) -> str:
    """``("models", 0, "training", "lr")`` as the dotted path ``models[0].training.lr``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def yaml_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at ``loc``; the deepest existing ancestor if the key is absent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    line = k.start_mark.line + 1
                    nxt = v
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop pydantic's union/function tags from ``loc`` (keep only keys and indices present in the data)."""
    out: list[Any] = []
    cur = data
    for part in loc:
        present = (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and part < len(cur)
        )
        if present:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and not part.startswith(("function-", "tagged-")):
            out.append(part)  # a missing or unknown key at this level
            cur = None
        else:
            continue
    return tuple(out)


# A message that starts with the dotted path of the key it is about: ``adaptive.options: ...``.
KEY_PATH = re.compile(r"^((?:[A-Za-z_][\w-]*|\[\d+\])(?:\.[\w-]+|\[\d+\])*): (.*)$", re.DOTALL)
_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def path_to_loc(path: str) -> tuple[Any, ...]:
    """``models[0].training.lr`` (or pydantic's ``x.0.y``) back into ``("models", 0, "training", "lr")``."""
    return tuple(int(i) if i else (int(k) if k.isdigit() else k) for i, k in _PATH_PART.findall(path))


def deeper_loc(loc: tuple[Any, ...], msg: str, data: Any) -> tuple[Any, ...]:
    """``loc`` extended by a key path the message starts with (``adaptive.options: ...``) where the data has it,
    so the line is that key's and not its entry's."""
    m = KEY_PATH.match(msg)
    if m is None:
        return loc
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return loc
    out = list(loc)
    for part in path_to_loc(m[1]):
        if (isinstance(cur, dict) and part in cur) or (
                isinstance(cur, list) and isinstance(part, int) and part < len(cur)):
            out.append(part)
            cur = cur[part]
        else:
            break
    return tuple(out)


def validation_lines(exc: ValidationError, data: Any, source: str, node: yaml.Node | None) -> list[str]:
    """pydantic's errors on the config mapping ``data`` as ``source:line: key.path: message`` lines."""
    lines = []
    for err in exc.errors():
        loc = clean_loc(tuple(err["loc"]), data)
        key = loc_to_path(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        deeper = deeper_loc(loc, msg, data)
        m = KEY_PATH.match(msg)
        if m and deeper != loc and path_to_loc(m[1]) == deeper[len(loc):]:
            key, msg = loc_to_path(deeper), m[2]  # the message names a key under the error's place: that one
        line = yaml_line(node, deeper) if node is not None else None
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {key}: {msg}")
    return lines


def problem_lines(problems: list[tuple[tuple[Any, ...], str]], source: str, node: yaml.Node | None) -> list[str]:
    """Each (place in the config, ``key.path: message``) as ``source:line: key.path: message``."""
    lines = []
    for loc, msg in problems:
        line = yaml_line(node, loc) if node is not None else None
        lines.append(f"{source}:{line}: {msg}" if line else f"{source}: {msg}")
    return lines
