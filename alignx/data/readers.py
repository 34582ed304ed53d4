"""Low-level file readers with row/field-precise errors (JSON list, JSON object, JSONL, CSV)."""
from __future__ import annotations

import csv
import gzip
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from alignx.data.records import DataError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file (a folder or a device?)")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn what a malformed file makes the standard readers raise into a ``DataError`` naming it:
    bytes that are not UTF-8, nesting deeper than the parser's recursion limit, a CSV field over
    ``csv.field_size_limit()``, an unreadable file."""
    try:
        yield
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise DataError(path, "nested too deeply to parse") from None
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}") from None
    except (OSError, EOFError) as exc:          # gzip.BadGzipFile is an OSError, a truncated .gz an EOFError
        raise DataError(path, f"cannot read the file ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    _check_file(path)
    try:
        with reading(path), path.open(encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def read_json_list(path: str | Path, key: str | None = None) -> list[dict]:
    """A JSON list of objects (or, with ``key``, an object holding that list)."""
    path = Path(path)
    data = read_json(path)
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise DataError(path, f"expected a JSON object with a {key!r} list")
        data = data[key]
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of rows, got {type(data).__name__}")
    if not data:
        raise DataError(path, "no rows")
    return data


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON lines (gzip-compressed when the name ends in ``.gz``); ``row`` in errors = line index."""
    path = Path(path)
    _check_file(path)
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path), opener(path, "rt", encoding="utf-8-sig") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON line: {exc.msg}", row=i) from None
    if not rows:
        raise DataError(path, "no rows")
    return rows


def read_csv(path: str | Path, required: Iterable[str]) -> list[dict]:
    path = Path(path)
    _check_file(path)
    with reading(path), path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {missing}; header is {header}")
        rows = list(reader)
    if not rows:
        raise DataError(path, "no rows")
    return rows


def field_str(path: Path, i: int, row: Any, name: str, *, allow_empty: bool = False,
              default: str | None = None) -> str:
    """Row ``i``'s field ``name`` as a string, or a DataError that names file, row and field."""
    if not isinstance(row, dict):
        raise DataError(path, f"expected an object, got {type(row).__name__}", row=i)
    if name not in row or row[name] is None:
        if default is not None:
            return default
        raise DataError(path, "missing field", row=i, field=name)
    value = row[name]
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", row=i, field=name)
    if not allow_empty and not value.strip():
        raise DataError(path, "empty value", row=i, field=name)
    return value


def convert_rows(path: Path, rows: list, convert: Callable[[int, Any], T], skip_bad: bool = False) -> list[T]:
    """Apply ``convert(i, row)`` to every row; with ``skip_bad``, log and drop rows that raise DataError."""
    out: list[T] = []
    skipped = 0
    for i, row in enumerate(rows):
        try:
            out.append(convert(i, row))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped += 1
            log.warning("skipping bad row: %s", exc)
    if not out:
        raise DataError(path, f"no usable rows ({skipped} skipped)")
    return out


def local_file(source: str | Path | None, key: str, data_dir: str | Path | None = None) -> Path:
    """``source`` as a path, or (None) the data directory's file ``paths.FILES[key]``."""
    from alignx.data.paths import FILES, resolve_data_dir

    return Path(source).expanduser() if source is not None else resolve_data_dir(data_dir) / FILES[key]


def convert_head(path: Path, rows: list, convert: Callable[[int, Any], T], limit: int | None = None,
                 skip_bad: bool = False) -> list[T]:
    """``convert_rows`` on the first ``limit`` rows (all when None): only those are validated."""
    if limit is not None and limit < 1:
        raise DataError(path, f"limit must be >= 1, got {limit}")
    return convert_rows(path, rows if limit is None else rows[:limit], convert, skip_bad)


def split_list(path: Path, i: int, value: Any, field: str, n: int | None = None) -> list[str]:
    """A list of non-empty strings (or a JSON string holding one), of length ``n`` when given."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(path, "expected a JSON list of strings", row=i, field=field) from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(path, "expected a list of non-empty strings", row=i, field=field)
    if n is not None and len(value) != n:
        raise DataError(path, f"expected {n} strings, got {len(value)}", row=i, field=field)
    return value
