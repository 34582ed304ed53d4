"""Side by side: one prompt answered by every mode in columns, votes per objective, Elo leaderboard.

Columns come from the method registry (``alignx.methods.modes``) whenever the tab is opened
(``gr.render``), so an expert loaded in the Experts tab, or a newly registered method family,
gets its column without a restart; a checkbox list picks which modes are shown. Vote buttons and
the leaderboard have one entry per objective of the Studio (``studio.objectives``). Badges come
from ``alignx.arena.badges`` (only measured values), ratings from ``alignx.arena.elo_ratings``.
"""
from __future__ import annotations

import functools
import html
import threading
from typing import Iterator

import gradio as gr

from alignx import methods
from alignx.arena import K_FACTOR, INITIAL_ELO, STOPPED, Vote, badges, elo_ratings, stream_answers
from alignx.data.records import AXES
from alignx.errors import AlignXError
from app import zerogpu
from app.context import AppContext, Run, check_prompt, policy_for, sampling_from
from app.examples import example_prompts
from app.streaming import iterate_in_thread

DEFAULT_MAX_TOKENS = 128
MAX_ANSWER_CHARS = 50_000      # a voted answer (the longest generation, 2048 tokens, is far shorter)


class Comparison(Run):
    """A session's current side-by-side run, and which axes it has been voted on."""

    def __init__(self) -> None:
        super().__init__()
        self.prompt, self.meta, self.voted = "", {}, set()
        self.judged: dict[str, dict] = {}      # mode -> badges with the judge's measurements
        self.columns: list[str] = []           # the modes of the running / last comparison

    def begin(self, prompt: str = "", meta: dict | None = None, stop: threading.Event | None = None):
        self.prompt, self.meta, self.voted, self.judged = prompt, dict(meta or {}), set(), {}
        return super().begin(stop)


def badge_html(prompt: str, answer, stopped: bool = False, measured: dict | None = None) -> str:
    """Measured badges of one column (``alignx.arena.badges``, or ``measured`` if given) and its state."""
    measured = measured if measured is not None else badges(prompt, answer)
    state = STOPPED if stopped and not answer.ended else (answer.ended or "streaming…")
    spans = "".join(f'<span class="badge badge-{html.escape(k.split()[0])}" title="{html.escape(k)}">'
                    f'{"" if k == "length" else html.escape(k) + ": "}{html.escape(str(v))}</span>'
                    for k, v in measured.items())
    return f'{spans}<span class="badge badge-state">{html.escape(state)}</span>'


class Arena:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    @property
    def modes(self) -> list[str]:
        """The modes the Studio serves now (an expert loaded since the page was built included)."""
        return methods.modes(self.ctx.studio)

    @property
    def shown(self) -> list[str]:
        """The columns a page opens with: every mode but the ablation variants (one tick away)."""
        return [m.name for m in methods.describe(self.ctx.studio) if not m.ablation]

    @property
    def axes(self) -> list[str]:
        return [o.name for o in self.ctx.studio.objectives]

    # --- core, shared by the page and the API ---------------------------------------------------
    def _stream(self, prompt, max_new_tokens, temperature, top_p, seed, stop: threading.Event,
                modes: list[str] | None = None):
        """Validated inputs and the stream of every mode's answer (run in its own thread)."""
        prompt = check_prompt(prompt)
        sampling = sampling_from(max_new_tokens, temperature, top_p, seed)
        policies = {mode: policy_for(self.ctx.studio, mode) for mode in (modes or self.shown)}
        return prompt, sampling, iterate_in_thread(lambda: stream_answers(policies, prompt, sampling, stop), stop)

    def leaderboard(self) -> dict:
        """Elo per objective per mode for the served model, from every stored vote."""
        votes = self.ctx.votes.votes(self.ctx.model_name)
        table = elo_ratings(votes, modes=self.shown, axes=self.axes)
        return {"model": self.ctx.model_name, "votes": len(votes), "k": K_FACTOR, "initial": INITIAL_ELO,
                "axes": {axis: [{"mode": m, "elo": round(r.elo, 1), "wins": r.wins, "games": r.games}
                                for m, r in sorted(table[axis].items(), key=lambda kv: -kv[1].elo)]
                         for axis in self.axes}}

    def record_vote(self, prompt: str, answers: dict, winner: str, axis: str, meta: dict) -> dict:
        try:
            vote = Vote(prompt, dict(answers), winner, axis, self.ctx.model_name, meta, axes=tuple(self.axes))
        except (AlignXError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        self.ctx.votes.add(vote)
        return self.leaderboard()

    def table(self) -> list[list]:
        """Rows for the page: mode, Elo per axis, votes the mode was shown in."""
        board = self.leaderboard()["axes"]
        by_mode: dict[str, dict] = {}
        axes, modes = self.axes, self.shown
        for axis in axes:
            for row in board[axis]:
                by_mode.setdefault(row["mode"], {})[axis] = row
        order = modes + sorted(set(by_mode) - set(modes))
        return [[m] + [round(by_mode[m][a]["elo"]) if a in by_mode[m] else INITIAL_ELO for a in axes]
                + [sum(by_mode[m].get(a, {}).get("games", 0) for a in axes)] for m in order]

    def refresh(self):
        return self.table(), self.votes_caption()

    def refresh_columns(self, chosen: list[str] | None, offered: list[str] | None):
        """The column choices now: modes offered before keep the user's choice, new ones start shown.
        Returns (checkbox update, the modes offered now); unchanged modes skip the re-render."""
        modes, chosen, offered = self.modes, list(chosen or []), list(offered or [])
        shown = set(self.shown)
        value = [m for m in modes if m in chosen or (m not in offered and m in shown)]
        if modes == offered and value == chosen:
            return gr.skip(), gr.skip()
        return gr.update(choices=modes, value=value), modes

    def votes_caption(self) -> str:
        n = self.ctx.votes.count(self.ctx.model_name)
        return (f"{n} vote{'s' if n != 1 else ''} for `{self.ctx.model_name}` · Elo K = {K_FACTOR:g}, "
                f"start {INITIAL_ELO:g}; a vote for a column counts as that mode beating every other column.")

    # --- API endpoints ---------------------------------------------------------------------------
    def api_compare(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0,
                    top_p: float = 1.0, seed: int = 0) -> Iterator[dict]:
        """Answers of every mode to `prompt`, streamed: {mode: answer so far}."""
        _, _, stream = self._stream(prompt, max_new_tokens, temperature, top_p, seed, threading.Event())
        for answers in stream:
            yield {m: a.text if a.ended else a.text.lstrip() for m, a in answers.items()}

    def api_vote(self, prompt: str, answers: dict, winner: str, axis: str) -> dict:
        """Record that `winner` (a mode) gave the best of `answers` ({mode: answer}) on `axis`.
        Every key of `answers` must be a mode this app serves, every answer a string of at most
        MAX_ANSWER_CHARS characters."""
        if not isinstance(answers, dict):
            raise gr.Error(f"answers must be a JSON object {{mode: answer}}, got {type(answers).__name__}")
        unknown = sorted(set(map(str, answers)) - set(methods.modes(self.ctx.studio, include_unlisted=True)))
        if unknown:
            raise gr.Error(f"answers name mode(s) this app does not serve: {unknown[:5]}; available: "
                           f"{', '.join(self.modes)}")
        long = [m for m, a in answers.items() if isinstance(a, str) and len(a) > MAX_ANSWER_CHARS]
        if long:
            raise gr.Error(f"the answer of {long[0]} is longer than {MAX_ANSWER_CHARS:,} characters")
        return self.record_vote(check_prompt(prompt), answers, winner, axis, {"source": "api"})

    def api_leaderboard(self) -> dict:
        """Elo per axis per mode for the served model."""
        return self.leaderboard()

    # --- page callbacks ----------------------------------------------------------------------------
    def compare(self, prompt, max_new_tokens, temperature, top_p, seed, run: Comparison,
                modes: list[str] | None = None) -> Iterator[list]:
        """Yields every column's text, then every column's badges (``modes``: the columns shown)."""
        stop = threading.Event()
        run.columns = list(modes or self.shown)
        prompt, sampling, stream = self._stream(prompt, max_new_tokens, temperature, top_p, seed, stop, run.columns)
        run.begin(prompt, {"source": "ui", "max_new_tokens": sampling.max_new_tokens,
                           "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed},
                  stop)
        try:
            for answers in stream:
                run.answers = answers
                yield self._columns(run)
        finally:
            run.end()
        if self.ctx.judge is not None and not run.stopped:
            run.judged = self.judge_badges(run.prompt, run.answers)
            yield self._columns(run)

    def judge_badges(self, prompt: str, answers: dict) -> dict[str, dict]:
        """Every column's badges with the judge's measurements (a judge failure is shown, not raised)."""
        try:
            return {m: badges(prompt, a, self.ctx.judge) for m, a in answers.items()}   # the judge's model lock
        except Exception as exc:  # noqa: BLE001 - the answers stay; the page says why badges are missing
            gr.Warning(f"The judge could not score these answers: {exc}")
            return {}

    def _columns(self, run: Comparison, stopped: bool = False) -> list:
        answers = [run.answers[m] for m in run.columns]
        texts = [a.text if a.ended else a.text.lstrip() for a in answers]
        return texts + [badge_html(run.prompt, a, stopped, run.judged.get(a.mode)) for a in answers]

    def stop(self, run: Comparison, n_columns: int):
        if not run.request_stop() or not run.answers:
            return [gr.skip()] * (2 * n_columns)
        return [gr.skip()] * n_columns + self._columns(run, stopped=True)[n_columns:]

    def vote(self, winner: str, axis: str, run: Comparison):
        """A vote button: ``winner``'s column is best on ``axis`` for the current comparison."""
        if not run.answers or len(run.answers) < 2:
            gr.Warning("Compare first: a vote needs the answers of at least two modes.")
            return gr.skip(), gr.skip()
        if run.active:
            gr.Warning("Wait until every column has finished (or press Stop), then vote.")
            return gr.skip(), gr.skip()
        if axis in run.voted:
            gr.Warning(f"You already voted on {axis} for this comparison.")
            return gr.skip(), gr.skip()
        meta = dict(run.meta, ended={m: (a.ended or STOPPED) for m, a in run.answers.items()})
        self.record_vote(run.prompt, {m: a.text.strip() for m, a in run.answers.items()}, winner, axis, meta)
        run.voted.add(axis)
        gr.Info(f"Vote saved: {winner} is best on {axis}.")
        return self.table(), self.votes_caption()


def build(ctx: AppContext, demo: gr.Blocks, tab: gr.Tab | None = None) -> None:
    cb = Arena(ctx)
    run = gr.State(Comparison())
    # The inputs below feed events defined only inside the render, so they say they are interactive
    # (gradio renders a component that no build-time event reads as read-only).
    with gr.Row(equal_height=False):
        prompt = gr.Textbox(label="Prompt", lines=3, max_lines=10, scale=4, elem_id="sbs-prompt", interactive=True,
                            placeholder="One prompt, answered by every mode…")
        with gr.Column(scale=1, min_width=200):
            compare_btn = gr.Button("Compare", variant="primary", elem_id="sbs-compare")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="sbs-stop")
    with gr.Row(equal_height=False):
        with gr.Accordion("Sampling (same for every column)", open=False):
            max_new_tokens = gr.Slider(1, 1024, value=DEFAULT_MAX_TOKENS, step=1, precision=0,
                                       label="Max new tokens", elem_id="sbs-max-tokens", interactive=True)
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature", info="0 = greedy",
                                        elem_id="sbs-temperature", interactive=True)
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p", interactive=True)
            seed = gr.Number(value=0, precision=0, label="Seed", info="used when temperature > 0", interactive=True)
        with gr.Accordion("Columns", open=False):
            columns = gr.CheckboxGroup(cb.modes, value=cb.shown, label="Modes shown", elem_id="sbs-columns",
                                       info="every mode of the loaded methods (ablation variants unticked); "
                                            "a newly loaded expert appears here")
        with gr.Accordion("Example prompts", open=False):
            examples = example_prompts()
            gr.Examples([[p] for axis in AXES for p in examples[axis]], inputs=[prompt], cache_examples=False,
                        label="helpful, harmless, honest", examples_per_page=12)

    board = None   # defined below the columns; the render's vote buttons update it

    @gr.render(inputs=[columns], triggers=[columns.change, demo.load])
    def draw(selected):
        modes = [m for m in cb.modes if m in (selected or [])]
        axes = cb.axes
        texts, badge_boxes, vote_buttons = [], [], []
        with gr.Row(elem_classes=["sbs-columns"]):
            for mode in modes:
                with gr.Column(min_width=240, elem_classes=["sbs-col"], elem_id=f"col-{mode.replace(':', '-')}"):
                    gr.Markdown(f"### {mode}", elem_classes=["sbs-mode"])
                    texts.append(gr.Textbox(show_label=False, lines=12, max_lines=12, interactive=False,
                                            autoscroll=True, container=False, elem_classes=["sbs-answer"],
                                            placeholder="(answer appears here)"))
                    badge_boxes.append(gr.HTML("", elem_classes=["sbs-badges"], padding=False))
                    if len(modes) >= 2:
                        gr.Markdown("Best answer for…", elem_classes=["vote-label"])
                        with gr.Row(elem_classes=["vote-row"]):
                            for axis in axes:
                                vote_buttons.append((mode, axis, gr.Button(
                                    axis, size="sm", variant="secondary", min_width=0,
                                    elem_classes=["vote-btn", f"vote-{axis}"])))
        if len(modes) < 2:
            gr.Markdown("Fewer than two modes are shown, so there is nothing to vote between. Pick more "
                        "columns above, or start the app with an experts folder (`--experts-dir`).",
                        elem_classes=["note"])
        outputs = texts + badge_boxes

        def compare(prompt_text, max_new, temp, top, seed_value, state):
            yield from cb.compare(prompt_text, max_new, temp, top, seed_value, state, modes)

        start = gr.on([compare_btn.click, prompt.submit], lambda: [""] * len(outputs), None, outputs,
                      queue=False, api_name="clear_columns", api_visibility="private")
        gen = start.then(zerogpu.gpu(compare), [prompt, max_new_tokens, temperature, top_p, seed, run], outputs,
                         api_name="compare_columns", api_visibility="private", **ctx.model_events())
        stop_btn.click(functools.partial(cb.stop, n_columns=len(modes)), run, outputs, cancels=[gen], queue=False,
                       api_name="stop_compare", api_visibility="private", show_progress="hidden")
        for mode, axis, button in vote_buttons:
            button.click(functools.partial(cb.vote, mode, axis), run, [board, caption], api_name="vote_column",
                         api_visibility="private", concurrency_limit=None, show_progress="hidden")

    gr.Markdown("### Leaderboard", elem_classes=["section-title"])
    board = gr.Dataframe(headers=["mode", *cb.axes, "votes (shown in)"], interactive=False,
                         datatype=["str", *["number"] * len(cb.axes), "number"], elem_id="leaderboard",
                         show_row_numbers=False)
    caption = gr.Markdown(elem_classes=["caption"], elem_id="leaderboard-caption")

    if tab is not None:       # modes may have changed (an expert loaded): offer them as columns
        offered = gr.State(list(cb.modes))
        tab.select(cb.refresh_columns, [columns, offered], [columns, offered], queue=False,
                   api_name="refresh_columns", api_visibility="private")
    demo.load(cb.refresh, None, [board, caption], api_name="refresh_leaderboard", api_visibility="private",
              show_progress="hidden")

    gr.api(cb.api_compare, api_name="compare", **ctx.model_events())
    gr.api(cb.api_vote, api_name="vote", concurrency_limit=None)
    gr.api(cb.api_leaderboard, api_name="leaderboard", concurrency_limit=None)
