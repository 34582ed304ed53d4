"""The judge interface and the registry (``get_judge(name, **opts)``).

A judge answers some of five questions, each as a probability per item (``None`` = no valid
verdict, e.g. an unparseable API reply):

* ``prefer(instructions, first, second)``   P(first response better than second)      -> win rate
* ``unsafe(prompts, responses)``            P(response unsafe)                          -> safety score
* ``refusal(prompts, responses)``           P(response is a refusal)                    -> over-refusal
* ``truthful(questions, answers, refs)``    P(answer truthful)                          -> TI
* ``informative(questions, answers)``       P(answer informative)                       -> TI

``capabilities`` says which of them a judge implements; ``info()`` is what every report records.
"""
from __future__ import annotations

from alignx.errors import AlignXRuntimeError, InvalidInput

import importlib
from typing import Any, Callable, Sequence

CAPABILITIES = ("prefer", "unsafe", "refusal", "truthful", "informative")
Prob = float | None


class JudgeError(AlignXRuntimeError):
    """A judge that cannot work: missing files, unreachable endpoint after retries, bad replies."""


class Judge:
    name = "judge"
    capabilities: frozenset[str] = frozenset()
    symmetric_preference = False     # True when prefer(x, a, b) == 1 - prefer(x, b, a) by construction
    proxy = False                    # True for judges that stand in for the papers' judges

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": "unversioned", "proxy": self.proxy,
                "capabilities": sorted(self.capabilities)}

    def version_for(self, capability: str) -> str | None:
        """The version of the part of this judge that answers ``capability``."""
        return self.info().get("version")

    def warning_for(self, capability: str) -> str | None:
        """A caveat to print beside the numbers this judge produces for ``capability`` (None: none)."""
        return None

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise JudgeError(f"judge {self.name!r} cannot judge {capability!r} (it can: "
                             f"{sorted(self.capabilities) or 'nothing'}); pick another judge for it")

    def prefer(self, instructions: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Prob]:
        self.require("prefer")
        raise NotImplementedError

    def unsafe(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Prob]:
        self.require("unsafe")
        raise NotImplementedError

    def refusal(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Prob]:
        self.require("refusal")
        raise NotImplementedError

    def truthful(self, questions: Sequence[str], answers: Sequence[str], references=None) -> list[Prob]:
        self.require("truthful")
        raise NotImplementedError

    def informative(self, questions: Sequence[str], answers: Sequence[str]) -> list[Prob]:
        self.require("informative")
        raise NotImplementedError


def check_lengths(*seqs: Sequence) -> None:
    lengths = {len(s) for s in seqs}
    if len(lengths) > 1:
        raise InvalidInput(f"judge inputs differ in length: {[len(s) for s in seqs]}")


# --- registry ---------------------------------------------------------------------------------
# name -> "module:Class" (imported on first use, so the api judge never imports torch) or a factory.
_REGISTRY: dict[str, str | Callable[..., Judge]] = {
    "offline": "alignx.eval.judges.offline:OfflineJudge",
    "api": "alignx.eval.judges.api:ApiJudge",
    "hf": "alignx.eval.judges.hf:HfJudge",
}


def register_judge(name: str, factory: Callable[..., Judge] | str) -> None:
    """Add a judge under ``name`` (a class/factory, or a "module:Class" string)."""
    _REGISTRY[name] = factory


def available_judges() -> list[str]:
    return sorted(_REGISTRY)


def get_judge(name: str, **opts) -> Judge:
    if name not in _REGISTRY:
        raise InvalidInput(f"unknown judge {name!r}; choose from {available_judges()}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, cls = factory.split(":")
        factory = getattr(importlib.import_module(module), cls)
    return factory(**opts)


def build_judges(default: str, overrides: dict[str, str] | None = None,
                 options: dict[str, dict] | None = None, needed: Sequence[str] = CAPABILITIES) -> dict[str, Judge]:
    """capability -> judge instance. ``default`` judges everything it can; ``overrides`` maps a
    capability to another judge name; ``options`` holds per-judge-name constructor options.
    ``refusal`` is optional (the runner falls back to the keyword diagnostic, labeled as such);
    any other needed capability the chosen judge lacks is an error."""
    overrides, options = dict(overrides or {}), dict(options or {})
    bad = set(overrides) - set(CAPABILITIES)
    if bad:
        raise InvalidInput(f"unknown judge capability {sorted(bad)}; choose from {list(CAPABILITIES)}")
    instances: dict[str, Judge] = {}
    out: dict[str, Judge] = {}
    for cap in needed:
        name = overrides.get(cap, default)
        if name not in instances:
            instances[name] = get_judge(name, **options.get(name, {}))
        judge = instances[name]
        if cap in judge.capabilities:
            out[cap] = judge
        elif cap != "refusal" or cap in overrides:
            flag = "--judge-" + ("truth" if cap in ("truthful", "informative") else
                                 {"prefer": "pref", "unsafe": "safety", "refusal": "refusal"}[cap])
            raise JudgeError(f"judge {name!r} (as configured) cannot judge {cap!r}; it can: "
                             f"{sorted(judge.capabilities) or 'nothing'}. Give it what it needs "
                             f"(e.g. --hf-* paths) or choose another judge with {flag} NAME")
    return out
