"""Playground: one prompt, one mode, the answer streamed token by token, with a Stop button."""
from __future__ import annotations

import time
from typing import Iterator

import gradio as gr

from alignx.arena import END_OF_TURN, STOPPED, Answer, stream_answers
from alignx.generation import Sampling
from app.context import AppContext, Run, check_prompt, policy_for, sampling_from
from app.examples import example_prompts
from app.streaming import iterate_in_thread


def summary(answer: Answer, stopped: bool = False) -> str:
    """One status line: tokens, time, speed and why the answer ended."""
    seconds = answer.seconds if answer.ended else time.perf_counter() - answer.started
    why = STOPPED if stopped else {END_OF_TURN: "finished (end of turn)"}.get(answer.ended, answer.ended)
    speed = answer.tokens / seconds if seconds > 0 else 0.0
    return f"{answer.tokens} tokens · {seconds:.1f} s · {speed:.1f} tokens/s · {why}"


class Playground:
    """Callbacks of the tab; the session's ``Run`` comes in through ``gr.State``."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def generate(self, prompt: str, mode: str, max_new_tokens: float, temperature: float, top_p: float,
                 seed: float, run: Run) -> Iterator[str]:
        """Stream the answer of ``mode`` to ``prompt``; yields the text so far."""
        prompt = check_prompt(prompt)
        sampling = sampling_from(max_new_tokens, temperature, top_p, seed)
        policy = policy_for(self.ctx.studio, mode)
        stop = run.begin()
        try:
            for answers in iterate_in_thread(
                    lambda: stream_answers({mode: policy}, prompt, sampling, stop, self.ctx.model_lock), stop):
                run.answers = answers
                answer = answers[mode]
                yield answer.text if answer.ended else answer.text.lstrip()
        finally:
            run.end()

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


def build(ctx: AppContext) -> None:
    cb = Playground(ctx)
    modes = ctx.studio.modes()
    defaults = Sampling()
    run = gr.State(Run())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=4, max_lines=12, autofocus=True, elem_id="pg-prompt",
                                placeholder="Ask something, or pick an example below…")
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="pg-generate", scale=3)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="pg-stop", scale=1)
            answer = gr.Textbox(label="Answer", lines=12, max_lines=30, interactive=False, autoscroll=True,
                                buttons=["copy"], elem_id="pg-answer")
            status = gr.Markdown("", label="status", elem_id="pg-status", elem_classes=["status-line"])
        with gr.Column(scale=1, min_width=260, elem_classes=["side-panel"]):
            mode = gr.Dropdown(modes, value=modes[0], label="Mode", elem_id="pg-mode",
                               info="base model, one expert, or a MoCaE fusion")
            max_new_tokens = gr.Slider(1, 1024, value=defaults.max_new_tokens, step=1, precision=0,
                                       label="Max new tokens", elem_id="pg-max-tokens")
            temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature",
                                    info="0 = greedy", elem_id="pg-temperature")
            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p", elem_id="pg-top-p")
            seed = gr.Number(value=defaults.seed, precision=0, label="Seed", info="used when temperature > 0",
                             elem_id="pg-seed")
    examples = example_prompts()
    with gr.Row(elem_classes=["examples-row"]):
        for axis, prompts in examples.items():
            if prompts:
                gr.Examples([[p] for p in prompts], inputs=[prompt], label=f"{axis.capitalize()} examples",
                            cache_examples=False)

    inputs = [prompt, mode, max_new_tokens, temperature, top_p, seed, run]
    start = gr.on([generate_btn.click, prompt.submit], lambda: ("", ""), None, [answer, status],
                  queue=False, api_name="clear", api_visibility="private")
    gen = start.then(cb.generate, inputs, answer, api_name="generate", **ctx.model_events())
    gen.success(cb.status, run, status, queue=False, api_name="status", api_visibility="private",
                show_progress="hidden")
    stop_btn.click(cb.stop, run, status, cancels=[gen], queue=False, api_name="stop", show_progress="hidden")
