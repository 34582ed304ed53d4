"""Experts: the loaded experts and their cards; load another adapter folder (by name, from the
experts folder or the runs folder only); train a new expert on the data directory or an
uploaded file, with progress, a live loss curve and Cancel.

Training runs ``alignx.experts.train_expert`` in a worker thread on a fresh copy of the base
model (the served model is never modified), writing to the runs folder (``ctx.runs_dir``).
An uploaded file is validated with ``load_sft_file`` before anything starts.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Iterator

import gradio as gr

from alignx.data.records import AXES, DataError
from app.context import AppContext
from app.routing import AXIS_COLORS, empty_figure

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PRESETS = ("tiny", "cpu")
SOURCES = ("data directory", "uploaded file")
CARD_HEADERS = ["name", "axis", "base model", "train rows", "steps", "held-out loss", "base loss", "wall time", "made by"]


def card_row(name: str, card: dict) -> list:
    data, losses = card.get("data") or {}, card.get("losses") or {}

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "–"

    return [name, card.get("axis", "–"), card.get("base_model", "–"), num(data.get("train_rows"), "d"),
            num(card.get("steps"), "d"), num(losses.get("heldout_response_loss"), ".3f"),
            num(losses.get("heldout_response_loss_base"), ".3f"),
            f"{card['wall_time_s']:.0f} s" if isinstance(card.get("wall_time_s"), (int, float)) else "–",
            card.get("command") or "–"]


def check_name(name) -> str:
    """An expert / folder name: letters, digits, '-' and '_' (no path separators, no '..')."""
    if not isinstance(name, str) or not NAME.match(name.strip()):
        raise gr.Error(f"Expert name {name!r}: use 1-64 letters, digits, '-' and '_' (no paths).")
    return name.strip()


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, every link resolved, lies in ``root`` (resolved too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except OSError:          # a link loop
        return False


def uploads_only(component: gr.File) -> gr.File:
    """Make ``component`` accept only files uploaded to this server (gradio's upload folder).

    An API client can send a file input as ``{"path": ...}`` naming a file on the server, or as a
    URL for the server to download. Gradio refuses a server path that was not uploaded ("not
    uploaded by a user") but downloads a URL (blocking private addresses). The copy-to-cache step
    every input file passes through (``[async_]move_resource_to_block_cache``) is guarded on this
    instance: a URL is refused, and so, as a second line behind gradio's check, is any path
    outside the upload folder."""
    from gradio.utils import get_upload_folder
    from gradio_client.utils import is_http_url_like

    def check(path) -> None:
        if path is None:
            return
        if is_http_url_like(str(path)):
            raise gr.Error("Upload the training file; a URL is not fetched.")
        if not inside(Path(path), Path(get_upload_folder())):
            raise gr.Error(f"{Path(str(path)).name!r} was not uploaded to this server: upload the file "
                           f"(gradio_client: handle_file); server paths are refused.")

    move, move_async = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def guarded(path):
        check(path)
        return move(path)

    async def guarded_async(path):
        check(path)
        return await move_async(path)

    component.move_resource_to_block_cache, component.async_move_resource_to_block_cache = guarded, guarded_async
    return component


def loss_figure(points: list[tuple[int, float]], axis: str = ""):
    import plotly.graph_objects as go

    if not points:
        return empty_figure("The training loss appears here, step by step", height=280)
    fig = go.Figure(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                               line=dict(color=AXIS_COLORS.get(axis, "#4f46e5"), width=2), name="train loss"))
    fig.update_layout(title=dict(text="Training loss", x=0.02, font=dict(size=14)), height=280,
                      xaxis_title="step", yaxis_title="loss", plot_bgcolor="white", paper_bgcolor="white",
                      margin=dict(l=40, r=10, t=40, b=35), yaxis=dict(gridcolor="#e2e8f0"))
    return fig


class Training:
    """A session's training run: its cancel flag, losses so far, and outcome."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.active = False

    def __deepcopy__(self, memo) -> "Training":
        return type(self)()


class Experts:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self._load_lock = threading.Lock()

    # --- listing and loading ---------------------------------------------------------------------
    def roots(self) -> dict[str, Path]:
        from alignx.experts.io import DEFAULT_EXPERTS_DIR

        return {"experts": Path(self.ctx.studio.experts_dir or DEFAULT_EXPERTS_DIR), "runs": Path(self.ctx.runs_dir)}

    def folders(self) -> dict[str, Path]:
        """Loadable adapter folders by choice name: ``NAME`` (experts folder) or ``runs/NAME``. A
        folder that resolves outside its root (a symlink pointing elsewhere) is not offered."""
        from alignx.experts.io import list_experts

        out = {}
        for root_name, root in self.roots().items():
            for name, path in list_experts(root).items():
                if inside(path, root):
                    out[name if root_name == "experts" else f"runs/{name}"] = path
        return out

    def table(self) -> list[list]:
        return [card_row(n, c) for n, c in self.ctx.studio.experts.items()]

    def choices(self) -> list[str]:
        loaded = {Path(c.get("path", "")).resolve() for c in self.ctx.studio.experts.values()}
        return [k for k, p in self.folders().items() if p.resolve() not in loaded]

    def refresh(self):
        return self.table(), gr.update(choices=self.choices(), value=None)

    def load(self, choice: str):
        """Load an adapter folder onto the served model as a new expert (a new Playground mode)."""
        if not choice:
            raise gr.Error("Pick an adapter folder first.")
        prefix, _, rest = choice.partition("/")
        name = check_name(rest if prefix == "runs" and rest else choice)
        folder = self.folders().get(choice)
        if folder is None:
            raise gr.Error(f"{choice!r} is not an adapter folder of the experts or runs folder (a link "
                           f"to a folder elsewhere is not one).")
        studio = self.ctx.studio
        from alignx import methods
        from alignx.errors import AlignXError

        try:
            with self._load_lock:
                studio.add_expert(folder, name)
        except AlignXError as exc:      # named by its choice, not by the server's folders
            raise gr.Error(str(exc).replace(str(folder), choice)) from None
        gr.Info(f"Loaded expert {name!r}: mode expert:{name} is now in the Playground's list and a "
                f"Side-by-side column.")
        return (self.table(), gr.update(choices=self.choices(), value=None),
                gr.update(choices=methods.modes(studio)))

    # --- training --------------------------------------------------------------------------------
    def validate(self, source: str, upload, axis: str):
        """(pairs or None, description) for the chosen source; a bad file raises gr.Error."""
        if source == "data directory":
            return None, "the data directory"
        if not upload:
            raise gr.Error("Upload a .json, .jsonl or .csv training file first (or choose the data directory).")
        from alignx.data.loaders import load_sft_file

        path = Path(upload if isinstance(upload, str) else upload.name)
        try:
            records = load_sft_file(path, axis=axis)
        except DataError as exc:
            raise gr.Error(f"Bad training file: {str(exc).replace(str(path), path.name)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise gr.Error(f"Bad training file {path.name}: {exc}") from None
        if len(records) < 2:
            raise gr.Error(f"Bad training file {path.name}: need at least 2 rows, found {len(records)}.")
        return [(r.prompt, r.response) for r in records], f"{path.name} ({len(records)} rows)"

    def train(self, axis: str, name: str, preset_name: str, source: str, upload, run: Training,
              progress=gr.Progress()) -> Iterator[tuple]:
        """Yields (loss figure, status) while training; the expert lands in the runs folder."""
        if axis not in AXES:
            raise gr.Error(f"Unknown axis {axis!r}; choose from {list(AXES)}.")
        if preset_name not in PRESETS:
            raise gr.Error(f"Unknown preset {preset_name!r}; choose from {list(PRESETS)}.")
        if source not in SOURCES:
            raise gr.Error(f"Unknown source {source!r}; choose from {list(SOURCES)}.")
        name = check_name(name or axis)
        pairs, described = self.validate(source, upload, axis)
        from alignx.experts import preset

        cfg = preset(preset_name)
        losses: list[tuple[int, float]] = []
        outcome: dict = {}
        run.cancel, run.active = threading.Event(), True

        def work():
            from alignx.experts import TrainingCancelled, train_expert
            from alignx.models import load_model

            try:
                lm = load_model(self.ctx.studio.lm.spec, device=self.ctx.studio.lm.device)
                outcome["path"] = train_expert(
                    lm, axis, self.ctx.runs_dir, cfg, pairs=pairs, name=name,
                    on_loss=lambda _a, step, loss: losses.append((step, loss)), should_stop=run.cancel.is_set,
                    command=f"app: train {axis} expert {name!r} on {described}, preset {preset_name}")
            except TrainingCancelled as exc:
                outcome["cancelled"] = str(exc)
            except Exception as exc:   # noqa: BLE001 - reported in the page
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name="alignx-train", daemon=True)
        t0 = time.perf_counter()
        thread.start()
        total = cfg.max_steps if cfg.max_steps > 0 else None
        try:
            shown = -1
            while thread.is_alive():
                thread.join(0.25)
                step = losses[-1][0] if losses else 0
                progress((step, total) if total else None, desc=f"training {name}: step {step}", unit="steps")
                if len(losses) != shown:
                    shown = len(losses)
                    yield loss_figure(list(losses), axis), self._status(name, losses, total, t0)
        finally:
            if thread.is_alive():       # the page went away or the event was cancelled
                run.cancel.set()
                thread.join(60)
            run.active = False
        if "error" in outcome:
            raise gr.Error(f"Training failed: {outcome['error']}")
        if "cancelled" in outcome:
            yield loss_figure(losses, axis), (f"**Cancelled** after {losses[-1][0] if losses else 0} steps; "
                                              f"checkpoint kept in `{Path(self.ctx.runs_dir) / '.work' / name}`.")
            return
        yield loss_figure(losses, axis), (f"**Done** in {time.perf_counter() - t0:.0f} s: expert saved to "
                                          f"`{outcome['path']}`. Load it above as `runs/{name}`.")

    @staticmethod
    def _status(name, losses, total, t0) -> str:
        step = losses[-1][0] if losses else 0
        last = f" · loss {losses[-1][1]:.3f}" if losses else " · loading the model and data…"
        return f"Training **{name}**: step {step}{f' / {total}' if total else ''}{last} · {time.perf_counter() - t0:.0f} s"

    def request_cancel(self, run: Training) -> str:
        if not run.active:
            return gr.skip()
        run.cancel.set()
        return "Cancelling after the current step…"


def build(ctx: AppContext, playground_mode=None) -> None:
    cb = Experts(ctx)
    run = gr.State(Training())
    gr.Markdown("### Loaded experts", elem_classes=["section-title"])
    table = gr.Dataframe(cb.table(), headers=CARD_HEADERS, interactive=False, elem_id="experts-table",
                         show_row_numbers=False, wrap=True, column_widths=["9%", "8%", "14%", "8%", "6%", "9%", "8%",
                                                                         "8%", "30%"])
    with gr.Row(equal_height=True):
        folder = gr.Dropdown(cb.choices(), value=None, label="Adapter folder", scale=3, elem_id="experts-folder",
                             allow_custom_value=True,   # validated by Experts.load (names only, no paths)
                             info="sub-folders of the experts folder, or runs/NAME for experts trained here")
        load_btn = gr.Button("Load adapter", variant="secondary", scale=1, elem_id="experts-load")
        refresh_btn = gr.Button("Refresh", variant="secondary", scale=1, size="sm")

    gr.Markdown("### Train a new expert", elem_classes=["section-title"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            with gr.Row():
                axis = gr.Dropdown(list(AXES), value=AXES[0], label="Axis", elem_id="train-axis")
                name = gr.Textbox(value="my-expert", label="Expert name", elem_id="train-name",
                                  info="letters, digits, - and _")
            with gr.Row():
                preset_name = gr.Radio(list(PRESETS), value="tiny", label="Preset", elem_id="train-preset",
                                       info="tiny: a 2-step demo · cpu: the shipped recipe (minutes)")
                source = gr.Radio(list(SOURCES), value="uploaded file", label="Data", elem_id="train-source")
            upload = uploads_only(gr.File(label="Training file (.json / .jsonl / .csv: prompt,response or Alpaca rows)",
                                          file_types=[".json", ".jsonl", ".csv"], type="filepath", elem_id="train-file",
                                          height=120))
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="train-start")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
            status = gr.Markdown("", elem_id="train-status", elem_classes=["status-line"])
        with gr.Column(scale=3, min_width=360):
            plot = gr.Plot(loss_figure([]), show_label=False, elem_id="train-loss")

    load_outputs = [table, folder] + ([playground_mode] if playground_mode is not None else [])
    load_fn = cb.load if playground_mode is not None else (lambda c: cb.load(c)[:2])
    load_btn.click(load_fn, folder, load_outputs, api_name="load_expert", **ctx.model_events())
    refresh_btn.click(cb.refresh, None, [table, folder], api_name="list_experts", queue=False)
    job = train_btn.click(cb.train, [axis, name, preset_name, source, upload, run], [plot, status],
                          api_name="train_expert", **ctx.model_events())
    cancel_btn.click(cb.request_cancel, run, status, api_name="cancel_training", queue=False,
                     show_progress="hidden")
    del job
