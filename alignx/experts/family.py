"""The ``expert`` family: one stage-1 LoRA expert alone, ``expert:NAME`` for each loaded expert."""
from __future__ import annotations

from alignx.errors import unknown
from alignx.methods.registry import Family, Mode, register

PREFIX = "expert:"


class ExpertFamily(Family):
    name = "expert"
    usage = "expert:NAME"
    rank = -1

    def modes(self, studio) -> list[Mode]:
        return [Mode(PREFIX + n, self.name, f"the {c.get('axis', n)} expert alone")
                for n, c in studio.experts.items()]

    def owns(self, mode: str) -> bool:
        return mode.startswith(PREFIX)

    def policy(self, studio, mode: str, **settings):
        from alignx.policy import SinglePolicy

        self.no_settings(mode, settings)
        name = mode[len(PREFIX):]
        if name not in studio.experts:
            raise unknown("expert", name, studio.experts)
        return SinglePolicy(studio.model, studio.tokenizer, name)


register(ExpertFamily())
