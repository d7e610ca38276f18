"""Atomic file writes, durable JSON-lines logs and content hashes.

Every artifact is written to a temporary file in the destination folder and renamed into place, so an
interrupted job never leaves a half-written file that a later stage would trust. Logs that grow during a run
(decisions, in-training checks) are appended one fsynced line at a time: a kill leaves at most a cut last line,
which :func:`read_jsonl_log` skips, and on resume :func:`keep_jsonl_log` rewrites them atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def check_file_output(path: str | Path, option: str | None = None) -> Path:
    """Refuse an existing folder where a file is to be written, before any work is done.

    Renaming a file over a folder fails only at the end (``IsADirectoryError``), after the work is lost; the user
    needs one line naming the path (and the option that gave it).
    """
    path = Path(path)
    if path.is_dir():
        what = f"{option} {path}" if option else str(path)
        raise _input_error(f"{what}: is a folder; give a file path")
    return path


def check_folder_output(path: str | Path, option: str | None = None) -> Path:
    """Refuse an existing file (or a file among its parents) where a folder is to be written, before any work."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            what = f"{option} {path}" if option else str(path)
            where = "" if p == path else f" ({p} is a file)"
            raise _input_error(f"{what}: is a file{where}; give a folder path")
    return path


def require_file(path: str | Path) -> Path:
    """An input that must be a file: missing or a folder is an error naming it (a folder is not 'not found')."""
    from medtune.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, expected a file", file=path)
    if not path.exists():
        raise InputError("file not found", file=path)
    return path


def _input_error(message: str):
    from medtune.errors import InputError

    return InputError(message)


def _clean_stale(target: Path, kinds: tuple[str, ...]) -> None:
    """Remove ``.NAME.<kind>-PID…`` leftovers of a killed earlier run (its process is gone) beside ``target``."""
    for kind in kinds:
        for stale in target.parent.glob(f".{target.name}.{kind}-*"):
            if stale.name.endswith(PARTIAL):
                continue  # not stale: a resumable run's partial results
            if not _left_by_a_dead_run(stale):
                continue  # this process or another live run is writing it right now
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def _left_by_a_dead_run(path: Path) -> bool:
    m = re.search(r"\.(?:tmp|old)-(\d+)", path.name)
    return m is not None and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PARTIAL = "tmp-partial"


@contextlib.contextmanager
def atomic_folder(target: str | Path, option: str | None = None, *, resumable: bool = False,
                  owns: Sequence[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target`` to build a folder output in; on success swap it in.

    The swap renames the old ``target`` away (``.NAME.old-PID``), the new one into place, and only then removes
    the old one, so at every instant ``target`` is the complete old output or the complete new one (a kill between
    the two renames leaves the old one under its ``.old`` name, restored by the next run). On an error the
    temporary folder (``.NAME.tmp-PID``) is removed and ``target`` is untouched. An existing *file* at ``target``
    is refused before anything is done; leftovers of a killed earlier run are cleaned up first.

    ``resumable``: the work streams partial results into the folder and a rerun picks them up (scoring), so the
    temporary folder has a fixed name (``.NAME.tmp-partial``), is reused by the next run, and is kept after a
    failure or kill when it holds anything; it is removed once the new output is in place.

    ``owns``: the names the command writes into ``target`` (in the order they are to appear, the one a reader
    trusts last), for a command whose output folder may be shared with other files (``evaluate run -o RUN``).
    While ``target`` holds nothing else the whole folder is swapped; otherwise nothing else in it is ever
    removed: the new files are renamed in one by one, each whole. Without ``owns`` the folder is the command's
    alone, so the current folder (or one holding it) is refused.
    """
    given = Path(target)
    check_folder_output(given, option)
    target = Path(os.path.abspath(given))
    if owns is None and (Path.cwd() == target or target in Path.cwd().parents):
        what = f"{option} {given}" if option else str(given)
        raise _input_error(f"{what}: is the current folder or holds it; give a folder of its own")
    target.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = target.with_name(f".{target.name}.{PARTIAL if resumable else f'tmp-{pid}'}")
    old = target.with_name(f".{target.name}.old-{pid}")
    _restore_old(target)
    _clean_stale(target, ("tmp", "old"))
    if tmp.exists() and not (resumable and tmp.is_dir()):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    tmp.mkdir(exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if not (resumable and any(tmp.iterdir())):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if owns is not None and target.is_dir() and any(not _owned(e.name, owns) for e in target.iterdir()):
        rank = {name: i for i, name in enumerate(owns)}
        for entry in sorted(tmp.iterdir(), key=lambda e: rank.get(e.name, -1)):
            os.replace(entry, target / entry.name)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if old.exists():  # an earlier swap of this same process that was cut short
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _owned(name: str, owns: Sequence[str]) -> bool:
    """``name`` is one of the command's outputs or a hidden file beside one (``.predictions.parquet.part.jsonl``)."""
    return name in owns or any(name.startswith(f".{o}.") for o in owns)


def _restore_old(target: Path) -> None:
    """A kill between the swap's two renames leaves no ``target`` but its ``.old`` copy: put that back."""
    if target.exists():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in reversed(olds):
        if old.is_dir() and _left_by_a_dead_run(old):
            os.replace(old, target)
            return


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it.

    An existing folder at ``path`` is refused up front (a rename over it would fail after the work is done). The
    temporary file is ``.NAME.tmp-PID-…``: one left by a killed earlier run is removed by the next write.
    """
    path = check_file_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path, ("tmp",))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=suffix or "", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def write_figure_png_svg(fig: Any, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``path`` with a ``.png`` suffix and beside it as ``.svg``, each atomically.

    SVG text stays text (searchable, editable, small) rather than glyph outlines. Closes the figure.
    """
    import matplotlib.pyplot as plt

    png = Path(path).with_suffix(".png")
    written = []
    for target, fmt in [(png, "png"), (png.with_suffix(".svg"), "svg")]:
        with atomic_path(target, suffix=f".{fmt}") as tmp, plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:length]


def read_parquet_table(path: str | Path):  # -> pyarrow.Table
    """Read a Parquet artifact, turning a missing or unreadable file into an error that names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medtune.errors import InputError

    path = require_file(path)
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=path) from None


def append_jsonl_durable(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced: complete on disk before the caller goes on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl_log(path: str | Path, required: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a cut last line (a kill while writing) is skipped, any other bad line —
    not JSON, not an object, a ``required`` key missing — is an ``InputError`` naming the line (``what``: the
    record's name in the message, e.g. "a decision")."""
    from medtune.errors import InputError

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise InputError("not valid JSON", file=path, record=i, record_kind="line") from None
        if not isinstance(rec, dict):
            raise InputError(f"{what} must be a JSON object", file=path, record=i, record_kind="line")
        for key in required:
            if key not in rec:
                raise InputError(f"missing '{key}'", file=path, record=i, field=key, record_kind="line")
        records.append(rec)
    return records


def keep_jsonl_log(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite a JSON-lines log atomically with ``records`` only (those still valid on resume); returns them."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


# ----------------------------------------------------------------------------------------------------------
# A main file with side files (items.parquet + items.textbook.txt + items.facts.json), replaced as one set

SIDE_RECORD_KEY = b"medtune.side_files"
_ABSENT = ".absent"


def side_files_record(main: str | Path) -> dict[str, str | None] | None:
    """The side files a Parquet main file was written with: key → SHA-256 (None: it had none of that kind).

    None when ``main`` is missing, unreadable or carries no record (written before records, or by a writer that
    does not write a set); then nothing can be checked and side files are read as they are.
    """
    import pyarrow.parquet as pq

    main = Path(main)
    if not main.is_file():
        return None
    try:
        raw = (pq.read_schema(main).metadata or {}).get(SIDE_RECORD_KEY)
        record = json.loads(raw) if raw is not None else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _side_backups(side: Path) -> list[Path]:
    """Copies of a side file (``.NAME.old-PID``) or markers that there was none (``.NAME.old-PID.absent``) kept by
    a set replacement until its main file is in; oldest first."""
    backups = [p for p in side.parent.glob(f".{side.name}.old-*") if p.is_file()]
    return sorted(backups, key=lambda p: (p.stat().st_mtime, p.name))


def resolve_side_file(side: str | Path, record: Mapping[str, str | None] | None, key: str) -> Path | None:
    """The file holding the side file ``side`` that belongs to its main file, or None when none belongs.

    A set replacement renames the new side files in before the main file, keeping the old ones as backups until
    the main file is in; a kill in between leaves new side files beside the old main file. The main file's
    ``record`` (:func:`side_files_record`) says which content belongs: ``side`` when its hash matches, else the
    backup that matches. Without a record (an older main file) a backup left behind means the main file never got
    in, so the backup is the one. A side file that matches neither is an :class:`~medtune.errors.InputError`:
    reading it with a main file it was not written with would mix two outputs.
    """
    side = Path(side)
    if side.is_dir():
        return side  # the reader names the wrong kind
    backups = _side_backups(side)
    if record is None or key not in record:
        if backups:
            return None if backups[0].name.endswith(_ABSENT) else backups[0]
        return side if side.exists() else None
    want = record[key]
    if want is None:
        return None
    if side.exists() and sha256_file(side) == want:
        return side
    for backup in backups:
        if not backup.name.endswith(_ABSENT) and sha256_file(backup) == want:
            return backup
    if not side.exists():
        return None
    from medtune.errors import InputError

    raise InputError("does not belong to the file beside it (changed since, or left by a killed run); write "
                     "them again together", file=side)


def _recover_side(side: Path, record: Mapping[str, str | None] | None, key: str) -> None:
    """Put back the side file of the main file in place after a killed set replacement, and drop its backups."""
    dead = [b for b in _side_backups(side) if _left_by_a_dead_run(b)]
    if not dead:
        return
    from medtune.errors import InputError

    try:
        keep = resolve_side_file(side, record, key)
    except InputError:  # matches nothing: the set is being replaced anyway
        keep = side
    if keep is None:
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
    elif keep != side:
        os.replace(keep, side)
    drop_side_backups(side)


def drop_side_backups(side: str | Path) -> None:
    """Remove the backups of ``side`` left by dead runs: called when ``side`` itself is written anew."""
    for backup in _side_backups(Path(side)):
        if _left_by_a_dead_run(backup):
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()


def _back_up(side: Path) -> Path:
    """Keep the current ``side`` (a hard link, else a copy) or a marker that there is none, until the main file is
    in."""
    backup = side.with_name(f".{side.name}.old-{os.getpid()}")
    if not side.exists():
        backup = backup.with_name(backup.name + _ABSENT)
        backup.write_bytes(b"")
        return backup
    with contextlib.suppress(FileNotFoundError):
        backup.unlink()
    try:
        os.link(side, backup)
    except OSError:
        tmp = backup.with_name(f".{side.name}.tmp-{os.getpid()}-copy")
        shutil.copy2(side, tmp)
        os.replace(tmp, backup)
    return backup


def _put_back(side: Path, backup: Path) -> None:
    if backup.name.endswith(_ABSENT):
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
        backup.unlink()
    else:
        os.replace(backup, side)


@contextlib.contextmanager
def atomic_file_set(main: str | Path, sides: Mapping[str, str | Path],
                    suffix: str | None = None) -> Iterator[tuple[Path, dict[str, Path]]]:
    """Yield temporary paths for ``main`` and its ``sides`` (key → path); on success replace the set as one.

    The body writes the main file and those side files the new set has (a side temporary path left unwritten:
    the new set has no such file), recording the side files' hashes in the main file (:data:`SIDE_RECORD_KEY`).
    Then each side file is backed up and renamed in, the main file renamed in last, and side files the new set
    lacks and the backups removed. A reader resolves side files with :func:`resolve_side_file`, so a kill at any
    point reads as the old set or the new one, whole; the next replacement first puts the old set back in place.
    On an error nothing changes.
    """
    main = check_file_output(main)
    side_paths = {k: check_file_output(p) for k, p in sides.items()}
    main.parent.mkdir(parents=True, exist_ok=True)
    record = side_files_record(main)
    for key, side in side_paths.items():
        _recover_side(side, record, key)
        _clean_stale(side, ("tmp",))
    _clean_stale(main, ("tmp",))
    pid = os.getpid()
    main_tmp = main.with_name(f".{main.name}.tmp-{pid}-set{suffix or ''}")
    side_tmps = {k: p.with_name(f".{p.name}.tmp-{pid}-set") for k, p in side_paths.items()}
    temporary = [main_tmp, *side_tmps.values()]
    for tmp in temporary:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    done: list[tuple[Path, Path]] = []
    try:
        yield main_tmp, dict(side_tmps)
        has = {k: tmp.exists() for k, tmp in side_tmps.items()}
        for key, side in side_paths.items():
            if has[key] or side.exists():
                done.append((side, _back_up(side)))
            if has[key]:
                os.replace(side_tmps[key], side)
        os.replace(main_tmp, main)
    except BaseException:
        for side, backup in reversed(done):
            _put_back(side, backup)
        for tmp in temporary:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    for key, side in side_paths.items():
        if not has[key]:
            with contextlib.suppress(FileNotFoundError):
                side.unlink()
    for _, backup in done:
        with contextlib.suppress(FileNotFoundError):
            backup.unlink()


@contextlib.contextmanager
def atomic_files_into(target: str | Path, owns: Sequence[str], option: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder inside ``target``; on success rename its files into ``target`` one by one,
    each whole, in the order of ``owns`` (the one a reader trusts last). ``target`` itself is never swapped.

    For the current folder, which :func:`atomic_folder` would swap away when it holds only the command's files: a
    shell in it would be left in a removed folder. On an error (or, by the next run, after a kill) the temporary
    folder is removed and ``target`` is untouched.
    """
    target = check_folder_output(target, option)
    target.mkdir(parents=True, exist_ok=True)
    anchor = target / owns[-1]
    _clean_stale(anchor, ("tmp",))
    tmp = Path(tempfile.mkdtemp(prefix=f".{anchor.name}.tmp-{os.getpid()}-", dir=target))
    try:
        yield tmp
        rank = {name: i for i, name in enumerate(owns)}
        for entry in sorted(tmp.iterdir(), key=lambda e: rank.get(e.name, -1)):
            os.replace(entry, target / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
