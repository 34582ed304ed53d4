"""On-disk cache of analyses, keyed by what determines their result.

key = sha256 of {analysis, its parameters, the mode and its settings, the base model's name and
``weights_fingerprint`` (base weights), the adapters' fingerprint (every LoRA tensor's name, shape,
sum and absolute sum), the router's fingerprint for routed modes, and the rows' text}. Any change
of weights, adapter, router, rows or parameter gives a new key; a stale file is never read for a
changed model. Files are JSON, written atomically (``alignx.atomic.write_json``) under
``<alignx cache>/interp`` (``$ALIGNX_CACHE``) unless a folder is given.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)


def _digest(named: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in named:
            t = t.detach().double()
            h.update(f"{name}{tuple(t.shape)}{float(t.sum()):.6e}{float(t.abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


def adapters_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every LoRA (and modules_to_save) tensor of ``model``; "none" without adapters."""
    named = [(n, p) for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n]
    return _digest(named) if named else "none"


def router_fingerprint(studio) -> str:
    """A hash of the MoCaE router, clusters and calibration (``none`` without a router)."""
    m = getattr(studio, "mocae", None)
    if m is None:
        return "none"
    tensors = []
    for obj_name in ("router", "clusters"):
        obj = getattr(m, obj_name, None)
        for k, v in sorted(vars(obj).items()) if obj is not None else ():
            if isinstance(v, torch.Tensor):
                tensors.append((f"{obj_name}.{k}", v))
    for axis, head in sorted(getattr(getattr(m, "space", None), "heads", {}).items()):
        tensors += [(f"space.{axis}.{k}", v) for k, v in sorted(vars(head).items()) if isinstance(v, torch.Tensor)]
    return _digest(tensors) + ":" + hashlib.sha256(repr(m.calibration).encode()).hexdigest()[:8]


def fingerprint(studio, mode: str, settings: dict | None = None) -> dict[str, str]:
    """What identifies the model a mode runs: base name and weights, adapters, router, mode."""
    from alignx.eval.scores import weights_fingerprint

    routed = mode.startswith("mocae") or "route" in mode
    return {"model": str(studio.lm.name), "weights": weights_fingerprint(studio.model),
            "adapters": adapters_fingerprint(studio.model),
            "router": router_fingerprint(studio) if routed else "none", "mode": mode,
            "circuit": circuit_fingerprint(studio, mode),
            "settings": json.dumps(settings or {}, sort_keys=True, default=str)}


def circuit_fingerprint(studio, mode: str) -> str:
    """A hash of the weights of the NegotiaX circuit a ``negotiax*`` mode serves, as loaded (``none``
    for other modes)."""
    if not (mode == "negotiax" or mode.startswith("negotiax:")):
        return "none"
    from alignx.negotiax.family import available, load

    folder = available(studio).get(mode)
    if folder is None:
        return "missing"
    return _digest(sorted(load(studio, folder).circuit.state_dict().items()))


def key(analysis: str, ident: dict, params: dict) -> str:
    blob = json.dumps({"analysis": analysis, "ident": ident, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def folder(directory: str | Path | None = None) -> Path:
    from alignx.models import cache_dir

    return Path(directory).expanduser() if directory else cache_dir() / "interp"


def cached(directory: str | Path | None, analysis: str, ident: dict, params: dict,
           compute: Callable[[], dict], refresh: bool = False) -> dict:
    """The cached result for (analysis, ident, params), else ``compute()`` saved atomically. The
    result gets ``cache`` = {"key", "file", "hit"} (not "path": gradio would read that dict as a file).
    ``directory`` 'none' disables the cache."""
    from alignx.atomic import write_json

    k = key(analysis, ident, params)
    if directory is not None and str(directory).lower() == "none":
        out = compute()
        out["cache"] = {"key": k, "file": None, "hit": False}
        return out
    path = folder(directory) / f"{analysis}-{k}.json"
    if path.is_file() and not refresh:
        try:
            out = json.loads(path.read_text())
            out["cache"] = {"key": k, "file": str(path), "hit": True}
            return out
        except (OSError, json.JSONDecodeError) as exc:     # a damaged file is recomputed, not trusted
            log.warning("ignoring unreadable cache file %s: %s", path, exc)
    out = compute()
    out["ident"], out["params"] = ident, params
    write_json(path, out)
    out["cache"] = {"key": k, "file": str(path), "hit": False}
    return out

