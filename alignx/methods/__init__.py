"""Method families: the one place modes and policies come from.

A *family* (``Family``) offers modes for a loaded ``Studio`` and builds a ``Policy`` for a mode
plus settings: ``base`` (the base model), ``expert`` (``expert:NAME``), ``mocae`` (``mocae-logit``,
``mocae-adapter`` and the fixed-weight baselines ``uniform-logit``, ``uniform-adapter``). The CLI,
the evaluation harness, the sweep and the app ask only this package:

    from alignx import methods
    methods.modes(studio)                      # ['base', 'expert:harmless', ..., 'mocae-logit', ...]
    methods.policy(studio, "mocae-logit", lambda1=0.8)

Adding a method is one package and one ``register`` call (see docs/ARCHITECTURE.md):

    class Echo(methods.Family):
        name = "echo"
        def modes(self, studio): return [methods.Mode("echo", self.name, "repeats the prompt")]
        def policy(self, studio, mode, **settings): ...
    methods.register(Echo())
"""
from alignx.methods.registry import (Family, Mode, default_mode, describe, families, family_of, get_family, modes,
                                     policy, register, unregister, usage)

__all__ = ["Family", "Mode", "default_mode", "describe", "families", "family_of", "get_family", "modes", "policy",
           "register", "unregister", "usage"]
