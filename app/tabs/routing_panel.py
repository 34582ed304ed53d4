"""The Playground's routing panel: route a prompt once (model run), then recalibrate from the
router's cached outputs while the sliders move (no model run), and the ``/route`` and
``/recalibrate`` API endpoints.

Each session's last routed prompt is kept server-side, keyed by the session (the page and a
``gradio_client.Client`` each have one), because ``gr.api`` endpoints cannot read ``gr.State``.
``MoCaE`` caches router outputs per prompt, so a session's recalibration names its own prompt
(``recalibrate(..., prompt=)``); if that prompt fell out of the cache it is routed again. The
MoCaE's own default calibration (used by modes called without one, e.g. in Side by side) is
left as it was: sliders change only this session's view and its Playground generations.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from types import SimpleNamespace

import gradio as gr

from alignx.data.records import AXES
from app.context import AppContext, check_prompt
from app.routing import empty_figure, latent_map_figure, probability_figure, route_summary

MAX_SESSIONS = 512


def calibration_defaults(mocae=None) -> SimpleNamespace:
    """lambda1, lambda2, temperature and one preference per axis: the loaded MoCaE's default
    calibration (from its router card), else ``alignx.mocae.Calibration()``'s; a preference the
    calibration leaves out counts as 1."""
    cal = getattr(mocae, "calibration", None)
    if cal is None:
        try:
            from alignx.mocae import Calibration

            cal = Calibration()
        except ImportError:
            cal = SimpleNamespace(lambda1=0.6, lambda2=0.4, temperature=1.0, preferences={})
    prefs = dict(getattr(cal, "preferences", None) or {})
    return SimpleNamespace(lambda1=float(cal.lambda1), lambda2=float(cal.lambda2), temperature=float(cal.temperature),
                           preferences={a: float(prefs.get(a, 1.0)) for a in AXES})


def make_calibration(lambda1, lambda2, temperature, preferences: dict):
    """A validated ``alignx.mocae.Calibration`` (a namespace with the same fields if there is none)."""
    values = {"lambda1": lambda1, "lambda2": lambda2, "temperature": temperature}
    for name, v in list(values.items()) + [(f"preference {a}", p) for a, p in preferences.items()]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise gr.Error(f"{name} must be a number, got {v!r}")
    if not all(0.0 <= float(values[k]) <= 1.0 for k in ("lambda1", "lambda2")):
        raise gr.Error(f"lambda1 and lambda2 must be in [0, 1], got {lambda1}, {lambda2}")
    if float(lambda1) + float(lambda2) <= 0:
        raise gr.Error("lambda1 and lambda2 cannot both be 0")
    if not 0.05 <= float(temperature) <= 20.0:
        raise gr.Error(f"temperature must be in [0.05, 20], got {temperature}")
    if not all(0.0 <= float(p) <= 1.0 for p in preferences.values()):
        raise gr.Error(f"preferences must be in [0, 1], got {preferences}")
    if sum(float(p) for p in preferences.values()) <= 0:
        raise gr.Error("at least one preference must be above 0 (not all zero)")
    prefs = {a: float(p) for a, p in preferences.items()}
    try:
        from alignx.mocae import Calibration
    except ImportError:
        return SimpleNamespace(lambda1=float(lambda1), lambda2=float(lambda2), temperature=float(temperature),
                               preferences=prefs)
    try:
        return Calibration(lambda1=float(lambda1), lambda2=float(lambda2), temperature=float(temperature),
                           preferences=prefs)
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"bad calibration: {exc}") from None


class Router:
    """Routing callbacks of one app (``ctx.studio.mocae`` may be None: every call then says so)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.defaults = calibration_defaults(ctx.studio.mocae)
        self._lock = threading.Lock()           # MoCaE's cache and default calibration are shared
        self._sessions: OrderedDict[str, str] = OrderedDict()   # session -> its last routed prompt
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

    # --- core ------------------------------------------------------------------------------------
    def route(self, prompt, session: str):
        prompt = check_prompt(prompt)
        mocae = self.mocae
        with self._lock, self.ctx.model_lock:
            try:
                result = mocae.route(prompt)
            except ValueError as exc:
                raise gr.Error(str(exc)) from None
        with self._lock:
            self._sessions[session] = prompt
            self._sessions.move_to_end(session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return prompt, result

    def recalibrate(self, calibration, session: str):
        """(prompt, result, server seconds) for this session's last routed prompt (no model run
        unless the prompt fell out of the MoCaE's cache)."""
        mocae = self.mocae
        prompt = self._sessions.get(session)
        if prompt is None:
            raise gr.Error("Route a prompt first: recalibration reuses the router outputs of the last routed prompt.")
        prefs = dict(calibration.preferences)
        with self._lock:
            default = getattr(mocae, "calibration", None)
            t0 = time.perf_counter()
            try:
                try:
                    result = mocae.recalibrate(calibration.lambda1, calibration.lambda2, calibration.temperature,
                                               prefs, prompt=prompt)
                except ValueError as exc:
                    if "route" not in str(exc):          # a bad setting, not a cache miss
                        raise
                    with self.ctx.model_lock:
                        mocae.route(prompt)
                    t0 = time.perf_counter()
                    result = mocae.recalibrate(calibration.lambda1, calibration.lambda2, calibration.temperature,
                                               prefs, prompt=prompt)
            except ValueError as exc:
                raise gr.Error(str(exc)) from None
            finally:
                if default is not None:
                    mocae.calibration = default
            return prompt, result, time.perf_counter() - t0

    # --- API -------------------------------------------------------------------------------------
    def api_route(self, prompt: str, request: gr.Request) -> dict:
        """Route `prompt` (one model run): calibrated and raw router probabilities per expert, its cluster."""
        prompt, result = self.route(prompt, request.session_hash)
        return route_summary(result, prompt)

    def api_recalibrate(self, lambda1: float = 0.6, lambda2: float = 0.4, temperature: float = 1.0,
                        helpful: float = 1.0, harmless: float = 1.0, honest: float = 1.0,
                        request: gr.Request = None) -> dict:
        """Probabilities of this session's last routed prompt under a new calibration (no model run)."""
        t0 = time.perf_counter()
        cal = make_calibration(lambda1, lambda2, temperature, {"helpful": helpful, "harmless": harmless,
                                                                "honest": honest})
        prompt, result, _ = self.recalibrate(cal, request.session_hash)
        return route_summary(result, prompt, server_ms=1000 * (time.perf_counter() - t0))

    # --- page ------------------------------------------------------------------------------------
    def page_route(self, prompt, lambda1, lambda2, temperature, helpful, harmless, honest, request: gr.Request):
        self.route(prompt, request.session_hash)
        cal = make_calibration(lambda1, lambda2, temperature, {"helpful": helpful, "harmless": harmless,
                                                                "honest": honest})
        prompt, result, _ = self.recalibrate(cal, request.session_hash)
        figure = (latent_map_figure(self.latent_map, result, prompt) if self.latent_map is not None
                  else gr.skip())
        return probability_figure(result), figure, self.caption(result)

    def page_slide(self, lambda1, lambda2, temperature, helpful, harmless, honest, request: gr.Request):
        """A slider moved: redraw the chart from the cached router outputs (nothing routed yet: skip)."""
        if request.session_hash not in self._sessions:
            return gr.skip(), gr.skip()
        cal = make_calibration(lambda1, lambda2, temperature, {"helpful": helpful, "harmless": harmless,
                                                                "honest": honest})
        _, result, seconds = self.recalibrate(cal, request.session_hash)
        return probability_figure(result), self.caption(result, 1000 * seconds)

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
    """The calibration sliders: lambda1, lambda2, temperature, one preference per axis."""
    d = router.defaults
    sliders = [
        gr.Slider(0.0, 1.0, value=d.lambda1, step=0.01, label="λ1 · router", elem_id="cal-lambda1", buttons=[]),
        gr.Slider(0.0, 1.0, value=d.lambda2, step=0.01, label="λ2 · preferences", elem_id="cal-lambda2", buttons=[]),
        gr.Slider(0.05, 5.0, value=d.temperature, step=0.05, label="T · router temperature",
                  elem_id="cal-temperature", buttons=[]),
    ]
    gr.Markdown("Preference per axis", elem_classes=["caption", "pref-title"])
    for axis in AXES:
        sliders.append(gr.Slider(0.0, 1.0, value=d.preferences[axis], step=0.01, label=axis, buttons=[],
                                 elem_id=f"cal-pref-{axis}", elem_classes=["pref-slider"]))
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
    route_btn.click(router.page_route, [prompt, *sliders], [chart, latent, caption], api_name="route_panel",
                    api_visibility="private", **ctx.model_events())
    for slider in sliders:
        slider.input(router.page_slide, sliders, [chart, caption], api_name="slide", api_visibility="private",
                     concurrency_limit=None, trigger_mode="always_last", show_progress="hidden")


def register_api(router: Router, ctx: AppContext) -> None:
    gr.api(router.api_route, api_name="route", **ctx.model_events())
    gr.api(router.api_recalibrate, api_name="recalibrate", concurrency_limit=None)
