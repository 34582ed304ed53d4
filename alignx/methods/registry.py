"""The registry of method families (lazy, named, with "available: ..." errors).

Built-in families are imported by name the first time they are needed (``_BUILTIN``: family ->
module; the module calls ``register`` on import), so ``import alignx`` stays light and a broken
optional family cannot break the others. Third-party packages register through the
``alignx.methods`` entry-point group (each entry point names a module or a ``Family`` object).
A second family with a taken name is an error, never a silent replacement.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from alignx.errors import InvalidInput, unknown

if TYPE_CHECKING:
    from alignx.policy import Policy
    from alignx.studio import Studio

log = logging.getLogger(__name__)

_BUILTIN = {"base": "alignx.methods.builtin", "expert": "alignx.experts.family", "mocae": "alignx.mocae.family",
            "personal": "alignx.personal.family", "negotiax": "alignx.negotiax.family"}
ENTRY_POINT_GROUP = "alignx.methods"
_FAMILIES: dict[str, "Family"] = {}
_LOCK = threading.RLock()
_LOADED = False


@dataclass(frozen=True)
class Mode:
    """One way to answer prompts that a family offers for a loaded Studio."""

    name: str                       # e.g. "expert:honest", "mocae-logit"
    family: str
    description: str = ""
    listed: bool = True             # False: accepted by ``policy`` but left out of ``modes`` (baselines)
    settings: tuple[str, ...] = ()  # the keyword settings its policy takes
    ablation: bool = False          # a variant for ablation studies: listed, but not shown by default


class Family:
    """A method family. Subclasses set ``name`` and implement ``modes`` and ``policy``.

    ``rank`` orders the choice of ``default_mode`` (the highest-ranked family with a mode wins: a
    fusion opens the app when one is loaded). ``usage`` is the mode syntax for help texts.
    ``owns(mode)`` says whether a mode name is this family's syntax even when the Studio cannot
    serve it now, so that ``policy`` can say why (e.g. "needs a trained router")."""

    name: str = ""
    rank: int = 0
    usage: str = ""

    def modes(self, studio: "Studio") -> list[Mode]:
        raise NotImplementedError

    def owns(self, mode: str) -> bool:
        """Whether ``mode`` is this family's syntax (also when the Studio cannot serve it now)."""
        return False

    def policy(self, studio: "Studio", mode: str, **settings) -> "Policy":
        raise NotImplementedError

    # helpers for subclasses ---------------------------------------------------------------------
    @staticmethod
    def no_settings(mode: str, settings: dict) -> None:
        if settings:
            raise InvalidInput(f"mode {mode!r} takes no settings; got {sorted(settings)}")

    @staticmethod
    def check_settings(mode: str, settings: dict, allowed: Iterable[str]) -> None:
        bad = sorted(set(settings) - set(allowed))
        if bad:
            raise InvalidInput(f"mode {mode!r} takes the settings {sorted(allowed)}; got unknown {bad}")


def register(family: Family) -> Family:
    """Add a family; a name already taken is an error (``unregister`` it first to replace it)."""
    if not isinstance(family, Family) or not family.name:
        raise InvalidInput(f"register() takes a Family instance with a name, got {family!r}")
    with _LOCK:
        if family.name in _FAMILIES:
            raise InvalidInput(f"a method family named {family.name!r} is already registered")
        _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> Family:
    with _LOCK:
        if name not in _FAMILIES:
            raise unknown("method family", name, _FAMILIES)
        return _FAMILIES.pop(name)


def _load_builtin(name: str) -> None:
    if name not in _FAMILIES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])


def _load_all() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        for name in _BUILTIN:
            _load_builtin(name)
        _LOADED = True
        try:
            from importlib.metadata import entry_points

            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception:  # noqa: BLE001 - no metadata: no plugins
            eps = ()
        for ep in eps:
            try:
                obj = ep.load()
                if isinstance(obj, Family) and obj.name not in _FAMILIES:
                    register(obj)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
                log.warning("method family plugin %s not loaded: %s", ep.name, exc)


def families() -> list[Family]:
    """Every registered family: the built-ins first (base, expert, mocae), then in registration order."""
    _load_all()
    with _LOCK:
        order = [n for n in _BUILTIN if n in _FAMILIES] + [n for n in _FAMILIES if n not in _BUILTIN]
        return [_FAMILIES[n] for n in order]


def get_family(name: str) -> Family:
    _load_builtin(name)
    if name not in _FAMILIES:
        _load_all()
    if name not in _FAMILIES:
        raise unknown("method family", name, _FAMILIES)
    return _FAMILIES[name]


def describe(studio: "Studio", include_unlisted: bool = False) -> list[Mode]:
    """The modes the Studio can serve now, family by family."""
    out: list[Mode] = []
    for fam in families():
        out += [m for m in fam.modes(studio) if include_unlisted or m.listed]
    return out


def modes(studio: "Studio", include_unlisted: bool = False) -> list[str]:
    """Mode names for ``studio``: ``['base', 'expert:NAME', ..., 'mocae-logit', 'mocae-adapter', ...]``."""
    return [m.name for m in describe(studio, include_unlisted)]


def family_of(studio: "Studio", mode: str) -> Family:
    if not isinstance(mode, str) or not mode.strip():
        raise InvalidInput(f"mode must be a non-empty string, got {mode!r}")
    for fam in families():
        if any(m.name == mode for m in fam.modes(studio)) or fam.owns(mode):
            return fam
    raise unknown("mode", mode, modes(studio, include_unlisted=True))


def policy(studio: "Studio", mode: str, **settings) -> "Policy":
    """The policy of ``mode`` with ``settings`` (e.g. MoCaE calibration: ``lambda1=0.8``)."""
    return family_of(studio, mode).policy(studio, mode, **settings)


def default_mode(studio: "Studio") -> str:
    """The mode a UI opens on: the first listed mode of the highest-ranked family that has one."""
    best: tuple[int, str] | None = None
    for fam in families():
        listed = [m for m in fam.modes(studio) if m.listed]
        if listed and (best is None or fam.rank > best[0]):
            best = (fam.rank, listed[0].name)
    if best is None:
        raise InvalidInput("no method family offers a mode for this Studio")
    return best[1]


def usage() -> str:
    """The mode syntax of every family, for help texts: ``base | expert:NAME | mocae-logit | ...``."""
    return " | ".join(f.usage or f.name for f in families())
