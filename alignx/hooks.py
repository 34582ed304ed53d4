"""Named hook points (TransformerLens style): the one module through which the library hooks models.

Hook point names, for an HF Llama-style model (``LlamaForCausalLM``, a bare ``LlamaModel`` with
``.layers``, or either wrapped in a peft ``PeftModel``):

  ``embed.out``                       output of ``embed_tokens``
  ``blocks.{L}.attn.out``             output of layer L's ``self_attn`` (after o_proj; element 0 of its tuple)
  ``blocks.{L}.attn.z``               o_proj's whole INPUT (B, T, n_heads * head_dim): every head's output
                                      before mixing (TransformerLens ``hook_z``, flattened); a pre-hook like
                                      the head points, for masking all of a layer's heads in one hook
  ``blocks.{L}.attn.head.{h}``        head h's slice ``[..., h*head_dim:(h+1)*head_dim]`` of o_proj's INPUT
                                      (a forward pre-hook on the module at ``self_attn.o_proj``, peft wrapper
                                      included, so both the base weight and any LoRA see an intervention)
  ``blocks.{L}.mlp.out``              output of layer L's ``mlp``
  ``blocks.{L}.resid_post``           output hidden states of decoder layer L
  ``blocks.{L}.lora.{expert}.{target}``  the update ``scaling * lora_B(lora_A(dropout(x)))`` that peft adapter
                                      ``expert`` adds in layer L's module ``target`` (q_proj, o_proj, up_proj, ...);
                                      only for vanilla (non-DoRA), unmerged LoRA layers carrying that adapter
  ``ln_final.out``                    output of the final norm (``model.model.norm``)

plus whatever other packages add with ``register_points`` (e.g. ``mac.*``).

HF ``output_hidden_states=True`` (transformers 5.x, Llama) returns N + 1 tensors for N layers:
``hidden_states[0]`` is the embedding output (the input of layer 0), ``hidden_states[i]`` for
0 < i < N is layer i-1's output, and ``hidden_states[N]`` (= ``[-1]``) is the FINAL-NORM output
(``last_hidden_state``): layer N-1's raw output is not in the tuple. ``hidden_state_name`` maps an
index to the point that yields the identical tensor.

API: ``capture(model, names)`` yields a ``Cache`` (``cache[name]``: the tensor of the last forward
pass, ``cache.all(name)``: one per forward pass); ``intervene(model, {name: fn})`` with
``fn(tensor, name) -> tensor | None`` (None = unchanged); ``module_hook`` for the library's internal
hooks on arbitrary modules. Every context removes everything it installed on exit, exceptions
included, and contexts nest. Interventions are prepended, so they run before any capture on the
same point (a capture sees the intervened value whatever the nesting order); among interventions
on one point the innermost runs first. Unknown names raise ``InvalidInput`` before anything is
installed.

Caveats: a hook fires only when its module runs. peft mixed batches (``adapter_names=[...]``) call
``lora_B[expert]`` on that adapter's sub-batch of rows only, so a ``blocks.*.lora.*`` capture then
holds only those rows (in batch order) and nothing for rows of other adapters. ``StackedLoRA``
replaces each LoRA layer's ``forward`` while active, so ``blocks.*.lora.*`` hooks do not fire under
it: fused decoding checks ``lora_hooked(model)`` and takes the plain peft path while one is
installed. A merged adapter never calls lora_B. An intervention on a LoRA point is divided back by
``scaling`` before peft multiplies it again (equal up to rounding). ``embed.out`` does not fire
when the caller passes ``inputs_embeds``. Hooks live on the modules, so every thread's forward
passes through a hooked model meet them: hold the model's lock around a hooked block. A ``Cache``
keeps its tensors after the block (the hooks, and their references to it, are gone).
"""
from __future__ import annotations

import re
import threading
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from alignx.errors import AlignXError, InvalidInput, unknown

Kind = Literal["forward", "pre"]
Fn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


def _first(value: Any) -> torch.Tensor:
    """The tensor of a module output or of a pre-hook's args: itself, or element 0 of a tuple."""
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, new: torch.Tensor) -> Any:
    return (new, *value[1:]) if isinstance(value, tuple) else new


@dataclass(frozen=True)
class Point:
    """How to hook one named point: a forward hook (value = output) or forward pre-hook (value = the
    positional args tuple) on ``module``; ``read`` gets the point's tensor from the value and
    ``write`` puts a replacement back (returning the new output / args). ``attach`` (for points
    whose ``read`` derives a new tensor) returns a value numerically equal to the original whose
    graph runs through the captured tensor, so ``capture(detach=False)`` gradients reach it."""

    module: nn.Module
    kind: Kind = "forward"
    read: Callable[[Any], torch.Tensor] = _first
    write: Callable[[Any, torch.Tensor], Any] = _replace_first
    attach: Callable[[Any, torch.Tensor], Any] | None = None


class HookNotFired(AlignXError, KeyError):
    """A captured point whose module did not run in the block (or not for the requested adapter)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- the model's structure ---------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    """The model under a peft wrapper (``get_base_model()``), else the model itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) and hasattr(model, "peft_config") else model


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack (the module with ``.layers``) of a causal LM, a bare backbone or a peft model."""
    root = _unwrap(model)
    if isinstance(getattr(root, "layers", None), nn.ModuleList):
        return root
    inner = getattr(root, "model", None)
    if isinstance(inner, nn.Module) and isinstance(getattr(inner, "layers", None), nn.ModuleList):
        return inner
    raise InvalidInput(f"{type(root).__name__} has no Llama-style decoder stack (.layers or .model.layers)")


def _try_backbone(model: nn.Module) -> nn.Module | None:
    try:
        return backbone(model)
    except InvalidInput:
        return None


def _head_point(o_proj: nn.Module, h: int, d: int) -> Point:
    sl = slice(h * d, (h + 1) * d)

    def read(args: tuple) -> torch.Tensor:
        return args[0][..., sl]

    def write(args: tuple, new: torch.Tensor) -> tuple:
        x = args[0].clone()
        x[..., sl] = new
        return (x, *args[1:])

    return Point(o_proj, "pre", read, write, attach=write)   # copies the same values back in


def _lora_point(lora_b: nn.Module, scaling: float) -> Point:
    def write(out: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if scaling == 0:
            raise InvalidInput("cannot intervene on a LoRA point whose scaling is 0")
        return new / scaling

    def attach(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return out + (t - t.detach()) / scaling if scaling else out   # + exact zeros: same values

    return Point(lora_b, "forward", lambda out: out * scaling, write, attach)


def _lora_modules(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """(target, module) of the LoRA-wrapped modules of a layer; target = attribute name, or the
    relative dotted path when the attribute name is not unique in the layer."""
    found = [(path, m) for path, m in layer.named_modules()
             if isinstance(getattr(m, "lora_B", None), nn.ModuleDict) and isinstance(getattr(m, "scaling", None), dict)]
    short = Counter(p.rsplit(".", 1)[-1] for p, _ in found)
    return [(p.rsplit(".", 1)[-1] if short[p.rsplit(".", 1)[-1]] == 1 else p, m) for p, m in found]


def _builtin_points(model: nn.Module) -> dict[str, Point]:
    body = _try_backbone(model)
    if body is None:
        return {}
    points: dict[str, Point] = {}
    if isinstance(getattr(body, "embed_tokens", None), nn.Module):
        points["embed.out"] = Point(body.embed_tokens)
    config = getattr(body, "config", None)
    for L, layer in enumerate(body.layers):
        attn, pre = getattr(layer, "self_attn", None), f"blocks.{L}"
        if isinstance(attn, nn.Module):
            points[f"{pre}.attn.out"] = Point(attn)
            o_proj = getattr(attn, "o_proj", None)
            n_heads = getattr(config, "num_attention_heads", None)
            d = getattr(attn, "head_dim", None) or (config.hidden_size // n_heads if n_heads else None)
            if isinstance(o_proj, nn.Module) and d:
                width = getattr(o_proj, "in_features", None) or (n_heads or 0) * d
                points[f"{pre}.attn.z"] = Point(o_proj, "pre")
                for h in range(width // d):
                    points[f"{pre}.attn.head.{h}"] = _head_point(o_proj, h, d)
        if isinstance(getattr(layer, "mlp", None), nn.Module):
            points[f"{pre}.mlp.out"] = Point(layer.mlp)
        points[f"{pre}.resid_post"] = Point(layer)
        for target, m in _lora_modules(layer):
            if getattr(m, "merged", False):
                continue
            for expert, lora_b in m.lora_B.items():
                if expert in m.scaling and expert not in getattr(m, "lora_variant", {}):
                    points[f"{pre}.lora.{expert}.{target}"] = _lora_point(lora_b, m.scaling[expert])
    if isinstance(getattr(body, "norm", None), nn.Module):
        points["ln_final.out"] = Point(body.norm)
    return points


# --- extension point ---------------------------------------------------------------------------

Resolver = Callable[[nn.Module, str], "Point | None"]
Lister = Callable[[nn.Module], Iterable[str]]
_BUILTIN_PREFIXES = ("embed", "blocks", "ln_final")
_EXTENSIONS: dict[str, tuple[Resolver, Lister]] = {}


def register_points(prefix: str, resolve: Resolver, list_names: Lister, replace: bool = False) -> None:
    """Add the names ``{prefix}`` / ``{prefix}.*`` (e.g. ``mac``): ``resolve(model, name)`` returns
    the ``Point`` to hook (None: no such point on this model), ``list_names(model)`` lists them for
    ``names``. ``model`` is passed as the caller gave it (possibly a peft wrapper)."""
    if not prefix or "." in prefix or prefix in _BUILTIN_PREFIXES:
        raise InvalidInput(f"hook point prefix {prefix!r} must be a non-empty word other than {_BUILTIN_PREFIXES}")
    if prefix in _EXTENSIONS and not replace:
        raise InvalidInput(f"hook point prefix {prefix!r} is already registered (pass replace=True)")
    _EXTENSIONS[prefix] = (resolve, list_names)


def unregister_points(prefix: str) -> None:
    _EXTENSIONS.pop(prefix, None)


def names(model: nn.Module) -> list[str]:
    """Every hook point name of this model, built-in ones first (LoRA ones for loaded adapters)."""
    out = list(_builtin_points(model))
    for _, list_names in _EXTENSIONS.values():
        out += list(list_names(model))
    return out


def _resolve(model: nn.Module, wanted: Sequence[str]) -> dict[str, Point]:
    """Points of ``wanted`` (deduplicated, in order); the first unknown one raises before any is used."""
    builtin: dict[str, Point] | None = None
    points: dict[str, Point] = {}
    for name in dict.fromkeys(wanted):
        ext = _EXTENSIONS.get(str(name).split(".", 1)[0]) if isinstance(name, str) else None
        if ext is not None:
            point = ext[0](model, name)
        else:
            builtin = _builtin_points(model) if builtin is None else builtin
            point = builtin.get(name) if isinstance(name, str) else None
        if point is None:
            raise unknown("hook point", name, names(model))
        points[name] = point
    return points


def hidden_state_name(model: nn.Module, index: int) -> str:
    """The hook point whose tensor is HF's ``output_hidden_states`` ``hidden_states[index]`` (Llama)."""
    body = backbone(model)
    n = len(body.layers)
    if not -(n + 1) <= index <= n:
        raise InvalidInput(f"hidden_states index {index} out of range for {n} layers (-{n + 1}..{n})")
    i = index % (n + 1)
    tie_last = getattr(getattr(body, "config", None), "tie_last_hidden_states", None)
    if i == 0:
        return "embed.out"
    if i == n and tie_last is not False:
        return "ln_final.out"
    return f"blocks.{i - 1}.resid_post"


# --- what is installed -------------------------------------------------------------------------

_LOCK = threading.Lock()
_INSTALLED: "weakref.WeakKeyDictionary[nn.Module, Counter[str]]" = weakref.WeakKeyDictionary()
_LORA = re.compile(r"^blocks\.\d+\.lora\.")


def _key(model: nn.Module) -> nn.Module:
    """One key per model, whichever of its wrappers (peft, causal LM, backbone) the caller passes."""
    body = _try_backbone(model)
    return _unwrap(model) if body is None else body


def installed(model: nn.Module) -> set[str]:
    """Names currently hooked on this model by ``capture``/``intervene`` (a name hooked twice by
    nested contexts stays until both exit)."""
    with _LOCK:
        counts = _INSTALLED.get(_key(model))
        return {n for n, c in counts.items() if c > 0} if counts else set()


def lora_hooked(model: nn.Module) -> bool:
    """Whether any ``blocks.*.lora.*`` point is hooked: StackedLoRA bypasses lora_B, so fused
    decoding must take the plain peft path while this is true."""
    return any(_LORA.match(n) for n in installed(model))


def _register(module: nn.Module, hook: Callable, kind: Kind, prepend: bool = False,
              with_kwargs: bool = False) -> torch.utils.hooks.RemovableHandle:
    if kind not in ("forward", "pre"):
        raise InvalidInput(f"hook kind {kind!r}; available: forward, pre")
    add = module.register_forward_hook if kind == "forward" else module.register_forward_pre_hook
    return add(hook, prepend=prepend, with_kwargs=with_kwargs)


@contextmanager
def _install(model: nn.Module, points: Mapping[str, Point], on_value: Callable[[str, Point, Any], Any],
             prepend: bool) -> Iterator[None]:
    # on_value(name, point, value) returns the new output / args, or None to leave them
    key = _key(model)
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make(name: str, point: Point) -> Callable:
        def apply(value: Any) -> Any:
            return on_value(name, point, value)

        if point.kind == "pre":
            return lambda module, args: apply(args)
        return lambda module, args, output: apply(output)

    with _LOCK:
        _INSTALLED.setdefault(key, Counter()).update(points.keys())
    try:
        for name, point in points.items():
            handles.append(_register(point.module, make(name, point), point.kind, prepend))
        yield
    finally:
        for h in handles:
            h.remove()
        with _LOCK:
            counts = _INSTALLED.get(key)
            if counts is not None:
                counts.subtract(points.keys())
                for n in [n for n, c in counts.items() if c <= 0]:
                    del counts[n]


# --- public contexts ---------------------------------------------------------------------------

class Cache:
    """Captured tensors: ``cache[name]`` the last forward pass's, ``cache.all(name)`` every pass's."""

    def __init__(self, wanted: Iterable[str], last_only: bool = False):
        self._store: dict[str, list[torch.Tensor]] = {n: [] for n in wanted}
        self._last_only = last_only

    def _add(self, name: str, t: torch.Tensor) -> None:
        if self._last_only:
            self._store[name][:] = [t]
        else:
            self._store[name].append(t)

    def all(self, name: str) -> list[torch.Tensor]:
        if name not in self._store:
            raise unknown("captured hook point", name, self._store)
        return list(self._store[name])

    def __getitem__(self, name: str) -> torch.Tensor:
        got = self.all(name)
        if not got:
            raise HookNotFired(f"hook point {name!r} did not fire: its module did not run in this block "
                               "(for a LoRA point: that adapter was not active, was merged, or StackedLoRA ran)")
        return got[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._store and bool(self._store[name])  # type: ignore[index]

    def keys(self) -> list[str]:
        return list(self._store)

    def clear(self) -> None:
        for v in self._store.values():
            v.clear()


@contextmanager
def capture(model: nn.Module, names: str | Sequence[str], detach: bool = True,
            last_only: bool = False) -> Iterator[Cache]:
    """Record the named points on every forward pass in the block. ``detach=False`` keeps the
    autograd graph; ``last_only`` keeps only the last pass's tensor (bounded memory while generating)."""
    wanted = [names] if isinstance(names, str) else list(names)
    points = _resolve(model, wanted)
    cache = Cache(points, last_only)

    def on_value(name: str, point: Point, value: Any) -> Any:
        t = point.read(value)
        cache._add(name, t.detach() if detach else t)
        if not detach and point.attach is not None and t.requires_grad:
            return point.attach(value, t)
        return None

    with _install(model, points, on_value, prepend=False):
        yield cache


@contextmanager
def intervene(model: nn.Module, fns: Mapping[str, Fn]) -> Iterator[None]:
    """Replace the named points' tensors by ``fn(tensor, name)`` (None leaves it unchanged; a head
    point's replacement is written into that head's slice only). Shapes must not change."""
    points = _resolve(model, list(fns))

    def on_value(name: str, point: Point, value: Any) -> Any:
        t = point.read(value)
        new = fns[name](t, name)
        if new is None:
            return None
        if tuple(new.shape) != tuple(t.shape):
            raise InvalidInput(f"intervention on {name!r} returned shape {tuple(new.shape)}, expected {tuple(t.shape)}")
        return point.write(value, new)

    with _install(model, points, on_value, prepend=True):
        yield


@contextmanager
def module_hook(module: nn.Module, fn: Callable, kind: Kind = "forward", prepend: bool = False,
                with_kwargs: bool = False) -> Iterator[torch.utils.hooks.RemovableHandle]:
    """A raw torch hook on any module for the library's own use, removed on exit: ``fn(module, args,
    output)`` for ``forward``, ``fn(module, args)`` for ``pre`` (torch's signatures and return rules)."""
    handle = _register(module, fn, kind, prepend, with_kwargs)
    try:
        yield handle
    finally:
        handle.remove()
