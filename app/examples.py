"""Example prompts per axis, from ``assets/examples/prompts.json``."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from alignx.data.records import AXES

PROMPTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "prompts.json"


@functools.lru_cache(maxsize=1)
def example_prompts() -> dict[str, list[str]]:
    """axis -> prompts, in the order of ``AXES``."""
    data = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))
    unknown = set(data) - set(AXES)
    if unknown:
        raise ValueError(f"{PROMPTS_FILE}: unknown axes {sorted(unknown)}; use {list(AXES)}")
    return {axis: [str(p) for p in data.get(axis, [])] for axis in AXES}
