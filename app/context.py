"""What every tab shares: the loaded ``Studio``, the vote store, and per-session run control."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from alignx.arena import VoteStore
from alignx.generation import Sampling
from alignx.studio import Studio

MODEL_QUEUE = "model"   # concurrency_id shared by every event that runs the model


def default_runs_dir() -> Path:
    """``$ALIGNX_RUNS_DIR``, else ``<alignx cache>/runs`` (``~/.cache/alignx/runs`` by default)."""
    if os.environ.get("ALIGNX_RUNS_DIR"):
        return Path(os.environ["ALIGNX_RUNS_DIR"]).expanduser()
    from alignx.models import cache_dir

    return cache_dir() / "runs"


@dataclass
class AppContext:
    studio: Studio
    votes: VoteStore
    concurrency: int = 1            # model events running at once (the queue holds the rest)
    notice: str = ""                # shown under the title, e.g. why a fallback model is served
    judge: object | None = None     # an alignx.eval judge for the side-by-side badges (None: length only)
    runs_dir: Path | None = None    # where experts trained from the page (and evaluations) are written
    sweep_dirs: list = field(default_factory=list)   # where to look for a calibration sweep (pareto.json)

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.runs_dir) if self.runs_dir is not None else default_runs_dir()
        if not self.sweep_dirs:
            repo = Path(__file__).resolve().parents[1]
            self.sweep_dirs = [self.runs_dir / "sweep", repo / "results" / "sweep", repo / "results"]

    @property
    def model_name(self) -> str:
        return self.studio.lm.name

    @property
    def model_lock(self) -> threading.RLock:
        """The served model's one lock (``alignx.generation.model_lock``): every forward pass of the
        library takes it, so concurrent requests interleave pass by pass."""
        return self.studio.lock

    def model_events(self) -> dict:
        """Keyword arguments for every event that runs the model: one shared, limited queue."""
        return {"concurrency_id": MODEL_QUEUE, "concurrency_limit": self.concurrency}


class Run:
    """One session's current generation in one tab: its stop signal and whether it runs.

    Kept in ``gr.State``; gradio deep-copies a state's initial value for each new session,
    which here means a fresh, independent ``Run`` (an Event itself cannot be copied).
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.active = False
        self.answers: dict = {}         # mode -> alignx.arena.Answer, updated while streaming

    def __deepcopy__(self, memo) -> "Run":
        return type(self)()

    def begin(self, stop: threading.Event | None = None) -> threading.Event:
        """A fresh stop signal for a new generation (an old one may still be winding down)."""
        self.stop = stop or threading.Event()
        self.active, self.answers = True, {}
        return self.stop

    def end(self) -> None:
        self.active = False

    def request_stop(self) -> bool:
        """Signal the running generation; False when nothing was running."""
        if not self.active:
            return False
        self.stop.set()
        return True

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()


def sampling_from(max_new_tokens, temperature, top_p, seed=0) -> Sampling:
    """Validated ``Sampling`` from UI/API values; a bad value raises ``gr.Error``."""
    try:
        return Sampling(_as_int(max_new_tokens, "max_new_tokens"), float(temperature), float(top_p),
                        None if seed is None else _as_int(seed, "seed"))
    except (TypeError, ValueError) as exc:
        raise gr.Error(str(exc)) from None


def _as_int(value, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be an integer, got {value!r}")


MAX_PROMPT_CHARS = 32_000    # about 8k tokens, SmolLM2's context; a longer text is refused before tokenizing


def check_prompt(prompt) -> str:
    """The stripped prompt; ``gr.Error`` for an empty one, one over ``MAX_PROMPT_CHARS``, one that
    is not valid Unicode or holds only control characters (the library also refuses a prompt longer
    than the model's context, in tokens)."""
    from alignx.errors import InvalidInput
    from alignx.generation import check_text, has_visible_text

    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("Type a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}.")
    try:
        check_text(prompt)
    except InvalidInput as exc:
        raise gr.Error(str(exc)) from None
    if not has_visible_text(prompt):
        raise gr.Error("The prompt holds only whitespace and control characters: type some text.")
    return prompt.strip()


def policy_for(studio: Studio, mode: str, **settings):
    """``alignx.methods.policy``; a bad mode or setting is a ``gr.Error``."""
    from alignx import methods
    from alignx.errors import AlignXError

    try:
        return methods.policy(studio, mode, **settings)
    except AlignXError as exc:
        raise gr.Error(str(exc)) from None
