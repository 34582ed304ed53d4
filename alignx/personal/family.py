"""The ``personal`` method family: a policy for one user, from their history (ICA) or profile (PBA).

Modes (accepted, not listed among the Studio's general modes: each needs a user):
``personal-ica`` / ``personal-pba`` (the DPO-trained adapter, ``assets/personal/<method>/``, with the
user's ICA / PBA prompt), ``prompt-ica`` / ``prompt-pba`` (the same prompt on the base model,
untrained) and ``persona-oracle`` (the base with the ground-truth persona as a system prompt, the
ceiling). Setting: ``user`` (an ``alignx.personal.data.User``; default: a user with no history).
The adapters are loaded onto the served model on first use, as adapters of their own (never
experts: they are not router inputs); their state lives in ``studio.extras["personal"]``.
"""
from __future__ import annotations

import threading
from pathlib import Path

from alignx.errors import InvalidInput
from alignx.methods.registry import Family, Mode, register
from alignx.policy import SinglePolicy

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "personal"
TRAINED = {"personal-ica": "ica", "personal-pba": "pba"}
PROMPTED = {"prompt-ica": "ica", "prompt-pba": "pba"}
ORACLE = "persona-oracle"
_LOCK = threading.Lock()


class PersonalPolicy(SinglePolicy):
    """``SinglePolicy`` whose prompt is the user's ICA / PBA prompt (or the plain prompt under a
    persona system prompt): ``logprob``, ``stream`` and ``forward_logits`` all see that prompt."""

    def __init__(self, model, tokenizer, adapter: str | None, method: str | None, user, dims, name: str,
                 system: str | None = None):
        super().__init__(model, tokenizer, adapter)
        self.method, self.user, self.dims, self.system, self.name = method, user, dims, system, name

    def user_text(self, prompt: str) -> str:
        from alignx.personal.train import user_prompt

        return prompt if self.method is None else user_prompt(self.method, prompt, self.user, self.dims)

    def prompt_ids(self, prompt: str) -> list[int]:
        from alignx.generation import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, self.user_text(prompt), self.system)


def adapters_dir(studio) -> Path:
    return Path(studio.extras.get("personal_dir") or ASSETS)


def load_adapter(studio, method: str) -> str:
    """The adapter name of the trained ``method`` on the served model, loading it on first use."""
    from alignx.experts.io import add_expert

    name = f"personal-{method}"
    with _LOCK, studio.lock:
        state = studio.extras.setdefault("personal", {})
        if name not in state:
            folder = adapters_dir(studio) / method
            if not (folder / "adapter_config.json").exists():
                raise InvalidInput(f"no trained {method.upper()} adapter in {folder}: train one with "
                                   f"`python -m alignx personal train --method {method} --out {folder.parent}`")
            taken = set(getattr(studio.model, "peft_config", {}) or {})
            studio.model, _, state[name] = add_expert(studio.lm, studio.model, folder, name, taken)
    return name


def available(studio) -> list[str]:
    """The trained personal adapters present for this Studio's base model (without loading them)."""
    import json

    out = []
    for mode, method in TRAINED.items():
        folder = adapters_dir(studio) / method
        try:
            card = json.loads((folder / "card.json").read_text())
        except (OSError, ValueError):
            continue
        if (folder / "adapter_config.json").exists() and card.get("base_model") == studio.lm.name:
            out.append(mode)
    return out


class PersonalFamily(Family):
    name = "personal"
    usage = "personal-ica | personal-pba | prompt-ica | prompt-pba | persona-oracle"
    rank = -10

    def modes(self, studio) -> list[Mode]:
        out = [Mode(m, self.name, f"the {TRAINED[m].upper()}-DPO adapter for one user", listed=False,
                    settings=("user",)) for m in available(studio)]
        out += [Mode(m, self.name, f"the base with the user's {PROMPTED[m].upper()} prompt", listed=False,
                     settings=("user",)) for m in PROMPTED]
        return out + [Mode(ORACLE, self.name, "the base with the ground-truth persona as system prompt",
                           listed=False, settings=("user",))]

    def owns(self, mode: str) -> bool:
        return mode in TRAINED or mode in PROMPTED or mode == ORACLE

    def policy(self, studio, mode: str, **settings):
        from alignx.personal.data import User
        from alignx.personal.prompts import load_dims, oracle_system

        self.check_settings(mode, settings, ("user",))
        user = settings.get("user") or User(history=())
        if not isinstance(user, User):
            raise InvalidInput(f"{mode}: user must be an alignx.personal.data.User, got {type(user).__name__}")
        dims = load_dims()
        if mode == ORACLE:
            if not user.persona:
                raise InvalidInput(f"{mode} needs a user with a ground-truth persona")
            return PersonalPolicy(studio.model, studio.tokenizer, None, None, user, dims, mode, oracle_system(user))
        if mode in PROMPTED:
            return PersonalPolicy(studio.model, studio.tokenizer, None, PROMPTED[mode], user, dims, mode)
        adapter = load_adapter(studio, TRAINED[mode])
        return PersonalPolicy(studio.model, studio.tokenizer, adapter, TRAINED[mode], user, dims, mode)


register(PersonalFamily())
