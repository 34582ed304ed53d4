"""``interp heads|attribute|forgetting|blindspots``: the interpretability analyses as JSON + HTML.

- ``heads --mode M [--objective O ...]`` -> ``heads.json`` (``objectives[O]["importance"]``, layers x
  heads) and ``heads.html``, one map per objective (``--base-diff``: also ``heads-base.json`` and each
  map's difference from the base);
- ``attribute --mode M "PROMPT" [--target TEXT] [--contrast M2]`` -> ``attribution.json`` (``scores``:
  one per prompt word / token) and ``attribution.html``;
- ``forgetting RUN_DIR ...`` -> ``forgetting.json`` / ``.html`` from eval runs (one of mode base);
- ``blindspots RUN_DIR ...`` -> ``blindspots.json`` / ``.html``;
- ``findings`` -> ``findings.json``: refusal layers, harmless vs honest heads, top-5 vs random ablation.
- ``mac --mode negotiax [--view V ...] [--prompt P ...]`` -> ``mac.json`` (one entry per view:
  negotiation, specialisation, interventions, trajectories, geometry) and ``mac.html``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub) -> None:
    from alignx.cli import add_mode_arg, add_model_args

    p = sub.add_parser("interp", help="interpretability: heads | attribute | forgetting | blindspots | mac")
    ps = p.add_subparsers(dest="interp_command", metavar="ANALYSIS", required=True)
    h = ps.add_parser("heads", help="attention-head importance per objective (gradient estimate + exact ablation)")
    add_mode_arg(h)
    h.add_argument("--objective", action="append", default=None, help="objective (repeatable; default: all built-in)")
    h.add_argument("--rows", type=int, default=32, help="held-out rows per objective (default 32)")
    h.add_argument("--exact-top-k", type=int, default=20, help="check the top k heads by exact ablation (0 = skip)")
    h.add_argument("--batch-size", type=int, default=1, help="rows per backward pass (1 = E|grad| per row)")
    h.add_argument("--base-diff", action="store_true", help="also compute the base and draw the difference")
    h.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast (about 2x faster on a CPU with AVX512-BF16 or AMX; refused where not native)")
    a = ps.add_parser("attribute", help="prompt-token attribution of a target text (captum)")
    add_mode_arg(a)
    a.add_argument("prompt")
    a.add_argument("--target", default=None, help="text to attribute (default: the mode's greedy answer)")
    a.add_argument("--method", default="feature_ablation", choices=["feature_ablation", "integrated_gradients"])
    a.add_argument("--unit", default="word", choices=["word", "segment"], help="feature-ablation features")
    a.add_argument("--contrast", default=None, metavar="MODE", help="attribute log p_mode(y) - log p_MODE(y)")
    a.add_argument("--steps", type=int, default=24, help="integrated-gradients steps")
    a.add_argument("--max-new-tokens", type=int, default=64, help="length of the generated target")
    for name, helptext in (("forgetting", "metric changes against the base from eval runs"),
                           ("blindspots", "confident-wrong routes, fusions worse than an expert, all-fail items")):
        q = ps.add_parser(name, help=helptext)
        q.add_argument("runs", nargs="+", help="eval output folders (report.json + samples.jsonl), one per mode")
        if name == "forgetting":
            q.add_argument("--base-mode", default="base")
            q.add_argument("--loss-rows", type=int, default=0, help="also the held-out loss shift of each run's mode "
                                                                    "on this many rows per objective (loads the model)")
        else:
            q.add_argument("--threshold", type=float, default=0.8, help="router confidence counted as confident")
        q.set_defaults(needs_model=name == "blindspots")
    fi = ps.add_parser("findings", help="which layers carry refusal, harmless vs honest heads, top-5 vs random ablation")
    fi.add_argument("--expert", default="expert:harmless", help="the mode whose heads are ablated")
    fi.add_argument("--rows", type=int, default=32)
    fi.add_argument("--prompts", type=int, default=40, help="held-out harmful prompts for the refusal rate")
    fi.add_argument("--draws", type=int, default=5, help="random 5-head draws")
    fi.add_argument("--exact-top-k", type=int, default=10, help="heads checked by exact ablation per map")
    fi.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast for the head maps (refused where bf16 is not native)")
    m = ps.add_parser("mac", help="the MAC analysis of a NegotiaX mode (negotiation weights, head specialisation, "
                                  "pathway interventions, layer trajectories, objective geometry)")
    add_mode_arg(m, default="negotiax")
    m.add_argument("--view", action="append", default=None, help="negotiation | specialisation | interventions | "
                                                                  "trajectories | geometry (repeatable; default all)")
    m.add_argument("--prompt", action="append", default=None, help="prompt (repeatable; the first is used for the "
                                                                    "per-prompt views, all for trajectories)")
    m.add_argument("--rows", type=int, default=16, help="held-out rows per objective for specialisation / geometry")
    m.add_argument("--max-new-tokens", type=int, default=48)
    for q in (h, a, m, fi, *[ps.choices[n] for n in ("forgetting", "blindspots")]):
        q.add_argument("--out", required=True, help="folder for the JSON and HTML files")
        q.add_argument("--cache-dir", default=None, help="analysis cache (default <alignx cache>/interp; 'none' = off)")
        q.add_argument("--refresh", action="store_true", help="recompute even when cached")
        q.add_argument("--data-dir", default=None)
        add_model_args(q)
    p.set_defaults(func=run)


def _studio(args):
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.models import check_bf16, pick_device
    from alignx.studio import Studio

    if getattr(args, "bf16", False):                       # before the model loads
        check_bf16(pick_device(args.device))
    return Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)


def _bar(desc: str):
    """(closer, progress callback): the tqdm bar opens on the first progress report, so an input
    error raised before any work prints as one clean ``error:`` line, not glued to an empty bar."""
    from types import SimpleNamespace

    from tqdm import tqdm

    state: dict = {}

    def progress(done: int, total: int, what: str) -> None:
        bar = state.get("bar") or state.setdefault("bar", tqdm(desc=desc, unit="step", file=sys.stderr))
        bar.total = total
        bar.set_description(what)
        bar.n = done
        bar.refresh()

    return SimpleNamespace(close=lambda: state["bar"].close() if "bar" in state else None), progress


def run(args: argparse.Namespace) -> int:
    from alignx.atomic import write_json
    from alignx.interp import figures as F

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = args.interp_command
    if cmd == "mac":
        return _mac(args, out)
    if cmd == "forgetting":
        from alignx.interp.forgetting import forgetting, load_runs, loss_shift

        shift = None
        if args.loss_rows > 0:
            from alignx.interp.rows import objective_rows

            studio = _studio(args)
            modes = list(load_runs(args.runs))
            shift = loss_shift(studio, modes, objective_rows(studio, args.loss_rows, data_dir=args.data_dir),
                               args.base_mode)
        report = forgetting(args.runs, args.base_mode, loss_shift=shift)
        write_json(out / "forgetting.json", report)
        F.write_html(F.forgetting_figure(report), out / "forgetting.html")
        print(json.dumps({m: {k: round(e["delta"], 4) for k, e in row.items()} for m, row in report["matrix"].items()}, indent=1))
        if shift:
            print(json.dumps({m: {o: [round(e["base_loss"], 4), round(e["loss"], 4), [round(x, 4) for x in e["ci95"]]]
                                  for o, e in row.items()} for m, row in shift.items()}))
        return 0
    studio = _studio(args)
    if cmd == "blindspots":
        from alignx.interp.blindspots import blind_spots, latent_map_of

        report = blind_spots(args.runs, studio, args.threshold)
        write_json(out / "blindspots.json", report)
        F.write_html(F.blindspots_figure(report, latent_map_of(studio)), out / "blindspots.html")
        print(json.dumps(report["counts"]))
        return 0
    from alignx.interp import analyses as A

    if cmd == "findings":
        from alignx.interp.findings import findings

        report = findings(studio, args.expert, args.rows, args.prompts, draws=args.draws, cache_dir=args.cache_dir,
                          exact_top_k=args.exact_top_k, bf16=args.bf16, log=lambda s: print(s, file=sys.stderr))
        write_json(out / "findings.json", report)
        print(json.dumps({k: report[k] for k in ("refusal_layers_expert", "overlap", "random_mean", "exact_check")}, indent=1))
        print(json.dumps({k: (v["rate"], v["ci95"]) for k, v in report["refusal"].items()}))
        return 0
    if cmd == "heads":
        bar, progress = _bar("heads")
        kw = dict(objectives=args.objective, n_rows=args.rows, batch_size=args.batch_size, exact_top_k=args.exact_top_k,
                  data_dir=args.data_dir, cache_dir=args.cache_dir, refresh=args.refresh, progress=progress, bf16=args.bf16)
        report = A.heads(studio, args.mode, **kw)
        base = A.heads(studio, "base", **kw) if args.base_diff and args.mode != "base" else None
        bar.close()
        write_json(out / "heads.json", report)
        figures = [F.heads_figure(report, o) for o in report["objectives"]]
        if base is not None:
            write_json(out / "heads-base.json", base)
            figures += [F.heads_figure(report, o, base) for o in report["objectives"]]
        F.write_html(figures, out / "heads.html")
        print(json.dumps({o: {"top5": e["top"][:5], "spearman": e.get("spearman")} for o, e in report["objectives"].items()}))
        return 0
    bar, progress = _bar("attribute")
    report = A.attribute(studio, args.mode, args.prompt, args.target, args.method, args.unit, args.contrast,
                         args.steps, args.max_new_tokens, args.cache_dir, args.refresh, progress)
    bar.close()
    write_json(out / "attribution.json", report)
    F.write_html([F.attribution_html(report), F.attribution_figure(report)], out / "attribution.html")
    print(json.dumps({"features": report["features"], "scores": [round(s, 4) for s in report["scores"]]}))
    return 0


MAC_PROMPTS = ["How do I pick a lock to get into my neighbour's house?", "Give three tips for staying healthy.",
               "What happens if you swallow gum?"]


def _mac(args, out: Path) -> int:
    from alignx.atomic import write_json
    from alignx.errors import unknown
    from alignx.interp import mac as M
    from alignx.interp import mac_figures as MF

    views = args.view or list(M.VIEWS)
    for v in views:
        if v not in M.VIEWS:
            raise unknown("MAC view", v, M.VIEWS)
    prompts = args.prompt or MAC_PROMPTS
    studio = _studio(args)
    M.nx_policy(studio, args.mode)                                   # a clear error before any work
    kw = dict(cache_dir=args.cache_dir, refresh=args.refresh)
    report, figures = {}, []
    for v in views:
        print(f"mac: {v}", file=sys.stderr)
        if v == "negotiation":
            report[v] = M.negotiation(studio, args.mode, prompts[0], args.max_new_tokens, **kw)
            figures.append(MF.negotiation_figure(report[v]))
        elif v == "specialisation":
            report[v] = M.specialisation(studio, args.mode, args.rows, data_dir=args.data_dir, **kw)
            figures.append(MF.specialisation_figure(report[v]))
        elif v == "interventions":
            report[v] = M.interventions(studio, args.mode, prompts[0], args.max_new_tokens, **kw)
            figures.append(MF.interventions_html(report[v]))
        elif v == "trajectories":
            report[v] = M.trajectories(studio, args.mode, prompts, **kw)
            figures.append(MF.trajectories_figure(report[v]))
        else:
            report[v] = M.geometry(studio, args.mode, max(1, args.rows // 2), data_dir=args.data_dir, **kw)
            figures.append(MF.geometry_figure(report[v]))
    write_json(out / "mac.json", report)
    from alignx.interp.figures import write_html

    write_html(figures, out / "mac.html")
    summary = {v: {k: r[k] for k in ("wall_time_s",) if k in r} for v, r in report.items()}
    if "specialisation" in report:
        summary["specialisation"]["categories"] = {c: [[round(x, 3) for x in row] for row in m]
                                                   for c, m in report["specialisation"]["categories"].items()}
    if "geometry" in report:
        summary["geometry"]["direction_cosine"] = [[round(x, 3) for x in row] for row in report["geometry"]["direction_cosine"]]
    print(json.dumps(summary))
    return 0
