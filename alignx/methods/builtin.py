"""The ``base`` family: the base model with every adapter off."""
from __future__ import annotations

from alignx.methods.registry import Family, Mode, register


class BaseFamily(Family):
    name = "base"
    usage = "base"
    rank = 0

    def modes(self, studio) -> list[Mode]:
        return [Mode("base", self.name, "the base model, adapters off")]

    def owns(self, mode: str) -> bool:
        return mode == "base"

    def policy(self, studio, mode: str, **settings):
        from alignx.policy import SinglePolicy

        self.no_settings(mode, settings)
        return SinglePolicy(studio.model, studio.tokenizer)


register(BaseFamily())
