"""The Playground's routing panel: route a prompt once (model run), then recalibrate that route
while the sliders move (a pure function of the route and the settings: no model run), and the
``/route`` and ``/recalibrate`` API endpoints.

There is one preference slider per expert of the router (``MoCaE.experts``), so a router over two
or four objectives gets two or four. Each session's last route is kept server-side, keyed by the
session (the page and a ``gradio_client.Client`` each have one), because ``gr.api`` endpoints
cannot read ``gr.State``. Nothing here changes the MoCaE's own default calibration.
"""
from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from types import SimpleNamespace

import gradio as gr

from alignx.mocae import Calibration, recalibrate
from app.context import AppContext, check_prompt
from app.routing import empty_figure, latent_map_figure, probability_figure, route_summary
from app.signature import with_params

MAX_SESSIONS = 512


def calibration_defaults(mocae=None) -> SimpleNamespace:
    """lambda1, lambda2, temperature and one preference per expert of the router: the loaded
    MoCaE's default calibration (from its router card), else ``Calibration()``'s; a preference
    the calibration leaves out counts as 1."""
    cal = getattr(mocae, "calibration", None) or Calibration()
    prefs = dict(cal.preferences or {})
    experts = list(getattr(mocae, "experts", None) or [])
    return SimpleNamespace(lambda1=float(cal.lambda1), lambda2=float(cal.lambda2), temperature=float(cal.temperature),
                           preferences={e: float(prefs.get(e, 1.0)) for e in experts})


def make_calibration(lambda1, lambda2, temperature, preferences: dict) -> Calibration:
    """A validated ``Calibration`` from UI/API values; a bad value raises ``gr.Error``."""
    values = {"lambda1": lambda1, "lambda2": lambda2, "temperature": temperature}
    for name, v in list(values.items()) + [(f"preference {a}", p) for a, p in preferences.items()]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise gr.Error(f"{name} must be a number, got {v!r}")
        if v != v or v in (float("inf"), float("-inf")):
            raise gr.Error(f"{name} must be a finite number, got {v!r}")
    if not all(0.0 <= float(values[k]) <= 1.0 for k in ("lambda1", "lambda2")):
        raise gr.Error(f"lambda1 and lambda2 must be in [0, 1], got {lambda1}, {lambda2}")
    if float(lambda1) + float(lambda2) <= 0:
        raise gr.Error("lambda1 and lambda2 cannot both be 0")
    if not 0.05 <= float(temperature) <= 20.0:
        raise gr.Error(f"temperature must be in [0.05, 20], got {temperature}")
    if not all(0.0 <= float(p) <= 1.0 for p in preferences.values()):
        raise gr.Error(f"preferences must be in [0, 1], got {preferences}")
    if preferences and sum(float(p) for p in preferences.values()) <= 0:
        raise gr.Error("at least one preference must be above 0 (not all zero)")
    try:
        return Calibration(lambda1=float(lambda1), lambda2=float(lambda2), temperature=float(temperature),
                           preferences={a: float(p) for a, p in preferences.items()})
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"bad calibration: {exc}") from None


class Router:
    """Routing callbacks of one app (``ctx.studio.mocae`` may be None: every call then says so)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.defaults = calibration_defaults(ctx.studio.mocae)
        routed = list(self.defaults.preferences)
        first = [o.expert for o in ctx.studio.objectives if o.expert in routed]
        # one preference slider per routed expert, in the Studio's objective order
        self.experts = first + [e for e in routed if e not in first]
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, object] = OrderedDict()   # session -> its last RouteResult
        self.latent_map = self._load_map()

    @property
    def mocae(self):
        if self.ctx.studio.mocae is None:
            raise gr.Error("No MoCaE router is loaded: routing needs experts and a trained router "
                           "(`<experts dir>/router/`).")
        return self.ctx.studio.mocae

    def _load_map(self):
        folder = self.ctx.studio.experts_dir
        if folder is None:
            return None
        try:
            from alignx.experts.latent_map import load_map

            return load_map(folder)
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def calibration(self, lambda1, lambda2, temperature, *preferences) -> Calibration:
        """The sliders' values (lambda1, lambda2, T, one preference per expert) as a ``Calibration``."""
        if len(preferences) > len(self.experts):
            raise gr.Error(f"{len(preferences)} preferences for {len(self.experts)} experts {self.experts}")
        prefs = dict(zip(self.experts, preferences))
        prefs.update({e: 1.0 for e in self.experts[len(preferences):]})
        return make_calibration(lambda1, lambda2, temperature, prefs)

    # --- core ------------------------------------------------------------------------------------
    def route(self, prompt, session: str):
        """Route ``prompt`` (one model run, cached per prompt by the MoCaE) and keep the route as
        this session's last one."""
        prompt = check_prompt(prompt)
        try:
            result = self.mocae.route(prompt)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        with self._lock:
            self._sessions[session] = result
            self._sessions.move_to_end(session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return prompt, result

    def recalibrate(self, calibration: Calibration, session: str):
        """(prompt, route, server seconds): this session's last route under ``calibration``: a pure
        function of the two, no model run."""
        _ = self.mocae                      # a gr.Error when no router is loaded
        with self._lock:
            route = self._sessions.get(session)
        if route is None:
            raise gr.Error("Route a prompt first: recalibration reuses the router outputs of the last routed prompt.")
        t0 = time.perf_counter()
        try:
            result = recalibrate(route, calibration)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return route.prompt, result, time.perf_counter() - t0

    # --- API -------------------------------------------------------------------------------------
    def api_route(self, prompt: str, request: gr.Request) -> dict:
        """Route `prompt` (one model run): calibrated and raw router probabilities per expert, its cluster."""
        prompt, result = self.route(prompt, request.session_hash)
        return route_summary(result, prompt)

    def _api_recalibrate(self, lambda1, lambda2, temperature, *rest) -> dict:
        *prefs, request = rest
        t0 = time.perf_counter()
        cal = self.calibration(lambda1, lambda2, temperature, *prefs)
        prompt, result, _ = self.recalibrate(cal, request.session_hash)
        return route_summary(result, prompt, server_ms=1000 * (time.perf_counter() - t0))

    def api_recalibrate(self):
        """``/recalibrate(lambda1, lambda2, temperature, <one preference per expert>)``."""
        d = self.defaults
        params = ([("lambda1", float, d.lambda1), ("lambda2", float, d.lambda2), ("temperature", float, d.temperature)]
                  + [(e, float, d.preferences[e]) for e in self.experts] + [("request", gr.Request, None)])
        return with_params(self._api_recalibrate, params, returns=dict,
                           doc="Probabilities of this session's last routed prompt under a new calibration "
                               "(no model run): lambda1, lambda2, router temperature, one preference per expert.")

    # --- page ------------------------------------------------------------------------------------
    def slider_params(self) -> list[tuple[str, type, object]]:
        return [("lambda1", float, inspect.Parameter.empty), ("lambda2", float, inspect.Parameter.empty),
                ("router_temperature", float, inspect.Parameter.empty)] + \
               [(f"preference_{i}", float, inspect.Parameter.empty) for i in range(len(self.experts))]

    def _page_route(self, prompt, *rest):
        *sliders, request = rest
        self.route(prompt, request.session_hash)
        prompt, result, _ = self.recalibrate(self.calibration(*sliders), request.session_hash)
        figure = (latent_map_figure(self.latent_map, result, prompt) if self.latent_map is not None
                  else gr.skip())
        return probability_figure(result), figure, self.caption(result)

    def page_route(self):
        return with_params(self._page_route, [("prompt", str, inspect.Parameter.empty), *self.slider_params(),
                                              ("request", gr.Request, None)])

    def _page_slide(self, *rest):
        """A slider moved: redraw the chart from the session's route (nothing routed yet: skip)."""
        *sliders, request = rest
        with self._lock:
            routed = request.session_hash in self._sessions
        if not routed:
            return gr.skip(), gr.skip()
        _, result, seconds = self.recalibrate(self.calibration(*sliders), request.session_hash)
        return probability_figure(result), self.caption(result, 1000 * seconds)

    def page_slide(self):
        return with_params(self._page_slide, [*self.slider_params(), ("request", gr.Request, None)])

    @staticmethod
    def caption(result, recal_ms: float | None = None) -> str:
        top = max(result.probabilities, key=result.probabilities.get)
        cluster = getattr(result, "cluster", None)
        parts = ["no cluster within ε (novel prompt)" if cluster == -1 else
                 f"cluster **{cluster}**" if cluster is not None else "",
                 f"top expert **{top}** ({result.probabilities[top]:.2f})"]
        if recal_ms is not None:
            parts.append(f"recalibrated in {recal_ms:.1f} ms")
        return " · ".join(p for p in parts if p)


def build_controls(router: Router) -> list:
    """The calibration sliders: lambda1, lambda2, temperature, one preference per expert."""
    d = router.defaults
    labels = {o.expert: o.name for o in router.ctx.studio.objectives}
    sliders = [
        gr.Slider(0.0, 1.0, value=d.lambda1, step=0.01, label="λ1 · router", elem_id="cal-lambda1", buttons=[]),
        gr.Slider(0.0, 1.0, value=d.lambda2, step=0.01, label="λ2 · preferences", elem_id="cal-lambda2", buttons=[]),
        gr.Slider(0.05, 5.0, value=d.temperature, step=0.05, label="T · router temperature",
                  elem_id="cal-temperature", buttons=[]),
    ]
    gr.Markdown("Preference per objective", elem_classes=["caption", "pref-title"])
    for expert in router.experts:
        sliders.append(gr.Slider(0.0, 1.0, value=d.preferences[expert], step=0.01, label=labels.get(expert, expert),
                                 buttons=[],
                                 elem_id=f"cal-pref-{expert}", elem_classes=["pref-slider"]))
    return sliders


def build_outputs(router: Router):
    """The routing chart, the cluster caption and the latent map."""
    with gr.Row(equal_height=False, elem_classes=["routing-row"]):
        with gr.Column(scale=1, min_width=320):
            chart = gr.Plot(empty_figure("Route a prompt to see its expert probabilities"), show_label=False,
                            elem_id="routing-chart")
            caption = gr.Markdown("", elem_id="routing-caption", elem_classes=["caption"])
        with gr.Column(scale=1, min_width=320):
            if router.latent_map is not None:
                latent = gr.Plot(latent_map_figure(router.latent_map), show_label=False, elem_id="latent-map")
            else:
                latent = gr.Plot(empty_figure("No held-out latent map in the experts folder "
                                              "(latent/heldout_map.json)"), show_label=False, elem_id="latent-map")
    return chart, caption, latent


def wire(router: Router, ctx: AppContext, prompt, route_btn, sliders, chart, caption, latent):
    route_btn.click(router.page_route(), [prompt, *sliders], [chart, latent, caption], api_name="route_panel",
                    api_visibility="private", **ctx.model_events())
    for slider in sliders:
        slider.input(router.page_slide(), sliders, [chart, caption], api_name="slide", api_visibility="private",
                     concurrency_limit=None, trigger_mode="always_last", show_progress="hidden")


def register_api(router: Router, ctx: AppContext) -> None:
    gr.api(router.api_route, api_name="route", **ctx.model_events())
    gr.api(router.api_recalibrate(), api_name="recalibrate", concurrency_limit=None)
