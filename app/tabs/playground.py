"""Playground: one prompt, one mode, the answer streamed token by token, with a Stop button.

Modes come from the method families (``alignx.methods``); the tab opens on
``methods.default_mode`` (the fusion when a router is loaded, the base otherwise). With a MoCaE
router loaded the tab also has the routing panel (``routing_panel``): calibration sliders (one
preference per expert), the routing chart, the latent map, and the per-token routing weights of
a fused answer drawn under the text; modes that take a calibration use the sliders'.
"""
from __future__ import annotations

import inspect
import time
from typing import Iterator

import gradio as gr

from alignx import methods
from alignx.arena import END_OF_TURN, STOPPED, Answer, stream_answers
from alignx.generation import Sampling
from app.context import AppContext, Run, check_prompt, policy_for, sampling_from
from app.examples import example_prompts
from app.routing import token_weights_html
from app.signature import with_params
from app.streaming import iterate_in_thread
from app.tabs import routing_panel
from app.tabs.routing_panel import Router


def summary(answer: Answer, stopped: bool = False) -> str:
    """One status line: tokens, time, speed and why the answer ended."""
    seconds = answer.seconds if answer.ended else time.perf_counter() - answer.started
    why = STOPPED if stopped else {END_OF_TURN: "finished (end of turn)"}.get(answer.ended, answer.ended)
    speed = answer.tokens / seconds if seconds > 0 else 0.0
    return f"{answer.tokens} tokens · {seconds:.1f} s · {speed:.1f} tokens/s · {why}"


class Playground:
    """Callbacks of the tab; the session's ``Run`` comes in through ``gr.State``."""

    def __init__(self, ctx: AppContext, router: Router):
        self.ctx, self.router = ctx, router

    def _policy(self, mode, calibration=None):
        """The mode's policy; a mode whose family takes a calibration gets the sliders'."""
        takes = {m.name: m.settings for m in methods.describe(self.ctx.studio)}.get(mode, ())
        if calibration is not None and "calibration" in takes:
            return policy_for(self.ctx.studio, mode, calibration=calibration)
        return policy_for(self.ctx.studio, mode)

    def _answers(self, prompt, mode, max_new_tokens, temperature, top_p, seed, run: Run, calibration=None):
        prompt = check_prompt(prompt)
        sampling = sampling_from(max_new_tokens, temperature, top_p, seed)
        policy = self._policy(mode, calibration)
        stop = run.begin()
        try:
            for answers in iterate_in_thread(lambda: stream_answers({mode: policy}, prompt, sampling, stop), stop):
                run.answers = answers
                yield answers[mode]
        finally:
            run.end()

    def generate(self, prompt: str, mode: str, max_new_tokens: float, temperature: float, top_p: float,
                 seed: float, run: Run) -> Iterator[tuple[str, str]]:
        """Stream the answer of ``mode`` to ``prompt``; yields (text so far, per-token routing
        weights as HTML: empty without a router)."""
        for answer in self._answers(prompt, mode, max_new_tokens, temperature, top_p, seed, run):
            yield answer.text if answer.ended else answer.text.lstrip(), token_weights_html(answer.weights)

    def _generate_routed(self, prompt, mode, max_new_tokens, temperature, top_p, seed, *rest):
        *sliders, run = rest
        cal = self.router.calibration(*sliders)
        for answer in self._answers(prompt, mode, max_new_tokens, temperature, top_p, seed, run, cal):
            yield answer.text if answer.ended else answer.text.lstrip(), token_weights_html(answer.weights)

    def generate_routed(self):
        """As ``generate``, with the calibration of the sliders (lambda1, lambda2, T, one preference
        per expert) for modes that take one; also yields the per-token routing weights as HTML."""
        e = inspect.Parameter.empty
        params = [("prompt", str, e), ("mode", str, e), ("max_new_tokens", float, e), ("temperature", float, e),
                  ("top_p", float, e), ("seed", float, e), *self.router.slider_params(), ("run", Run, e)]
        return with_params(self._generate_routed, params)

    def status(self, run: Run):
        """After a generation: its summary (a stopped one keeps what Stop wrote)."""
        if run.stopped or not run.answers:
            return gr.skip()
        return summary(next(iter(run.answers.values())))

    def stop(self, run: Run):
        if not run.request_stop():
            return gr.skip()
        if not run.answers:
            return "stopped before the first token"
        return summary(next(iter(run.answers.values())), stopped=True)


def build(ctx: AppContext) -> tuple[gr.Dropdown, list]:
    """Lays the tab out; returns its mode dropdown and calibration sliders (empty without a router)."""
    router = Router(ctx)
    cb = Playground(ctx, router)
    routed = ctx.studio.mocae is not None
    modes = methods.modes(ctx.studio)
    defaults = Sampling()
    run = gr.State(Run())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, max_lines=12, autofocus=True, elem_id="pg-prompt",
                                placeholder="Ask something, or pick an example below…")
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="pg-generate", scale=3)
                route_btn = gr.Button("Route only", variant="secondary", elem_id="pg-route", scale=1,
                                      visible=routed)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="pg-stop", scale=1)
            answer = gr.Textbox(label="Answer", lines=8, max_lines=30, interactive=False, autoscroll=True,
                                buttons=["copy"], elem_id="pg-answer")
            status = gr.Markdown("", label="status", elem_id="pg-status", elem_classes=["status-line"])
            weights = gr.HTML("", elem_id="pg-token-weights", padding=False,   # MoCaE routes, NegotiaX negotiates
                              visible=routed or any(m.startswith("negotiax") for m in modes))
        with gr.Column(scale=1, min_width=260, elem_classes=["side-panel"]):
            mode = gr.Dropdown(modes, value=methods.default_mode(ctx.studio), label="Mode", elem_id="pg-mode",
                               info="base model, one expert, or a fusion")
            with gr.Accordion("Sampling", open=True):
                max_new_tokens = gr.Slider(1, 1024, value=defaults.max_new_tokens, step=1, precision=0,
                                           label="Max new tokens", elem_id="pg-max-tokens")
                temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature",
                                        info="0 = greedy", elem_id="pg-temperature")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p", elem_id="pg-top-p")
                seed = gr.Number(value=defaults.seed, precision=0, label="Seed", info="used when temperature > 0",
                                 elem_id="pg-seed")
    sliders = []
    if routed:
        with gr.Row(equal_height=False, elem_classes=["routing-panel"]):
            with gr.Column(scale=1, min_width=260, elem_classes=["cal-panel"]):
                gr.Markdown("**Calibration** · moves the chart without rerunning the model", elem_classes=["caption"])
                sliders = routing_panel.build_controls(router)
            with gr.Column(scale=3):
                chart, caption, latent = routing_panel.build_outputs(router)
    else:
        gr.Markdown("**Routing panel unavailable:** no MoCaE router is loaded (it needs experts and a "
                    "trained router in the experts folder). Base and expert modes work as usual.",
                    elem_classes=["note", "routing-missing"], elem_id="routing-missing")
    examples = example_prompts()
    with gr.Row(elem_classes=["examples-row"]):
        for axis, prompts in examples.items():
            if prompts:
                gr.Examples([[p] for p in prompts], inputs=[prompt], label=f"{axis.capitalize()} examples",
                            cache_examples=False)

    sampling = [prompt, mode, max_new_tokens, temperature, top_p, seed]
    clear_out = [answer, status, weights]
    start = gr.on([generate_btn.click, prompt.submit], lambda: ("",) * len(clear_out), None, clear_out,
                  queue=False, api_name="clear", api_visibility="private")
    if routed:
        routed_start = start.then(router.page_route(), [prompt, *sliders], [chart, latent, caption],
                                  api_name="route_before_generate", api_visibility="private", **ctx.model_events())
        gen = routed_start.then(cb.generate_routed(), [*sampling, *sliders, run], [answer, weights],
                                api_name="generate", **ctx.model_events())
        routing_panel.wire(router, ctx, prompt, route_btn, sliders, chart, caption, latent)
    else:
        gen = start.then(cb.generate, [*sampling, run], [answer, weights], api_name="generate",
                         **ctx.model_events())
    gen.success(cb.status, run, status, queue=False, api_name="status", api_visibility="private",
                show_progress="hidden")
    stop_btn.click(cb.stop, run, status, cancels=[gen], queue=False, api_name="stop", show_progress="hidden")
    routing_panel.register_api(router, ctx)
    return mode, sliders
