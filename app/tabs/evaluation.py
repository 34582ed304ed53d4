"""Evaluation: the quick suite (or another) for chosen modes with progress, a metrics table with
95% CIs and judge names, and the Pareto front of a calibration sweep; clicking a MoCaE point
(or picking it from the list) sets the Playground's calibration sliders to its settings."""
from __future__ import annotations

import json

import gradio as gr

from alignx import methods

from app.context import AppContext
from app.evaluation import Evaluator, compact, find_sweep, load_sweep, nearest_point, table
from app.routing import empty_figure

# Plotly click on the Pareto plot -> the hidden #pareto-pick textbox -> its .input event.
PARETO_JS = """
() => {
  const attach = () => {
    const plot = document.querySelector('#pareto-plot .js-plotly-plot');
    if (!plot || plot.__alignxClick || !plot.on) return;
    plot.__alignxClick = true;
    plot.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p) return;
      const box = document.querySelector('#pareto-pick textarea, #pareto-pick input');
      if (!box) return;
      box.value = JSON.stringify({x: p.x, y: p.y, z: p.z === undefined ? null : p.z, t: Date.now()});
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  new MutationObserver(attach).observe(document.body, {childList: true, subtree: true});
  attach();
}
"""


class Evaluation:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.evaluator = Evaluator(ctx.studio, ctx.runs_dir / "eval")
        self.sweep_path = find_sweep(*ctx.sweep_dirs)
        self.points, self.front, self.sweep_error = [], [], ""
        if self.sweep_path is not None:
            try:
                self.points, self.front = load_sweep(self.sweep_path)
            except (ValueError, json.JSONDecodeError, OSError) as exc:
                self.sweep_error = f"could not read {self.sweep_path}: {exc}"

    def _check(self, modes, suite, judge) -> list[str]:
        if isinstance(modes, str):
            modes = [modes]
        if not modes:
            raise gr.Error("Choose at least one mode to evaluate.")
        available = methods.modes(self.ctx.studio, include_unlisted=True)
        unknown = [m for m in modes if m not in available]
        if unknown:
            raise gr.Error(f"Unknown mode(s) {unknown}; available: {', '.join(available)}")
        if suite not in self.evaluator.suites():
            raise gr.Error(f"Unknown suite {suite!r}; choose from {self.evaluator.suites()}")
        if judge not in self.evaluator.judge_names():
            raise gr.Error(f"Unknown judge {judge!r}; choose from {self.evaluator.judge_names()}")
        return list(dict.fromkeys(modes))

    def _run(self, modes, suite, judge, log, tqdm_progress: bool):
        modes = self._check(modes, suite, judge)
        try:
            with self.ctx.studio.lock:
                return self.evaluator.run(modes, suite, judge, log, tqdm_progress)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - a readable message in the page, the server keeps serving
            raise gr.Error(f"Evaluation failed: {type(exc).__name__}: {exc}") from None

    def api_evaluate(self, modes: list[str], suite: str = "quick", judge: str = "offline") -> dict:
        """Run `suite` for each of `modes`: {mode: {metric: {value, ci95, n, judge}, warnings, wall_time_s}}."""
        reports = self._run(modes, suite, judge, lambda m: None, tqdm_progress=False)
        return {m: compact(r) for m, r in reports.items()}

    def evaluate(self, modes, suite, judge, progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="preparing the suite and judges")
        reports = self._run(modes, suite, judge, lambda msg: progress(None, desc=msg), tqdm_progress=True)
        headers, rows = table(reports)
        warnings = sorted({w for r in reports.values() for w in r.get("warnings", [])})
        note = "  \n".join(f"⚠ {w}" for w in warnings)
        took = " · ".join(f"{m}: {(r.get('run') or {}).get('wall_time_s', '?')} s" for m, r in reports.items())
        return gr.update(value=rows, headers=headers), f"**Done** ({suite} suite, judge {judge}) · {took}  \n{note}"

    # --- Pareto -------------------------------------------------------------------------------------
    def figure(self):
        if not self.points:
            return empty_figure("No calibration sweep found yet (pareto.json / sweep.json in the runs or "
                                "results folder)", height=420)
        from alignx.eval.pareto import pareto_figure

        fig = pareto_figure(self.points, self.front)
        fig.update_layout(height=480, margin=dict(l=0, r=0, t=40, b=0), paper_bgcolor="white")
        return fig

    def choices(self) -> list[tuple[str, int]]:
        return [(f"{p.get('label', i)}{' · Pareto' if i in self.front else ''}", i)
                for i, p in enumerate(self.points) if p.get("settings")]

    def apply(self, settings: dict, n_sliders: int):
        """Slider values (λ1, λ2, T, one preference per axis) from a point's calibration settings."""
        if n_sliders == 0:
            gr.Warning("No MoCaE router is loaded, so there are no calibration sliders to set.")
            return []
        prefs = settings.get("preferences") or {}
        values = [settings.get("lambda1"), settings.get("lambda2"), settings.get("temperature"),
                  prefs.get("helpful"), prefs.get("harmless"), prefs.get("honest")]
        gr.Info("Playground calibration set to this point's settings.")
        return [gr.skip() if v is None else v for v in values][:n_sliders]

    def pick_index(self, index, n_sliders: int):
        if index is None or not 0 <= int(index) < len(self.points):
            return [gr.skip()] * n_sliders
        return self.apply(self.points[int(index)].get("settings") or {}, n_sliders)

    def pick_click(self, payload: str, n_sliders: int):
        try:
            data = json.loads(payload or "{}")
            point = nearest_point(self.points, float(data["x"]), float(data["y"]),
                                  None if data.get("z") is None else float(data["z"]))
        except (ValueError, KeyError, TypeError):
            point = None
        if point is None:
            gr.Warning("That point has no calibration settings (only MoCaE points do).")
            return [gr.skip()] * n_sliders
        return self.apply(point["settings"], n_sliders)


def build(ctx: AppContext, demo: gr.Blocks, sliders: list) -> None:
    cb = Evaluation(ctx)
    modes = methods.modes(ctx.studio)
    n = len(sliders)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280, elem_classes=["side-panel"]):
            mode_box = gr.CheckboxGroup(modes, value=["base"], label="Modes", elem_id="eval-modes")
            suite = gr.Dropdown(cb.evaluator.suites(), value="quick", label="Suite", elem_id="eval-suite",
                                info="quick: small slices of every part, minutes on CPU")
            judge = gr.Dropdown(cb.evaluator.judge_names(), value="offline", label="Judge", elem_id="eval-judge",
                                info="offline = the project's proxy judges (assets/judges)")
            run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        with gr.Column(scale=3):
            metrics = gr.Dataframe(headers=["metric", "judge"], interactive=False, elem_id="eval-table", wrap=True,
                                   show_row_numbers=False, label="Metrics · value [95% bootstrap CI]")
            status = gr.Markdown("Choose modes and run: every value comes with its 95% CI and the judge that "
                                 "produced it.", elem_id="eval-status", elem_classes=["caption"])
    gr.Markdown("### Pareto front of a calibration sweep", elem_classes=["section-title"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Plot(cb.figure(), show_label=False, elem_id="pareto-plot")
        with gr.Column(scale=1, min_width=260):
            gr.Markdown(f"Sweep file: `{cb.sweep_path or 'none found'}`{' (' + cb.sweep_error + ')' if cb.sweep_error else ''}. Click a MoCaE point (or pick one "
                        "below) to set the Playground's calibration sliders.", elem_classes=["caption"])
            pick = gr.Dropdown(cb.choices(), value=None, label="MoCaE setting", elem_id="pareto-choice")
            clicked = gr.Textbox(visible="hidden", elem_id="pareto-pick")

    run_btn.click(cb.evaluate, [mode_box, suite, judge], [metrics, status], api_name="evaluate_page",
                  api_visibility="private", **ctx.model_events())
    pick.input(lambda i: cb.pick_index(i, n), pick, sliders, api_name="apply_pareto_point",
               api_visibility="private", queue=False) if n else None
    clicked.input(lambda s: cb.pick_click(s, n), clicked, sliders, api_name="pareto_click",
                  api_visibility="private", queue=False) if n else None
    demo.load(None, js=PARETO_JS)
    gr.api(cb.api_evaluate, api_name="evaluate", **ctx.model_events())
