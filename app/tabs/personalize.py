"""Personalize: one user, their preference profile, its effect on the routing, and the answers of
the base model, ICA and PBA side by side (``alignx.personal``).

The user is a P-Soups evaluation user (their 4 history pairs and stated profile), a typed history
(up to 4 prompt / preferred / not preferred rows, optional comments) or chosen poles of the 90
preference dimensions. "Build profile" shows the profile text, the profile inferred from a history
when a direction probe for the served model is in ``<personal dir>/probe``, and, with a MoCaE
router, the routing of the prompt under the default calibration and under the user's preferences
(``alignx.personal.steer``). "Generate" streams the three columns: the trained ``personal-ica`` /
``personal-pba`` adapters when present, else the untrained ``prompt-ica`` / ``prompt-pba``.
Pure helpers (groups, parsing, labels) are in ``app.personal``; ``/personalize`` is the API.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

import gradio as gr

from alignx.arena import stream_answers
from alignx.errors import AlignXError
from alignx.mocae import recalibrate
from alignx.personal import family
from app import personal as P
from app.context import AppContext, Run, check_prompt, policy_for, sampling_from
from app.routing import empty_figure, probability_figure
from app.streaming import iterate_in_thread
from app.tabs.playground import summary
from app.tabs.routing_panel import Router

COLUMNS = ("base", "ICA", "PBA")
DEFAULT_MAX_TOKENS = 96


@dataclass
class Profile:
    user: object                    # alignx.personal.data.User (direction: stated, else inferred)
    label: str
    stated: str | None = None       # profile_text of the user's own direction
    inferred: str | None = None     # profile_text of the probe's direction
    preferences: dict = field(default_factory=dict)    # expert -> preference (empty: no direction / router)
    routes: tuple = ()              # (default route, the user's route) of the prompt, with a router
    notes: list = field(default_factory=list)


def _error(exc: Exception) -> gr.Error:
    return gr.Error(str(exc))


class Personalize:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.router = Router(ctx) if ctx.studio.mocae is not None else None
        self.dims, self.note = [], ""
        try:
            from alignx.personal.prompts import load_dims

            self.dims = load_dims()
        except AlignXError as exc:
            self.note = f"Preference dimensions unavailable: {exc}"
        self.groups = P.dimension_groups(self.dims)
        self._lock = threading.Lock()
        self._users: dict | None = None
        self._probes: dict = {}

    # --- the user ----------------------------------------------------------------------------
    def users(self) -> dict:
        """``{key: (label, example)}``: P-Soups evaluation users, loaded once, on first use."""
        with self._lock:
            if self._users is None:
                try:
                    from alignx.personal.data import load_psoups

                    self._users = P.eval_users(load_psoups())
                except AlignXError as exc:
                    self._users, self.note = {}, f"P-Soups users unavailable: {exc}"
            return self._users

    def user(self, source, key, rows, comments, poles) -> tuple[object, str]:
        try:
            source = P.normalize_source(source)
            if source == P.TYPED:
                return P.user_from_history(rows, comments), "typed history"
            if source == P.POLES:
                from alignx.personal.data import User

                return User(history=(), direction=P.direction_from_poles(poles, self.dims)), "chosen preferences"
        except P.InputError as exc:
            raise _error(exc) from None
        users = self.users()
        if not users:
            raise gr.Error(self.note or "No P-Soups users are available.")
        key = key or next(iter(users))
        if key not in users:
            raise gr.Error(f"unknown P-Soups user {key!r}; e.g. {', '.join(list(users)[:3])}")
        label, example = users[key]
        return example.user, label

    def probe(self):
        """(the direction probe for the served model or None, why not)."""
        from alignx.personal.infer import DirectionProbe

        folder = family.adapters_dir(self.ctx.studio) / "probe"
        card = folder / "probe.json"
        stamp = (str(folder), card.stat().st_mtime if card.exists() else None)
        with self._lock:
            if stamp not in self._probes:
                try:
                    probe, note = DirectionProbe.load(folder), ""
                    width = getattr(self.ctx.studio.model.config, "hidden_size", None)
                    if width is not None and probe.weight.shape[0] != width:
                        probe, note = None, (f"the direction probe in `{folder}` was fitted on another model "
                                             f"({probe.weight.shape[0]} features; the served model has {width})")
                except AlignXError:
                    probe, note = None, f"no direction probe in `{folder}` (train one with `alignx personal infer`)"
                self._probes = {stamp: (probe, note)}
            return self._probes[stamp]

    def preferences(self, direction) -> dict:
        """The router's experts' preferences from a direction (each expert by its objective's name)."""
        from alignx.personal.steer import preferences_from_direction

        names = {o.expert: o.name for o in self.ctx.studio.objectives}
        prefs = preferences_from_direction(direction, self.dims, [names.get(e, e) for e in self.router.experts])
        return {e: prefs[names.get(e, e)] for e in self.router.experts}

    def profile(self, source, key, rows, comments, poles, prompt) -> Profile:
        """The user, their stated / inferred profile, preferences and (prompt given) both routes."""
        from alignx.personal.infer import infer_profile
        from alignx.personal.prompts import profile_text

        user, label = self.user(source, key, rows, comments, poles)
        out = Profile(user, label, profile_text(user.direction, self.dims) if user.direction else None)
        try:
            if user.history:
                probe, note = self.probe()
                if probe is None:
                    out.notes.append(f"Preferences are not inferred from the history: {note}.")
                else:
                    inferred, out.inferred = infer_profile(self.ctx.studio.model, self.ctx.studio.tokenizer, user,
                                                           probe, self.dims)
                    if user.direction is None:
                        out.user = dataclasses.replace(user, direction=inferred)
            if self.router is None:
                out.notes.append("No MoCaE router is loaded, so there is no routing to steer.")
                return out
            if out.user.direction is not None:
                out.preferences = self.preferences(out.user.direction)
            if isinstance(prompt, str) and prompt.strip():
                d = self.router.defaults
                route = self.ctx.studio.mocae.route(prompt.strip())
                mine = self.router.calibration(d.lambda1, d.lambda2, d.temperature,
                                               *[out.preferences.get(e, 1.0) for e in self.router.experts])
                out.routes = (route, recalibrate(route, mine))
        except AlignXError as exc:
            raise _error(exc) from None
        return out

    def policies(self, user) -> dict:
        modes = self.modes()
        return {"base": policy_for(self.ctx.studio, "base"),
                **{c: policy_for(self.ctx.studio, modes[c], user=user) for c in ("ICA", "PBA")}}

    def modes(self) -> dict[str, str]:
        """ICA / PBA -> the trained mode when its adapter exists, else the prompted (untrained) one."""
        trained = family.available(self.ctx.studio)
        return {c: f"personal-{m}" if f"personal-{m}" in trained else f"prompt-{m}" for c, m in (("ICA", "ica"),
                                                                                             ("PBA", "pba"))}

    # --- page ------------------------------------------------------------------------------------
    def choices(self, current):
        users = self.users()
        value = current if current in users else next(iter(users), None)
        return gr.update(choices=[(label, k) for k, (label, _) in users.items()], value=value), self.note

    def history(self, key):
        users = self.users()
        if key not in users:
            return [], ""
        user = users[key][1].user
        return P.history_table(user), f"Ground-truth persona: *{user.persona or 'none'}*"

    def build_page(self, source, key, rows, comments, prompt, *poles):
        """Profile markdown, both routing figures, the preference caption, the user and what ICA / PBA send."""
        prof = self.profile(source, key, rows, comments, [p for group in poles for p in group or ()], prompt)
        lines = [f"**User:** {prof.label}",
                 f"**Profile:** {prof.stated}" if prof.stated else "**Profile:** none stated (from the history only)"]
        if prof.inferred:
            lines.append(f"**Inferred from the history** (direction probe): {prof.inferred}")
        lines += [f"*{n}*" for n in prof.notes]
        figures = [gr.skip(), gr.skip()]
        caption = ""
        if self.router is not None:
            caption = ("**Preferences from the profile:** " + P.preferences_caption(prof.preferences) +
                       " (other settings: the router's defaults)" if prof.preferences else
                       "**No preference direction** for this user: the routing stays the default's.")
            figures = ([probability_figure(prof.routes[0], "Default calibration"),
                        probability_figure(prof.routes[1], "With this user's preferences")] if prof.routes else
                       [empty_figure("Type a prompt to see its routing")] * 2)
        seen = [p.user_text(prompt.strip()) if isinstance(prompt, str) and prompt.strip() else "(type a prompt)"
                for c, p in self.policies(prof.user).items() if c != "base"]
        return "\n\n".join(lines), *figures, caption, prof.user, *seen

    def generate(self, prompt, max_new_tokens, temperature, user, run: Run):
        """Streams the three columns' texts, then their status lines."""
        prompt = check_prompt(prompt)
        if user is None:
            raise gr.Error("Build the profile first.")
        sampling = sampling_from(max_new_tokens, temperature, 1.0, 0)
        policies = self.policies(user)
        stop = run.begin()
        try:
            for answers in iterate_in_thread(lambda: stream_answers(policies, prompt, sampling, stop), stop):
                run.answers = answers
                yield self._columns(run)
        finally:
            run.end()

    def _columns(self, run: Run, stopped: bool = False) -> list:
        answers = [run.answers[c] for c in COLUMNS]
        return ([a.text if a.ended else a.text.lstrip() for a in answers] +
                [summary(a, stopped and not a.ended) if a.ended or stopped else "streaming…" for a in answers])

    def stop(self, run: Run):
        if not run.request_stop() or not run.answers:
            return [gr.skip()] * 6
        return [gr.skip()] * 3 + self._columns(run, stopped=True)[3:]

    # --- API -------------------------------------------------------------------------------------
    def api_personalize(self, prompt: str, source: str = P.PSOUPS, psoups_user: str = "",
                        history: list[list[str]] | None = None, comments: str = "", poles: list[str] | None = None,
                        max_new_tokens: int = 64, temperature: float = 0.0) -> dict:
        """One user's profile, preferences and the answers of base, ICA and PBA to `prompt`. `source`:
        "P-Soups user" (`psoups_user`: e.g. "friendly_unfriendly#12", empty = the first), "Typed
        history" (`history`: rows [prompt, preferred, not preferred], `comments`) or "Preference
        dimensions" (`poles`: pole names)."""
        prompt = check_prompt(prompt)
        sampling = sampling_from(max_new_tokens, temperature, 1.0, 0)
        prof = self.profile(source, psoups_user, history, comments, poles, prompt)
        policies = self.policies(prof.user)
        answers = {}
        try:
            for answers in stream_answers(policies, prompt, sampling):
                pass
        except AlignXError as exc:
            raise _error(exc) from None
        return {"user": prof.label, "profile_text": prof.stated, "inferred_profile": prof.inferred,
                "preferences": prof.preferences, "notes": prof.notes, "modes": {"base": "base", **self.modes()},
                "routing": {"default": prof.routes[0].probabilities, "user": prof.routes[1].probabilities}
                if prof.routes else None,
                "user_text": {c: p.user_text(prompt) for c, p in policies.items() if c != "base"},
                "answers": {c: a.text for c, a in answers.items()}}


def build(ctx: AppContext, tab: gr.Tab | None = None) -> None:
    cb = Personalize(ctx)
    run, user_state = gr.State(Run()), gr.State(None)
    routed = cb.router is not None
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360, elem_classes=["cal-panel"]):
            source = gr.Radio(list(P.SOURCES), value=P.PSOUPS, label="Source", elem_id="pz-source")
            with gr.Column(visible=True) as psoups_box:
                user_dd = gr.Dropdown([], label="P-Soups user (evaluation half)", elem_id="pz-user",
                                      info="file #row · persona; their 4 history pairs below")
                persona = gr.Markdown("", elem_classes=["caption"], elem_id="pz-persona")
                pairs = gr.Dataframe(headers=list(P.HISTORY_COLUMNS), interactive=False, wrap=True, max_height=320,
                                     column_widths=["34%", "33%", "33%"], elem_id="pz-pairs", show_label=False)
            with gr.Column(visible=False) as typed_box:
                rows = gr.Dataframe([["", "", ""] for _ in range(P.MAX_PAIRS)], headers=list(P.HISTORY_COLUMNS),
                                    type="array", interactive=True, wrap=True, elem_id="pz-history",
                                    column_widths=["34%", "33%", "33%"],
                                    label="History (up to 4 pairs; empty rows are skipped)")
                comments = gr.Textbox(label="Comments (optional)", lines=2, elem_id="pz-comments",
                                      placeholder="Things the user wrote; separate comments with a blank line")
            with gr.Column(visible=False) as poles_box:
                gr.Markdown("Pick poles the user has (type to search); every other dimension stays neutral.",
                            elem_classes=["caption"])
                with gr.Group():
                    pole_boxes = [gr.Dropdown(P.pole_choices(dims), value=[], multiselect=True,
                                              label=f"{name} · {len(dims)} dimensions", elem_id=f"pz-poles-{i}")
                                  for i, (name, dims) in enumerate(cb.groups)]
            note = gr.Markdown(cb.note, elem_classes=["note"])
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=2, max_lines=8, elem_id="pz-prompt",
                                placeholder="A request to answer for this user (also routed for the chart)")
            with gr.Row():
                build_btn = gr.Button("Build profile", variant="secondary", elem_id="pz-build")
                generate_btn = gr.Button("Generate", variant="primary", elem_id="pz-generate")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="pz-stop")
            with gr.Accordion("Sampling", open=False):
                with gr.Row():
                    max_new_tokens = gr.Slider(1, 512, value=DEFAULT_MAX_TOKENS, step=1, precision=0,
                                               label="Max new tokens", elem_id="pz-max-tokens")
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature", info="0 = greedy",
                                            elem_id="pz-temperature")
            profile_md = gr.Markdown("*Build the profile to see it here.*", elem_id="pz-profile")
    with gr.Row(visible=routed, equal_height=False, elem_classes=["routing-row"]):
        wait = empty_figure("Build the profile to see its routing")
        fig_default = gr.Plot(wait, show_label=False, elem_id="pz-route-default", min_width=320)
        fig_user = gr.Plot(wait, show_label=False, elem_id="pz-route-user", min_width=320)
    pref_caption = gr.Markdown("" if routed else "*No MoCaE router is loaded: no routing to steer.*",
                               elem_classes=["caption"], elem_id="pz-preferences")
    modes = cb.modes()
    about = {"base": "`base` · no user information",
             **{c: f"`{m}` · " + ("trained adapter" if m.startswith("personal-") else "untrained: base + prompt")
                for c, m in modes.items()}}
    texts, statuses = [], []
    with gr.Row(elem_classes=["sbs-columns"]):
        for c in COLUMNS:
            with gr.Column(min_width=240, elem_classes=["sbs-col"], elem_id=f"pz-col-{c.lower()}"):
                gr.Markdown(f"### {c}\n{about[c]}", elem_classes=["sbs-mode"])
                texts.append(gr.Textbox(show_label=False, lines=10, max_lines=10, interactive=False, autoscroll=True,
                                        container=False, elem_classes=["sbs-answer"], placeholder="(answer)"))
                statuses.append(gr.Markdown("", elem_classes=["status-line"], elem_id=f"pz-status-{c.lower()}"))
    with gr.Accordion("What the model sees (the user turn of ICA and PBA)", open=False, elem_id="pz-seen"):
        with gr.Row():
            seen = [gr.Textbox(label=f"{c} · {modes[c]}", lines=8, max_lines=20, interactive=False,
                               buttons=["copy"], elem_id=f"pz-seen-{c.lower()}") for c in ("ICA", "PBA")]

    boxes = [psoups_box, typed_box, poles_box]
    source.change(lambda s: [gr.update(visible=s == name) for name in P.SOURCES], source, boxes, queue=False,
                  api_name="personalize_source", api_visibility="private")
    if tab is not None:
        tab.select(cb.choices, user_dd, [user_dd, note], queue=False, api_name="personalize_users",
                   api_visibility="private")
    user_dd.change(cb.history, user_dd, [pairs, persona], queue=False, api_name="personalize_history",
                   api_visibility="private", show_progress="hidden")
    build_in = [source, user_dd, rows, comments, prompt, *pole_boxes]
    build_out = [profile_md, fig_default, fig_user, pref_caption, user_state, *seen]
    build_btn.click(cb.build_page, build_in, build_out, api_name="personalize_profile", api_visibility="private",
                    **ctx.model_events())
    start = gr.on([generate_btn.click, prompt.submit], lambda: [""] * 6, None, texts + statuses, queue=False,
                  api_name="personalize_clear", api_visibility="private")
    built = start.then(cb.build_page, build_in, build_out, api_name="personalize_profile_before_generate",
                       api_visibility="private", **ctx.model_events())
    gen = built.success(cb.generate, [prompt, max_new_tokens, temperature, user_state, run], texts + statuses,
                        api_name="personalize_generate", api_visibility="private", **ctx.model_events())
    stop_btn.click(cb.stop, run, texts + statuses, cancels=[gen], queue=False, api_name="personalize_stop",
                   api_visibility="private", show_progress="hidden")
    gr.api(cb.api_personalize, api_name="personalize", **ctx.model_events())
