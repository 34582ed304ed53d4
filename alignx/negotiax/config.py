"""NegotiaX configuration: frozen dataclasses with presets (``tiny`` for tests, ``cpu`` the default,
``paper`` for 7B models). Help text for every field is in ``HELP``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from alignx.errors import InvalidInput, unknown

VARIANTS = ("full", "module1", "module2", "frozen", "off")

HELP = {
    "fork_layer": "decoder layer whose self-attention output the pathways read and the MAC writes back to "
                  "(None: the middle layer, n_layers // 2)",
    "depth": "pathway depth m: 0 = projection-only pathways at the fork layer (the reference's design); m > 0 = "
             "each objective runs the m layers above the fork with its own low-rank update, sharing the trunk below",
    "pathway_rank": "rank of each pathway's update in the forked layers (depth m > 0)",
    "rank": "r: the dimension of each objective's subspace (pathway vector v_i = P_i a + c_i in R^r)",
    "heads": "MAC attention heads H (query from the shared stream, keys / values from the N pathways)",
    "head_dim": "per-head query / key / value width",
    "separation": "weight of the subspace-separation penalty sum_{i<j} ||P_i P_j^T||_F^2",
    "identify": "weight of the objective-identification term (pathway logits -> the batch's objective)",
    "own_path": "weight of each objective's loss through its own pathway (fusion weights one-hot on it)",
}


@dataclass(frozen=True)
class NegotiaXConfig:
    name: str = "cpu"
    fork_layer: int | None = None
    depth: int = 0
    pathway_rank: int = 8
    rank: int = 64
    heads: int = 4
    head_dim: int = 16
    separation: float = 0.1
    identify: float = 0.1
    own_path: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("rank", "heads", "head_dim"):
            if int(getattr(self, f)) < 1:
                raise InvalidInput(f"NegotiaX config {self.name!r}: {f} must be >= 1, got {getattr(self, f)}")
        if self.depth < 0:
            raise InvalidInput(f"NegotiaX config {self.name!r}: depth must be >= 0, got {self.depth}")
        if self.depth > 0 and self.pathway_rank < 1:
            raise InvalidInput(f"NegotiaX config {self.name!r}: pathway_rank must be >= 1, got {self.pathway_rank}")
        for f in ("separation", "identify", "own_path"):
            if not float(getattr(self, f)) >= 0:
                raise InvalidInput(f"NegotiaX config {self.name!r}: {f} must be >= 0, got {getattr(self, f)}")

    def fork(self, n_layers: int) -> int:
        """The fork layer for a model with ``n_layers`` layers (checked)."""
        layer = n_layers // 2 if self.fork_layer is None else int(self.fork_layer)
        if not 0 <= layer < n_layers:
            raise InvalidInput(f"fork layer {layer} out of range: the model has layers 0..{n_layers - 1}")
        return layer

    def check(self, hidden: int, n_layers: int) -> None:
        """Errors for a config that cannot fit a model of width ``hidden`` and ``n_layers`` layers."""
        fork = self.fork(n_layers)
        if fork + self.depth >= n_layers:
            raise InvalidInput(f"fork layer {fork} + pathway depth {self.depth} needs layers up to {fork + self.depth}; "
                               f"the model has layers 0..{n_layers - 1}")
        if self.rank > hidden:
            raise InvalidInput(f"rank {self.rank} is larger than the hidden size {hidden}")
        if self.heads * self.head_dim > hidden:
            raise InvalidInput(f"heads x head_dim = {self.heads * self.head_dim} is larger than the hidden size {hidden}")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "tiny": NegotiaXConfig("tiny", rank=8, heads=2, head_dim=8),
    "cpu": NegotiaXConfig("cpu"),
    "paper": NegotiaXConfig("paper", rank=64, heads=8, head_dim=64),
}


def preset(name: str, **overrides) -> NegotiaXConfig:
    if name not in PRESETS:
        raise unknown("NegotiaX preset", name, PRESETS)
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
