"""The page: a header naming the served model, then one tab per part of the studio."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from app import zerogpu
from app.context import MODEL_QUEUE, AppContext
from app.tabs import about, arena, evaluation, experts, interpret, personalize, playground
from app.tabs.routing_panel import MAX_SESSIONS as ROUTED_SESSIONS

CSS_FILE = Path(__file__).resolve().parents[1] / "assets" / "app.css"
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald", neutral_hue="slate")


def header_html(ctx: AppContext) -> str:
    lm, studio = ctx.studio.lm, ctx.studio
    experts = ", ".join(studio.experts) or "none loaded"
    facts = [("model", lm.name), ("weights", lm.source), ("device", str(lm.device)),
             ("experts", experts), ("router", "loaded" if studio.mocae is not None else "none")]
    items = "".join(f'<span class="fact"><b>{html.escape(k)}</b> {html.escape(v)}</span>' for k, v in facts)
    level = " notice-error" if lm.source == "tiny-random" else ""     # the no-model fallback: answers are noise
    notice = f'<div class="notice{level}" id="ax-notice">{html.escape(ctx.notice)}</div>' if ctx.notice else ""
    return (f'<div class="ax-header"><div class="ax-title">AlignX Studio</div>'
            f'<div class="ax-sub">Helpful · harmless · honest: calibrated experts for one model</div>'
            f'<div class="ax-facts">{items}</div>{notice}</div>')


def build_demo(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="AlignX Studio") as demo:
        gr.HTML(header_html(ctx), padding=False, elem_id="ax-header-box")
        with gr.Tabs():
            with gr.Tab("Playground", id="playground", elem_id="tab-playground"):
                mode, sliders = playground.build(ctx)
            with gr.Tab("Side by side", id="side-by-side", elem_id="tab-side-by-side") as sbs_tab:
                arena.build(ctx, demo, sbs_tab)
            with gr.Tab("Personalize", id="personalize", elem_id="tab-personalize") as personal_tab:
                personalize.build(ctx, personal_tab)
            with gr.Tab("Interpretability", id="interpret", elem_id="tab-interpret") as interp_tab:
                interpret.build(ctx, interp_tab)
            with gr.Tab("Experts", id="experts", elem_id="tab-experts"):
                experts.build(ctx, mode)
            with gr.Tab("Evaluation", id="evaluation", elem_id="tab-evaluation"):
                evaluation.build(ctx, demo, sliders)
            with gr.Tab("About", id="about", elem_id="tab-about"):
                about.build(ctx)
    demo.queue(default_concurrency_limit=ctx.concurrency)
    zerogpu.wrap_model_events(demo, MODEL_QUEUE)        # ZeroGPU Spaces: a GPU while the model runs
    return demo


MAX_UPLOAD = "20mb"     # training files and anything else uploaded: larger ones are refused by gradio
# Sessions whose state gradio keeps (the oldest is dropped beyond): each costs about 0.4 MiB on this
# page (a copy of every component's config; bench/load.py measures it), so gradio's default of
# 10000 would let idle sessions take about 4 GiB. The routing panel keeps as many routes.
MAX_SESSIONS = ROUTED_SESSIONS


def _unknown_endpoint(request, exc):
    """A call to an API name the app does not have: 404 with the names it has (gradio's own answer
    is a bare 500)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": str(exc)}, status_code=404)


def launch(demo: gr.Blocks, **kwargs):
    """``demo.launch`` with the studio's theme and stylesheet (gradio 6 takes both here), an upload
    size limit (``MAX_UPLOAD``), at most ``MAX_SESSIONS`` sessions kept in memory, error messages
    for API clients and a 404 for unknown endpoints.

    ``show_error``: gradio sends the message of a ``gr.Error`` to the client but hides every other
    error behind ``{"error": null}``, including its own checks of a malformed call (too few values,
    a string for a slider, NaN for an integer); with it on, the client gets that one-line message
    (never a traceback: that stays in the server log)."""
    from gradio.route_utils import FnIndexInferError

    kwargs.setdefault("footer_links", ["api", "settings"])
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    kwargs.setdefault("state_session_capacity", MAX_SESSIONS)
    kwargs.setdefault("show_error", True)
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs.setdefault("exception_handlers", {FnIndexInferError: _unknown_endpoint})
    return demo.launch(theme=THEME, css_paths=[CSS_FILE], app_kwargs=app_kwargs, **kwargs)
