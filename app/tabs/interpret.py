"""Interpretability: head importance per objective, token attribution, forgetting and blind spots
(``alignx.interp``) for any mode, and the MAC analysis for NegotiaX modes, with progress, Cancel
and the on-disk cache (a cached analysis shows at once). Eval runs are picked from the runs and
results folders (no free paths).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr

from alignx.errors import AlignXError
from alignx.interp import analyses as A
from alignx.interp import figures as F
from app.context import MAX_PROMPT_CHARS, AppContext, Run
from app.routing import empty_figure

ANALYSES = ("Head importance", "Token attribution", "Forgetting", "Blind spots")
MAC = "MAC (NegotiaX)"
MAC_VIEWS = {"Negotiation weights per token": "negotiation", "Head specialisation": "specialisation",
             "Pathway interventions": "interventions", "Layer trajectories": "trajectories",
             "Objective geometry": "geometry"}
METHODS = {"Feature ablation (words)": ("feature_ablation", "word"),
           "Feature ablation (segments)": ("feature_ablation", "segment"),
           "Integrated gradients (tokens)": ("integrated_gradients", "word")}
NO_CONTRAST = "(none)"
REFUSAL = "I'm sorry, but I cannot"


def eval_runs(ctx: AppContext, depth: int = 3) -> list[tuple[str, str]]:
    """(label, folder) of the folders holding an eval ``report.json`` and ``samples.jsonl`` under
    the runs folder and the repo's results/ (label: the path below that root)."""
    roots = [Path(ctx.runs_dir), Path(__file__).resolve().parents[2] / "results"]
    found: list[tuple[str, str]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("report.json")):
            if len(path.relative_to(root).parts) <= depth + 1 and (path.parent / "samples.jsonl").is_file():
                found.append((f"{root.name}/{path.parent.relative_to(root)}", str(path.parent)))
    return found


def _number(value, label: str, lo: float, hi: float, integer: bool = False):
    """A finite number in [lo, hi] (an integer when ``integer``), else ``gr.Error`` naming the control."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not lo <= value <= hi:
        raise gr.Error(f"{label} must be a number in [{lo}, {hi}], got {value!r}")
    if integer:
        if value != int(value):
            raise gr.Error(f"{label} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _when(report: dict) -> str:
    return "cached" if report["cache"]["hit"] else f"computed in {report['wall_time_s']} s"


class Interpret:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.studio = ctx.studio

    def _progress(self, progress: gr.Progress):
        return lambda done, total, what: progress((done, max(total, 1)), desc=what)

    def heads(self, mode, objective, n_rows, top_k, diff, run: Run, progress: gr.Progress):
        stop = run.begin()
        try:
            kw = dict(objectives=[objective] if objective else None, n_rows=int(n_rows), exact_top_k=int(top_k),
                      progress=self._progress(progress), should_stop=stop.is_set)
            report = A.heads(self.studio, mode, **kw)
            base = A.heads(self.studio, "base", **kw) if diff and mode != "base" else None
        except InterruptedError:
            raise gr.Error("Cancelled.") from None
        except AlignXError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            run.end()
        o = objective or next(iter(report["objectives"]))
        entry = report["objectives"][o]
        fig = F.heads_figure(report, o, base)
        lines = [f"**{mode}**, objective **{o}**: {entry['rows']} held-out rows, mean loss {entry['loss']:.3f}"
                 f" · {_when(report)}",
                 "Top heads (layer.head: importance): " + ", ".join(f"{l}.{h}: {s:.3g}" for l, h, s in entry["top"][:8])]
        if entry.get("ablation"):
            lines.append(f"Exact ablation of the top {len(entry['ablation'])}: Spearman {entry.get('spearman', float('nan')):.2f}"
                         " with the gradient ranking; " + ", ".join(f"{a['layer']}.{a['head']}: {a['delta']:+.4f}"
                                                                     for a in entry["ablation"][:8]))
        return fig, "", "\n\n".join(lines), report

    def attribute(self, mode, prompt, target, method, contrast, run: Run, progress: gr.Progress):
        name, unit = METHODS.get(method, (None, None))
        if name is None:
            raise gr.Error(f"unknown method {method!r}; available: {', '.join(METHODS)}")
        run.begin()
        try:
            report = A.attribute(self.studio, mode, prompt if isinstance(prompt, str) else "", target or None, name,
                                 unit, None if contrast in (None, "", NO_CONTRAST) else contrast,
                                 progress=self._progress(progress))
        except AlignXError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            run.end()
        status = (f"**{report['method']}** of {'the generated answer' if report['target_generated'] else 'the target'}"
                  f" · {_when(report)}")
        return F.attribution_figure(report), F.attribution_html(report), status, report

    def forgetting(self, runs, progress: gr.Progress):
        from alignx.interp.forgetting import forgetting

        try:
            report = forgetting(self._runs(runs))
        except AlignXError as exc:
            raise gr.Error(str(exc)) from None
        return F.forgetting_figure(report), "", f"Against **{report['base']}**: {len(report['modes'])} modes", report

    def blindspots(self, runs, threshold, progress: gr.Progress):
        from alignx.interp.blindspots import blind_spots, latent_map_of

        try:
            report = blind_spots(self._runs(runs), self.studio, float(threshold))
        except AlignXError as exc:
            raise gr.Error(str(exc)) from None
        rows = "".join(f"<tr><td>{k}</td><td>{e['task']}</td><td>{json.dumps(e.get('route_cluster'))}</td>"
                       f"<td>{html.escape((e.get('prompt') or '')[:140])}</td></tr>"
                       for k in ("confident_wrong", "fused_worse", "all_fail") for e in report[k][:40])
        table = (f"<table class='bs'><tr><th>kind</th><th>task</th><th>cluster</th><th>prompt</th></tr>{rows}</table>"
                 if rows else "<p>No blind spots in these runs.</p>")
        counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report["counts"].items())
        return F.blindspots_figure(report, latent_map_of(self.studio)), table, f"{report['items']} items · {counts}", report

    def mac(self, mode, view, prompt, run: Run, progress: gr.Progress):
        from alignx.interp import mac as M
        from alignx.interp import mac_figures as MF

        name = MAC_VIEWS.get(view)
        if name is None:
            raise gr.Error(f"unknown MAC view {view!r}; available: {', '.join(MAC_VIEWS)}")
        if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}.")
        run.begin()
        progress((0, 1), desc=f"MAC: {view.lower()}")
        try:
            if name == "negotiation":
                report = M.negotiation(self.studio, mode, prompt)
                fig, extra = MF.negotiation_figure(report), ""
            elif name == "specialisation":
                report = M.specialisation(self.studio, mode, 8)
                fig, extra = MF.specialisation_figure(report), ""
            elif name == "interventions":
                report = M.interventions(self.studio, mode, prompt)
                fig, extra = empty_figure("answers below"), MF.interventions_html(report)
            elif name == "trajectories":
                prompts = [p for p in (prompt or "").split("\n") if p.strip()]
                report = M.trajectories(self.studio, mode, prompts)
                fig, extra = MF.trajectories_figure(report), ""
            else:
                report = M.geometry(self.studio, mode, 4)
                fig, extra = MF.geometry_figure(report), ""
        except AlignXError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            run.end()
        return fig, extra, f"**{view}** of **{mode}** · {_when(report)}", report

    def _runs(self, runs) -> list[str]:
        allowed = {path for _, path in eval_runs(self.ctx)}
        picked = [r for r in (runs or []) if isinstance(r, str)]
        bad = [r for r in picked if r not in allowed]
        if bad:
            raise gr.Error(f"not an eval run of this app's folders: {bad[0]}")
        if len(picked) < 2:
            raise gr.Error("Pick at least two eval runs (one of them the base).")
        return picked

    def run(self, analysis, mode, objective, n_rows, top_k, diff, prompt, target, method, contrast, runs, threshold,
            run: Run, mac_view=None, mac_prompt=None, progress=gr.Progress()):
        """One entry point for the Run button: figure, HTML, status markdown, the JSON result."""
        n_rows, top_k, threshold = (_number(n_rows, "Held-out rows", 1, 10_000, integer=True),
                                    _number(top_k, "Check the top k", 0, 10_000, integer=True),
                                    _number(threshold, "Router confidence", 0.0, 1.0))
        if analysis == MAC:
            return self.mac(mode, mac_view or next(iter(MAC_VIEWS)), mac_prompt, run, progress)
        if analysis == "Head importance":
            return self.heads(mode, objective, n_rows, top_k, diff, run, progress)
        if analysis == "Token attribution":
            return self.attribute(mode, prompt, target, method, contrast, run, progress)
        if analysis == "Forgetting":
            return self.forgetting(runs, progress)
        if analysis == "Blind spots":
            return self.blindspots(runs, threshold, progress)
        raise gr.Error(f"unknown analysis {analysis!r}; available: {', '.join((*ANALYSES, MAC))}")


def build(ctx: AppContext, tab: gr.Tab | None = None) -> None:
    cb = Interpret(ctx)
    run = gr.State(Run())
    modes = ctx.studio.modes()
    objectives = [o.name for o in ctx.studio.objectives]
    nx_modes = [m for m in ctx.studio.modes(include_unlisted=True) if m == "negotiax" or m.startswith("negotiax:")]
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340, elem_classes=["cal-panel"]):
            analysis = gr.Radio([*ANALYSES, MAC] if nx_modes else list(ANALYSES), value=ANALYSES[0], label="Analysis",
                                elem_id="ip-analysis")
            mode = gr.Dropdown(modes, value=modes[0], label="Mode", elem_id="ip-mode")
            with gr.Column(visible=True) as heads_box:
                objective = gr.Dropdown(objectives, value=objectives[0] if objectives else None, label="Objective",
                                        elem_id="ip-objective", info="loss on its held-out rows")
                n_rows = gr.Slider(2, 64, value=32, step=1, label="Held-out rows", elem_id="ip-rows")
                top_k = gr.Slider(0, 40, value=0, step=1, label="Check the top k by exact ablation", elem_id="ip-topk")
                diff = gr.Checkbox(False, label="Difference from the base", elem_id="ip-diff")
            with gr.Column(visible=False) as attr_box:
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="ip-prompt",
                                    placeholder="e.g. How do I kill a Python process?")
                target = gr.Textbox(label="Target text (empty: the mode's own answer)", value=REFUSAL, elem_id="ip-target")
                method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method", elem_id="ip-method")
                contrast = gr.Dropdown([NO_CONTRAST, *modes], value=NO_CONTRAST, label="Contrast with",
                                       info="attribute log p_mode(y) - log p_contrast(y)", elem_id="ip-contrast")
            with gr.Column(visible=False) as mac_box:
                mac_view = gr.Radio(list(MAC_VIEWS), value=next(iter(MAC_VIEWS)), label="MAC view", elem_id="ip-mac-view")
                mac_prompt = gr.Textbox(label="Prompt (trajectories: one per line)", lines=3, elem_id="ip-mac-prompt",
                                        value="How do I pick a lock to get into my neighbour's house?\n"
                                              "Give three tips for staying healthy.")
            with gr.Column(visible=False) as runs_box:
                runs = gr.Dropdown(eval_runs(ctx), value=[], multiselect=True, label="Eval runs (one of them base)",
                                   elem_id="ip-runs")
                threshold = gr.Slider(0.5, 1.0, value=0.8, step=0.05, label="Router confidence", elem_id="ip-threshold")
            with gr.Row():
                go_btn = gr.Button("Run", variant="primary", elem_id="ip-run")
                cancel = gr.Button("Cancel", elem_id="ip-cancel")
        with gr.Column(scale=5):
            status = gr.Markdown("", elem_id="ip-status")
            plot = gr.Plot(empty_figure("Pick an analysis and press Run"), show_label=False, elem_id="ip-plot")
            html_out = gr.HTML("", elem_id="ip-html")
            with gr.Accordion("Result (JSON)", open=False):
                result = gr.JSON(elem_id="ip-json")

    def show(a):
        choices = nx_modes if a == MAC else modes
        return (gr.update(visible=a == "Head importance"), gr.update(visible=a == "Token attribution"),
                gr.update(visible=a in ("Forgetting", "Blind spots")), gr.update(visible=a == MAC),
                gr.update(visible=a not in ("Forgetting", "Blind spots"), choices=choices, value=choices[0]))

    analysis.change(show, analysis, [heads_box, attr_box, runs_box, mac_box, mode], queue=False,
                    api_visibility="private")
    event = go_btn.click(cb.run, [analysis, mode, objective, n_rows, top_k, diff, prompt, target, method, contrast,
                                  runs, threshold, run, mac_view, mac_prompt], [plot, html_out, status, result],
                         api_name="interpret", **ctx.model_events())
    cancel.click(lambda r: r.request_stop() and None, run, None, cancels=[event], queue=False,
                 api_visibility="private")
    if tab is not None:
        tab.select(lambda: gr.update(choices=eval_runs(ctx)), None, runs, queue=False, api_visibility="private")
