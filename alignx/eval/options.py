"""Command-line options shared by ``eval``, ``sweep`` and ``ablate``: judges, calibration, the run's
settings, run description."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from alignx.eval.judges.base import Judge, build_judges


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Data, decoding, bootstrap and batching options of a suite run."""
    p.add_argument("--data-dir", default=None, help="data directory (default: ../shared/data)")
    p.add_argument("--seed", type=int, default=0, help="decoding and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the suite's")
    from alignx.memory import parse_batch_size

    p.add_argument("--batch-size", type=parse_batch_size, default="auto",
                   help="prompts per batch: auto (default) = 8 on a CPU, sized to the free memory on a GPU "
                        "(alignx.memory), or an integer")
    p.add_argument("--no-progress", action="store_true")
    add_judge_args(p)
    add_ref_cache_arg(p)


def add_judge_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judges")
    g.add_argument("--judge", default="offline", help="offline (default; proxy judges in assets/judges) | api | hf")
    g.add_argument("--judge-pref", default=None, help="judge for the win rate (overrides --judge)")
    g.add_argument("--judge-safety", default=None, help="judge for the safety score (overrides --judge)")
    g.add_argument("--judge-refusal", default=None,
                   help="judge for over-refusal (default: --judge if it has a refusal class, else the keyword "
                        "diagnostic, labeled as such)")
    g.add_argument("--judge-truth", default=None, help="judge for truthful and informative (overrides --judge)")
    g.add_argument("--judges-dir", default=None, help="offline judges folder (default: assets/judges)")
    g.add_argument("--hf-safety", default=None, help="hf: moderation model folder (beaver-dam / Llama-Guard style)")
    g.add_argument("--hf-truth", default=None, help="hf: truth judge folder (GPT-judge format)")
    g.add_argument("--hf-info", default=None, help="hf: informativeness judge folder (GPT-info format)")
    g.add_argument("--hf-pref", default=None, help="hf: reward model folder for pairwise preference")
    g.add_argument("--api-base-url", default=None, help="api: base URL (env ALIGNX_JUDGE_BASE_URL / OPENAI_BASE_URL)")
    g.add_argument("--api-model", default=None, help="api: model name (env ALIGNX_JUDGE_MODEL; default gpt-4)")
    g.add_argument("--api-key", default=None, help="api: key (env ALIGNX_JUDGE_API_KEY / OPENAI_API_KEY)")
    g.add_argument("--api-timeout", type=float, default=60.0, help="api: seconds per request")
    g.add_argument("--api-retries", type=int, default=5, help="api: retries on timeouts, 429, 5xx, bad replies")
    g.add_argument("--api-rpm", type=float, default=None, help="api: at most this many requests per minute")
    g.add_argument("--api-cache-dir", default=None, help="api: reply cache (default: <alignx cache>/judge_api)")


def judges_from_args(args: argparse.Namespace, data_dir=None) -> dict[str, Judge]:
    overrides: dict[str, str] = {}
    if args.judge_pref:
        overrides["prefer"] = args.judge_pref
    if args.judge_safety:
        overrides["unsafe"] = args.judge_safety
    if args.judge_refusal:
        overrides["refusal"] = args.judge_refusal
    if args.judge_truth:
        overrides["truthful"] = overrides["informative"] = args.judge_truth
    options = {
        "offline": {"judges_dir": args.judges_dir, "data_dir": data_dir},
        "hf": {"safety_path": args.hf_safety, "truth_path": args.hf_truth, "info_path": args.hf_info,
               "pref_path": args.hf_pref},
        "api": {"base_url": args.api_base_url, "model": args.api_model, "api_key": args.api_key,
                "timeout": args.api_timeout, "max_retries": args.api_retries, "rpm": args.api_rpm,
                "cache_dir": args.api_cache_dir},
    }
    return build_judges(args.judge, overrides, options)


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    from alignx.mocae.calibration import PREFERENCES_HELP

    g = p.add_argument_group("MoCaE calibration (mocae-* modes)")
    g.add_argument("--lambda1", type=float, default=None)
    g.add_argument("--lambda2", type=float, default=None)
    g.add_argument("--calib-temperature", type=float, default=None)
    g.add_argument("--preferences", default=None, help=PREFERENCES_HELP)
    g.add_argument("--per-token", action="store_true", help="logit fusion: re-route at every token")


def calibration_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The calibration settings given on the command line (None when none was)."""
    from alignx.mocae.calibration import parse_preferences

    settings = {"lambda1": args.lambda1, "lambda2": args.lambda2, "temperature": args.calib_temperature,
                "preferences": parse_preferences(args.preferences), "per_token": True if args.per_token else None}
    settings = {k: v for k, v in settings.items() if v is not None}
    return settings or None


def describe(obj) -> Any:
    """A JSON-friendly description of a settings object (dataclass, plain object, dict)."""
    if obj is None or isinstance(obj, (str, int, float, bool, list, dict)):
        return obj
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


def policy_for(studio, mode: str, settings: dict | None = None):
    """``alignx.methods.policy(studio, mode, **settings)``: a mode that takes no settings refuses them."""
    from alignx import methods

    return methods.policy(studio, mode, **(settings or {}))


def run_info(studio, mode: str, settings: dict | None = None, policy=None) -> dict[str, Any]:
    """What a report records about the run: model, mode, experts, and the policy's calibration
    (the full settings object: given values + the defaults), when it has one."""
    lm = studio.lm
    policy = policy if policy is not None else policy_for(studio, mode, settings)
    calibration = getattr(policy, "calibration", None)
    calib = describe(calibration)
    if calib is not None and not settings:
        calib = dict(calib, source="router default")
    info = {"model": lm.name, "model_source": lm.source, "mode": mode, "device": str(lm.device),
            "experts": {n: {k: c.get(k) for k in ("path", "axis", "created", "version") if k in c}
                        for n, c in (studio.experts or {}).items()},
            "calibration": calib}
    if getattr(policy, "source", None):             # e.g. the NegotiaX circuit's folder and weights hash
        info["policy_source"] = dict(policy.source)
    return info


def add_ref_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref-cache", default=None,
                   help="folder keeping the base model's log-probs for Alignment Accuracy across runs (default: "
                        "<alignx cache>/scores; 'none' = recompute every run)")


def reference_cache(studio, directory: str | None = None):
    """The ScoreCache of pi_ref = the Studio's base model without adapters: one file per (model,
    weights, chat template) in ``directory`` (default ``<alignx cache>/scores``), so every mode and
    sweep point evaluated against that base scores the reference once. None if ``directory`` is 'none'."""
    import hashlib
    import json
    from pathlib import Path

    from alignx.eval.scores import ScoreCache, weights_fingerprint
    from alignx.models import cache_dir

    if directory is not None and directory.lower() == "none":
        return None
    template = getattr(studio.tokenizer, "chat_template", None) or ""
    ident = {"model": studio.lm.name, "weights": weights_fingerprint(studio.model),
             "chat_template": hashlib.sha256(str(template).encode()).hexdigest()[:16], "mode": "base"}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(directory).expanduser() if directory else cache_dir() / "scores"
    return ScoreCache(folder / f"ref-{key}.json", key)


def resolve_batch_size(value, studio, suite, max_new_tokens: int, modes=("base",), data_dir=None, tasks=None):
    """(batch size, tasks) for ``--batch-size``: an integer as given; ``auto`` = 8 on a CPU, and on a GPU
    ``alignx.memory.auto_batch_size`` for the longest row the suite holds (chat-templated prompt +
    ``max_new_tokens``, or prompt + continuation when scoring) and, for modes that decode one row per
    expert (fusion), 1 + the number of experts rows per prompt. ``tasks`` (built here when needed) is
    returned to be passed on to ``run_suite``."""
    from alignx.memory import DEFAULT_BATCH, auto_batch_size

    if value != "auto":
        return int(value), tasks
    if studio.lm.device.type != "cuda":
        return DEFAULT_BATCH, tasks
    from alignx.eval.suites import build_tasks
    from alignx.generation import chat_prompt_ids

    tasks = tasks or build_tasks(suite, data_dir)
    tok = studio.tokenizer
    longest = max([len(chat_prompt_ids(tok, it["prompt"])) + max_new_tokens for it in tasks.generation_items()]
                  + [len(chat_prompt_ids(tok, p["prompt"])) + len(tok(p[k], add_special_tokens=False)["input_ids"]) + 1
                     for pairs in tasks.pairs.values() for p in pairs for k in ("chosen", "rejected")]
                  + [len(chat_prompt_ids(tok, m["question"])) + max(len(tok(a, add_special_tokens=False)["input_ids"])
                                                                   for a in m["mc2_targets"]) + 1 for m in tasks.mc])
    fused = any(m != "base" and not m.startswith("expert:") for m in modes)
    rows = 1 + len(studio.experts or {}) if fused else 1
    return auto_batch_size(studio.model, longest, rows), tasks
