"""The one record type every loader returns, and the error every loader raises."""
from __future__ import annotations

from alignx.errors import InvalidInput

from dataclasses import asdict, dataclass, field
from typing import Any

AXES = ("helpful", "harmless", "honest")


class DataError(InvalidInput):
    """Bad input data. The message names the file, and where known the row and the field."""

    def __init__(self, file: str, message: str, row: int | None = None, field: str | None = None):
        self.file, self.row, self.field = str(file), row, field
        where = self.file
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


@dataclass
class AlignRecord:
    """One example. ``response`` is the target/reference answer; preference data adds
    ``chosen``/``rejected``. ``extra`` keeps every other field of the source row."""

    axis: str
    prompt: str
    response: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_dataset(records: list[AlignRecord]):
    """Records as a ``datasets.Dataset`` (``extra`` is kept as a JSON string: sources differ)."""
    import json

    from datasets import Dataset

    rows = [dict(r.to_dict(), extra=json.dumps(r.extra, ensure_ascii=False, default=str)) for r in records]
    return Dataset.from_list(rows)
