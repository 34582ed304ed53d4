"""Model cards: the README.md beside every adapter AlignX saves, written from its ``card.json``.

peft's ``save_pretrained`` writes a README.md template whose every field reads "[More Information
Needed]". An adapter folder written by AlignX (``save_adapter_folder``) gets instead a card made
from the run's own record (``card.json``): what it is, the base model, the command, the data
(rows per source, evaluation prompts removed), the hyperparameters, the losses and the wall time.
``model_card(card)`` is a pure function of the card, so a shipped README can be checked against
its card.json (``tests/test_shipped.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_KINDS = {"alignx-expert": "AlignX expert", "alignx-personal-adapter": "AlignX-Family personal adapter"}
_SHOWN = ("kind", "name", "axis", "method", "recipe", "base_model", "base_source", "trainer", "command", "data",
          "hyperparameters", "preset", "losses", "loss_log", "wall_time_s", "created")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return f"`{json.dumps(v, ensure_ascii=False)}`"
    return f"`{v}`" if isinstance(v, str) and v else str(v)


def _table(d: dict) -> list[str]:
    return ["| key | value |", "|---|---|"] + [f"| {k} | {_value(v)} |" for k, v in d.items()]


def model_card(card: dict[str, Any]) -> str:
    """The README.md (Hugging Face model-card front matter + markdown) of an adapter's ``card``."""
    name = card.get("name", "adapter")
    what = _KINDS.get(card.get("kind", ""), card.get("kind", "adapter"))
    base = card.get("base_model", "unknown")
    tags = ["alignx", "lora", "peft"] + [t for t in (card.get("axis"), card.get("method"), card.get("recipe")) if t]
    lines = ["---", f"base_model: {base}", "library_name: peft", "tags:"] + [f"- {t}" for t in tags] + ["---", ""]
    lines += [f"# {what} `{name}`", ""]
    about = [f"axis `{card['axis']}`" if card.get("axis") else "", f"method `{card['method']}`" if card.get("method")
             else "", f"recipe `{card['recipe']}`" if card.get("recipe") else "",
             f"trained with {card['trainer']}" if card.get("trainer") else ""]
    lines += [f"A LoRA adapter for `{base}` (loaded from `{card.get('base_source', '?')}`)"
              + (": " + ", ".join(a for a in about if a) if any(about) else "") + ".", ""]
    if card.get("command"):
        lines += ["## Command", "", f"    {card['command']}", ""]
    data = card.get("data")
    if isinstance(data, dict) and data:
        lines += ["## Data", ""] + _table(data) + [""]
    hyper = card.get("hyperparameters") or card.get("preset")     # experts / personal adapters
    for title, value in (("Hyperparameters", hyper), ("Losses", card.get("losses"))):
        if isinstance(value, dict) and value:
            lines += [f"## {title}", ""] + _table(value) + [""]
    rest = {k: v for k, v in card.items() if k not in _SHOWN}
    run = {k: card[k] for k in ("wall_time_s", "created") if k in card}
    if run or rest:
        lines += ["## Run", ""] + _table({**run, **rest}) + [""]
    if card.get("kind") == "alignx-expert":
        use = [f'    python -m alignx generate --experts-dir PARENT --mode expert:{name} "..."', "",
               "(PARENT: the folder that holds this adapter's folder, beside the other experts.)"]
    else:
        use = ["    from peft import PeftModel", "    model = PeftModel.from_pretrained(base_model, THIS_FOLDER)"]
    lines += ["## Use", ""] + use + ["", "Every field above is copied from `card.json`, the run's own record.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> None:
    """(Re)write ``folder/README.md`` from ``folder/card.json``, atomically."""
    from alignx.atomic import write_text

    folder = Path(folder)
    write_text(folder / "README.md", model_card(json.loads((folder / "card.json").read_text(encoding="utf-8"))))


def save_adapter_folder(model, state: dict, final: Path, card: dict) -> None:
    """Write a trained peft adapter (adapter "default": files directly in the folder), its
    ``card.json`` and its README.md to ``final``, built aside and swapped in when complete."""
    from alignx.atomic import replace_dir, write_json, write_text

    with replace_dir(final) as tmp:
        model.save_pretrained(tmp, state_dict=state)
        write_json(tmp / "card.json", card)
        write_text(tmp / "README.md", model_card(json.loads(json.dumps(card, default=str))))
