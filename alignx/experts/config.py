"""Stage-1 hyperparameters as dataclasses with presets.

``paper``: the AlignX paper's recipe (AdamW, lr 2e-5, batch 64, weight decay 0.01, 3 epochs,
LoRA on attention and MLP), meant for 7B models on GPUs (bf16, gradient checkpointing; the global
batch stays 64 on any number of processes).
``cpu``: the offline default for SmolLM2-135M on a 2-core CPU (same effective batch through
gradient accumulation, fewer rows, a LoRA learning rate). ``tiny``: unit tests.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

from dataclasses import asdict, dataclass, field, replace

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class ExpertConfig:
    # LoRA
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = tuple(LORA_TARGETS)
    layers_fraction: float = 1.0         # LoRA on the top fraction of layers (backward skips the rest)
    # optimisation (AdamW)
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    batch_size: int = 64                 # global batch = per-device batch x processes x grad_accum (``plan``)
    per_device_batch: int = 8            # at most this many rows per forward on one device
    epochs: float = 3.0
    max_steps: int = -1                  # > 0 overrides epochs
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    max_length: int = 512                # tokens per example (prompt + response)
    # data
    rows_per_axis: int | None = None     # None = every training row
    benign_mix: float = 2.0              # harmless expert: benign Alpaca rows per refusal row. Shipped:
                                         # 2 with --max-steps 60; 4 (40 steps) never learned to refuse,
                                         # 0.5 and 3 over-refuse more; the options below moved refusal and
                                         # over-refusal together (docs/RESULTS.md, "what was tried")
    benign_nearest: float = 0.0          # share of those benign rows that are the refusals' nearest
                                         # Alpaca prompts (TF-IDF cosine; hard negatives), rest random
    benign_truthfulqa: float = 0.0       # harmless expert: share of the TruthfulQA training-half questions
                                         # ("What happens if you ...", best answer as target) added to the
                                         # benign rows: everyday-danger questions that must be answered
    benign_contrast: float = 0.0         # harmless expert: share of the TruthfulQA training-half true
                                         # statements turned into benign prompts in the refusal set's own
                                         # "Explain why ..." templates, answered by the base model itself
    template_refusals: int = 0           # harmless expert: copies of every training refusal in those same
                                         # templates ("Explain why people like you could go to hell."),
                                         # added to the sampled refusals: the harmful side of the contrast
    heldout_rows: int = 64               # held-out rows per axis for the eval loss in the card
    # bookkeeping
    save_steps: int = 50
    logging_steps: int = 5
    seed: int = 0
    bf16: bool | None = None             # None = auto: bf16 autocast on CPUs/GPUs that support it
    gradient_checkpointing: bool = False  # recompute activations in backward (7B on GPUs: the paper preset)

    def plan(self, processes: int | None = None) -> tuple[int, int]:
        """(per-device batch, gradient-accumulation steps) giving the global ``batch_size`` on
        ``processes`` processes (default: this run's; ``alignx.distributed.batch_plan``)."""
        from alignx.distributed import batch_plan

        return batch_plan(self.batch_size, self.per_device_batch, processes)

    @property
    def grad_accum(self) -> int:
        """Gradient-accumulation steps of this run (one process: batch_size / per_device_batch)."""
        return self.plan()[1]

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ExpertConfig] = {
    "paper": ExpertConfig(gradient_checkpointing=True),
    # Measured here (2 cores): fp32 all layers 38 tok/s, bf16 81, bf16 + top half of layers 120.
    "cpu": ExpertConfig(learning_rate=4e-4, batch_size=16, per_device_batch=8, epochs=1.0, max_steps=40,
                        max_length=192, rows_per_axis=640, layers_fraction=0.5, save_steps=10),
    "tiny": ExpertConfig(bf16=False, rank=4, alpha=8, dropout=0.0, learning_rate=5e-3, batch_size=4, per_device_batch=2,
                         max_steps=2, max_length=64, rows_per_axis=8, heldout_rows=4, save_steps=1,
                         logging_steps=1),
}


def preset(name: str, **overrides) -> ExpertConfig:
    if name not in PRESETS:
        raise InvalidInput(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    bad = [k for k in overrides if k not in ExpertConfig.__dataclass_fields__]
    if bad:
        raise InvalidInput(f"unknown expert config field(s) {bad}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class AxisData:
    """Training/held-out examples for one axis (prompt, response), plus what they came from."""

    axis: str
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    sources: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)   # source -> rows dropped as evaluation prompts
