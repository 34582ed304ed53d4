"""Expert folders on disk and loading them onto one base model.

An expert folder (``<experts_dir>/<name>/``) holds a standard peft LoRA adapter
(``adapter_config.json``, ``adapter_model.safetensors``: plain ``PeftModel.from_pretrained``
loads it), ``card.json`` (how it was made) and ``latent_head.safetensors`` (its projection into
the shared latent alignment space). ``<experts_dir>/latent/`` holds the base projection and the
axis prototypes. All experts of a folder share one base model.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from alignx.atomic import is_temporary, replace_dir
from alignx.atomic import write_json as write_json_atomic   # re-export: cards and reports are written with it
from alignx.cards import write_model_card
from alignx.errors import InvalidInput

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXPERTS_DIR = REPO_ROOT / "assets" / "experts"


class ExpertError(InvalidInput):
    """An expert folder that cannot be used (missing files, wrong base model, unknown name)."""


def read_card(folder: Path) -> dict:
    path = Path(folder) / "card.json"
    if not path.exists():
        raise ExpertError(f"{folder} has no card.json: not a complete AlignX expert")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise ExpertError(f"{path}: not a readable JSON card ({type(exc).__name__}: {exc})") from None
    if not isinstance(card, dict):
        raise ExpertError(f"{path}: expected a JSON object, got {type(card).__name__}")
    return card


def check_adapter_files(folder: Path, model=None) -> None:
    """An adapter folder peft can load onto ``model``: a JSON-object ``adapter_config.json`` of a
    LoRA adapter and an ``adapter_model.safetensors`` whose header is intact (a truncated or non-
    safetensors file is refused), and, with ``model``, every ``lora_A`` (r, in) / ``lora_B`` (out, r)
    tensor names a module of the model with those ``in`` / ``out`` features. All of it is checked
    before peft injects anything into the served model. No pickle: ``adapter_model.bin`` alone is refused."""
    from safetensors import SafetensorError, safe_open

    config = folder / "adapter_config.json"
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise ExpertError(f"{config}: not a readable JSON adapter config ({type(exc).__name__}: {exc})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise ExpertError(f"{config}: not a LoRA adapter config (peft_type "
                          f"{cfg.get('peft_type') if isinstance(cfg, dict) else None!r}, expected 'LORA')")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExpertError(f"{folder} has no adapter_model.safetensors (only safetensors adapters are loaded)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as exc:
        raise ExpertError(f"{weights}: not a complete safetensors file ({exc})") from None
    if not shapes:
        raise ExpertError(f"{weights}: holds no tensors")
    if model is not None:
        _check_shapes(weights, shapes, model)


def _check_shapes(weights: Path, shapes: dict[str, tuple], model) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part):
                continue
            path = key[:-len(part)].removeprefix("base_model.model.")
            try:
                module = base.get_submodule(path)
            except AttributeError:
                raise ExpertError(f"{weights}: tensor {key} is for module {path!r}, which the base model "
                                  f"does not have: an adapter of another model") from None
            want = getattr(module, "in_features" if dim == 1 else "out_features", None)
            if want is not None and len(shape) == 2 and shape[dim] != want:
                raise ExpertError(f"{weights}: tensor {key} has shape {list(shape)}, but module {path!r} has "
                                  f"{'in' if dim == 1 else 'out'}_features {want}: an adapter of another model")


def list_experts(experts_dir: str | os.PathLike = DEFAULT_EXPERTS_DIR) -> dict[str, Path]:
    """Complete expert folders (adapter + card) by name, sorted. Dot-folders are skipped: the temp
    and set-aside folders ``alignx.atomic.replace_dir`` leaves when a run is killed mid-save, and
    ``.work`` (checkpoints)."""
    root = Path(experts_dir)
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if not is_temporary(p) and (p / "adapter_config.json").exists() and (p / "card.json").exists()}


def check_base(card: dict, folder: Path, base_name: str, base_source: str) -> None:
    trained_on = card.get("base_model")
    if trained_on != base_name:
        raise ExpertError(f"expert {folder} was trained for base model {trained_on!r}, not {base_name!r}: "
                          f"load it with --model {trained_on} or retrain it for this base")
    src = card.get("base_source")
    if src and src != base_source and "tiny" not in (src, base_source):
        log.info("expert %s was trained on %s weights, applied to %s weights of the same model",
                 folder.name, src, base_source)


def load_experts(lm, experts_dir: str | os.PathLike = DEFAULT_EXPERTS_DIR, names: list[str] | None = None):
    """Load experts onto ``lm.model`` as named peft adapters. Returns (peft_model, {name: card})."""
    available = list_experts(experts_dir)
    wanted = names or list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ExpertError(f"unknown expert(s) {unknown} in {experts_dir}; available: {sorted(available)}")
    if not wanted:
        raise ExpertError(f"no experts in {experts_dir}")
    cards = {}
    model = lm.model
    for name in wanted:
        model, _, cards[name] = add_expert(lm, model, available[name], name, set(cards), move=False)
    model.to(lm.device)
    model.eval()
    return model, cards


def add_expert(lm, model, folder: Path, name: str | None = None, taken: set[str] = frozenset(), move: bool = True):
    """Load one expert folder onto ``model`` (``lm.model`` or a peft model over it) as adapter
    ``name``: the card and base model are checked first. Returns (peft model, name, card); the
    caller holds the model lock when the model is being served."""
    import re

    from peft import PeftModel

    folder = Path(folder)
    name = name or folder.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise ExpertError(f"expert name {name!r}: use 1-64 letters, digits, '-' and '_'")
    if name in taken:
        raise ExpertError(f"an expert named {name!r} is already loaded")
    if not (folder / "adapter_config.json").exists():
        raise ExpertError(f"{folder} has no adapter_config.json: not a peft adapter folder")
    card = read_card(folder)
    check_base(card, folder, lm.name, lm.source)
    check_adapter_files(folder, model)
    try:
        if hasattr(model, "peft_config"):
            model.load_adapter(folder, adapter_name=name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(model, folder, adapter_name=name, is_trainable=False)
    except Exception as exc:  # noqa: BLE001 - shapes or modules of another base model: one clear error
        if hasattr(model, "peft_config") and name in model.peft_config:
            model.delete_adapter(name)          # leave the served model as it was
        raise ExpertError(f"{folder} does not fit the base model {lm.name!r} ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:300]}); its card says {card.get('base_model')!r}") from None
    if move:
        model.to(lm.device)
        model.eval()
    return model, name, dict(card, path=str(folder))


def export_experts(src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float16") -> list[Path]:
    """Copy every complete expert of ``src`` (and its latent space) to ``dst`` with the adapter
    weights cast to ``dtype`` (fp16 halves the size of what the app ships; peft casts them back
    to the model's dtype on load). Each folder is built in a temp dir and swapped in
    (``alignx.atomic.replace_dir``)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    experts = list_experts(src)
    if not experts:
        raise ExpertError(f"no complete experts in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for name, folder in [*experts.items(), *([("latent", src / "latent")] if (src / "latent").is_dir() else [])]:
        with replace_dir(dst / name) as tmp:
            for f in folder.iterdir():
                if f.name == "adapter_model.safetensors":
                    tensors = {k: v.to(getattr(torch, dtype)) for k, v in load_file(f).items()}
                    save_file(tensors, tmp / f.name, metadata={"format": "pt"})
                elif f.name == "card.json":
                    write_json_atomic(tmp / f.name, dict(read_card(folder), shipped_dtype=dtype))
                elif f.is_file() and not is_temporary(f) and f.name != "README.md":
                    shutil.copy2(f, tmp / f.name)
            if (tmp / "adapter_config.json").exists():
                write_model_card(tmp)                # the model card from the card as shipped
        out.append(dst / name)
    return out
