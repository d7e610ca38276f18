"""The loader registry (:data:`LOADERS`, a :class:`medtune.registry.Registry`) and the per-record error policy
shared by every loader.

A loader is a function ``(path, *, on_error, **options) -> LoadResult``. Bad records raise
:class:`~medtune.errors.InputError` naming file, record and field; with ``on_error="skip"`` they are
collected in ``LoadResult.skipped`` instead, so a handful of bad rows among thousands can be reported
rather than silently dropped or fatal.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medtune.errors import InputError
from medtune.registry import Registry
from medtune.schema import Item, check_unique_ids

OnError = Literal["raise", "skip"]


@dataclass
class LoadResult:
    items: list[Item]
    skipped: list[InputError] = field(default_factory=list)
    # Side outputs a loader may produce (e.g. the synthetic textbook), keyed by a short name.
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoaderSpec:
    name: str
    func: Callable[..., LoadResult]
    needs_path: bool
    description: str
    # The keyword options the loader accepts, or None when it takes any (``**kwargs`` it checks itself).
    options: tuple[str, ...] | None = None

    def check_options(self, options: Iterable[str]) -> None:
        """Reject option names the loader does not take, naming them and the known ones."""
        if self.options is None:
            return
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InputError(f"unknown option(s) for {self.name}: {', '.join(unknown)} (known: {known})",
                             field=unknown[0])


LOADERS: Registry[LoaderSpec] = Registry(
    "data source", hint="a plugin module named in MEDTUNE_PLUGINS can register more")
# Parameters every loader has that are not options of the source.
_NOT_OPTIONS = ("path", "on_error")


def _signature_options(func: Callable[..., Any], extra: Iterable[str] | None) -> tuple[str, ...] | None:
    """The named keyword parameters of ``func`` plus ``extra``; None when ``func`` takes ``**kwargs`` and
    ``extra`` is None (the loader forwards them somewhere this registry cannot see)."""
    params = inspect.signature(func).parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name not in _NOT_OPTIONS]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    if takes_any and extra is None:
        return None
    return tuple(dict.fromkeys([*named, *(extra or ())]))


def register_loader(name: str, *, needs_path: bool = True, description: str = "",
                    options: Iterable[str] | None = None, replace: bool = False) -> Callable:
    """Register a loader under ``name`` (a decorator); a taken name is refused unless ``replace=True``.

    ``options``: option names the loader takes through ``**kwargs`` beyond its named parameters (``()`` when
    its ``**kwargs`` only exist to report unknown options); with it, settings can reject a misspelt option
    before anything is read.
    """

    def deco(func: Callable[..., LoadResult]) -> Callable[..., LoadResult]:
        doc = description or ((func.__doc__ or "").strip().splitlines() or [""])[0]
        spec = LoaderSpec(name, func, needs_path, doc, _signature_options(func, options))
        LOADERS.register(name, spec, replace=replace, origin=func)
        return func

    return deco


def available_loaders() -> dict[str, LoaderSpec]:
    return dict(sorted(LOADERS.items()))


def get_loader(name: str) -> LoaderSpec:
    """The loader registered as ``name``; an unknown name is a ConfigError listing the sources."""
    return LOADERS.get(name)


def load(source: str, path: str | Path | None = None, *, on_error: OnError = "raise", **options: Any) -> LoadResult:
    """Load ``source`` (a registered name) from ``path`` into validated items with unique ids."""
    spec = get_loader(source)
    spec.check_options(options)
    if spec.needs_path:
        if path is None:
            raise InputError(f"source '{source}' needs a path")
        path = Path(path)
        if not path.exists():
            raise InputError("file or folder not found", file=path)
        result = spec.func(path, on_error=on_error, **options)
    else:
        result = spec.func(path, on_error=on_error, **options)
    check_unique_ids(result.items, file=path)
    return result


class RecordCollector:
    """Apply the error policy around each record: ``with collector.record(i): ...``."""

    def __init__(self, file: str | Path, on_error: OnError, record_kind: str = "record") -> None:
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.file = file
        self.on_error = on_error
        self.record_kind = record_kind
        self.items: list[Item] = []
        self.skipped: list[InputError] = []

    def run(self, record: int | str, build: Callable[[], Item | None]) -> None:
        try:
            item = build()
        except InputError as exc:
            located = exc.located(file=self.file, record=record, record_kind=self.record_kind)
            if self.on_error == "raise":
                raise located from None
            self.skipped.append(located)
            return
        if item is not None:
            self.items.append(item)

    def result(self, **extras: Any) -> LoadResult:
        return LoadResult(self.items, self.skipped, dict(extras))


UTF8_BOM = b"\xef\xbb\xbf"


def read_bytes(path: Path) -> bytes:
    """A file's bytes; a folder or an unreadable file is an error naming it (not a traceback)."""
    if path.is_dir():
        raise InputError("expected a file, got a folder", file=path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", file=path) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any | InputError]]:
    """Yield (line number, parsed object or the error for that line); blank lines are skipped.

    Errors are yielded rather than raised so the caller's error policy decides; invalid UTF-8 is
    reported with its line number. A leading byte-order mark and CRLF line ends (as Windows tools write
    them) are accepted.
    """
    import json

    data = read_bytes(path).removeprefix(UTF8_BOM)
    if not data.strip():
        raise InputError("file is empty", file=path)
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield lineno, InputError(f"invalid UTF-8 at byte {exc.start}", file=path, record=lineno,
                                     record_kind="line")
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            yield lineno, InputError(f"invalid JSON ({exc.msg}, column {exc.colno}); truncated line?",
                                     file=path, record=lineno, record_kind="line")


def read_text_utf8(path: Path) -> str:
    """Read a whole file as UTF-8 (without a leading byte-order mark), naming the line of the first invalid byte."""
    data = read_bytes(path).removeprefix(UTF8_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=path, record=line, record_kind="line") from None
    if not text.strip():
        raise InputError("file is empty", file=path)
    return text
