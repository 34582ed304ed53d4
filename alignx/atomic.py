"""Atomic writes: a reader (or a rerun after a crash) sees the old file or the new one, never part of one.

Every writer here follows the same steps:

1. create a unique temp file next to the target (``tempfile.mkstemp(prefix=".<name>.", dir=parent)``,
   so the final ``os.replace`` is a rename inside one file system); missing parents are made;
2. write it, flush, ``fsync``, and give it the mode a plain ``open(path, "w")`` would
   (``0o666 & ~umask``; mkstemp alone makes 0o600);
3. ``os.replace(temp, target)``.

If anything raises before step 3 (an object json cannot encode, a generator of rows that fails,
a full disk), the temp file is removed and the old target is left exactly as it was.

``replace_dir`` does the same for a whole folder (an expert, a converted model): it is built in a
temp folder next to the target, its files are fsynced, the old folder is renamed aside, the new
one renamed in, and only then is the old one deleted (restored if the second rename fails).

Every temp name starts with a dot (``.<name>.XXXX``, ``.<name>-XXXX``, ``.<name>.old-PID-HEX``), as do
training work folders (``.work``): a SIGKILL can leave such an entry behind, and every loader that
lists a folder skips them (``is_temporary``), so a half-written artefact is never loaded.

JSON output is byte-identical to the writers this module replaced
(``json.dump(data, f, indent=2, ensure_ascii=False, default=str)`` + ``"\\n"`` for ``write_json``,
``json.dumps(row, ensure_ascii=False) + "\\n"`` per row for ``write_jsonl``).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

__all__ = ["write_text", "write_json", "write_jsonl", "save_safetensors", "replace_file", "replace_dir", "is_temporary"]

PathLike = str | os.PathLike


def is_temporary(path: PathLike) -> bool:
    """True for a dot-name: a temp file or folder of this module (possibly left by a killed run) or a
    work folder of checkpoints; folder listings that find artefacts skip these."""
    return Path(path).name.startswith(".")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink(path: PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_file(path: PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def replace_file(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temp path next to ``path`` for a writer that needs a file name (e.g.
    ``safetensors.torch.save_file``); when the block ends without an exception the temp file is
    fsynced, given the plain-open mode and renamed over ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _write_stream(path: PathLike, write: Callable[[IO[str]], None]) -> None:
    """Open a temp file next to ``path`` as UTF-8 text, let ``write`` fill it, then fsync + replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    _write_stream(path, lambda f: f.write(text))


def write_json(path: PathLike, data: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = str,
               newline: bool = True) -> None:
    """``json.dump(data, f, indent=indent, ensure_ascii=False, default=default)`` then ``"\\n"``
    (unless ``newline=False``), atomically. The defaults are the format of cards and reports."""
    def write(f: IO[str]) -> None:
        json.dump(data, f, indent=indent, ensure_ascii=False, default=default)
        if newline:
            f.write("\n")

    _write_stream(path, write)


def write_jsonl(path: PathLike, rows: Iterable[Any], *, default: Callable[[Any], Any] | None = None) -> None:
    """One ``json.dumps(row, ensure_ascii=False, default=default)`` line per row, atomically;
    ``rows`` may be any iterable (a generator that raises leaves the old file in place)."""
    def write(f: IO[str]) -> None:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=default) + "\n")

    _write_stream(path, write)


def save_safetensors(path: PathLike, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file(tensors, path, metadata=metadata)``, atomically (same bytes)."""
    from safetensors.torch import save_file

    with replace_file(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=metadata)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink():
                _fsync_file(p)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)


@contextlib.contextmanager
def replace_dir(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder next to ``path`` to fill; when the block ends without an exception
    it replaces ``path`` (whatever was there is removed), else it is deleted and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    aside: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() or path.is_symlink():
            aside = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:            # removed meanwhile (another run): nothing to set aside
                aside = None
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)
                aside = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            _remove(aside)
