"""AlignX Studio web app: ``python app.py`` (also the Hugging Face Space's ``app_file``).

Loads the model and its experts once (``alignx.studio.Studio.load``), builds the page from
``app/`` and serves it. Local runs bind 127.0.0.1; on a Space (``SPACE_ID`` set) 0.0.0.0.
Environment: ALIGNX_MODEL (model spec), ALIGNX_AUTH (user:pass), ALIGNX_VOTES_DB (votes file),
ALIGNX_JUDGE (badge judge), GRADIO_SERVER_PORT (port).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

log = logging.getLogger("alignx.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    p = argparse.ArgumentParser(prog="app.py", description="AlignX Studio web app.")
    p.add_argument("--host", default="0.0.0.0" if on_space else "127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
                   help="port (default $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--model", default=os.environ.get("ALIGNX_MODEL") or "smollm2-135m-instruct",
                   help="model spec: smollm2-135m-instruct (offline default), tiny-random, a local folder "
                        "or a hub id (default $ALIGNX_MODEL); a hub id that cannot be reached falls back "
                        "to the offline default")
    p.add_argument("--experts-dir", default=None, help="folder of expert adapters (default: assets/experts)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--votes-db", default=None,
                   help="SQLite file for side-by-side votes (default $ALIGNX_VOTES_DB or ~/.cache/alignx/votes.sqlite)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="model requests served at once; the rest wait in the queue (default 1)")
    p.add_argument("--auth", default=os.environ.get("ALIGNX_AUTH"),
                   help="user:pass for basic login (default $ALIGNX_AUTH; none if unset)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--judge", default=os.environ.get("ALIGNX_JUDGE") or "offline",
                   help="judge for the side-by-side badges: offline (the shipped proxy judges, default), "
                        "api, hf, or none (length only); default $ALIGNX_JUDGE")
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not (sep and user and password):
            p.error("--auth / ALIGNX_AUTH must look like user:pass")
        args.auth = (user, password)
    return args


def is_hub_id(spec: str) -> bool:
    from pathlib import Path

    return spec.count("/") == 1 and not spec.startswith(("/", ".", "~")) and not Path(spec).exists()


def load_studio(spec: str, experts_dir: str | None, device: str):
    """``Studio.load``; a hub id that fails (no network) falls back to the offline default.

    Returns (studio, notice): notice is "" or the sentence that explains the fallback."""
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.models import DEFAULT_MODEL, ModelNotFoundError
    from alignx.studio import Studio

    experts = experts_dir or DEFAULT_EXPERTS_DIR
    try:
        return Studio.load(spec, experts, device=device), ""
    except ModelNotFoundError as exc:
        if not is_hub_id(spec):
            raise
        notice = f"Could not load {spec!r} from the hub; serving the offline default {DEFAULT_MODEL!r} instead."
        log.warning("%s (%s)", notice, exc)
        return Studio.load(DEFAULT_MODEL, experts, device=device), notice


def load_badge_judge(name: str):
    """The judge behind the side-by-side badges, or None (length only) when ``name`` is "none" or
    the judge cannot be built here; it loads its own feature model on first use."""
    if name in ("", "none"):
        return None
    from alignx.eval.judges.base import get_judge

    try:
        return get_judge(name)
    except Exception as exc:   # noqa: BLE001 - badges are optional; say why they are missing
        log.warning("side-by-side badges show length only: judge %r unavailable (%s)", name, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # gradio's own startup probes
    args = parse_args(argv)
    from app.memory import limit_malloc

    limit_malloc()                      # before the model loads: memory stays flat under load (app/memory.py)
    from alignx.arena import VoteStore
    from alignx.models import ModelNotFoundError

    t0 = time.perf_counter()
    try:
        studio, notice = load_studio(args.model, args.experts_dir, args.device)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("loaded %s (%s) on %s in %.1f s; modes: %s", studio.lm.name, studio.lm.source, studio.lm.device,
             time.perf_counter() - t0, ", ".join(studio.modes()))

    from app.context import AppContext
    from app.ui import build_demo, launch

    votes = VoteStore(args.votes_db)
    log.info("votes: %s", votes.path)
    judge = load_badge_judge(args.judge)
    demo = build_demo(AppContext(studio, votes, concurrency=args.concurrency, notice=notice, judge=judge))
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, auth=args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
