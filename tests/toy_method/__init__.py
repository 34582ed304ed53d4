"""A toy method family, as a third party would write one: one package, one ``register`` call.

``tempered``: the base model sampled from its distribution at temperature 2 (``SinglePolicy``'s
own temperature). Importing this package registers it; ``unregister`` removes it again.
"""
from __future__ import annotations

from alignx import methods
from alignx.policy import SinglePolicy

NAME = "tempered"


class TemperedFamily(methods.Family):
    name = NAME
    usage = "tempered"
    rank = -5

    def modes(self, studio):
        return [methods.Mode(NAME, self.name, "the base model at temperature 2")]

    def owns(self, mode: str) -> bool:
        return mode == NAME

    def policy(self, studio, mode, **settings):
        self.no_settings(mode, settings)
        policy = SinglePolicy(studio.model, studio.tokenizer, temperature=2.0)
        policy.name = NAME
        return policy


def register() -> None:
    methods.register(TemperedFamily())


def unregister() -> None:
    methods.unregister(NAME)
