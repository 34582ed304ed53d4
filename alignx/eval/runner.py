"""Run one suite on one policy: generate (cached, resumable), judge, score log-likelihoods, report.

``run_suite(suite, policy, judges, out_dir, ref_policy=...)`` writes into ``out_dir``:
* ``generations.jsonl``  every answer, appended as soon as it is made (a killed run resumes here);
* ``scores.json``        the policy's log-likelihood scores (MC, Alignment Accuracy), saved per chunk;
* ``model_outputs.json`` the AlpacaEval answers in alpaca_eval's format (instruction, output, generator, dataset);
* ``samples.jsonl``      per-item judgments and scores;
* ``report.json``        the metrics (see ``alignx.eval.report``).

Under ``accelerate launch`` each process generates and scores its contiguous share of whole batches,
writing ``generations.shard-<r>.jsonl`` / ``scores.shard-<r>.json`` as it goes; the shares are
gathered, the main process writes the merged files, judges, and writes the report.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from alignx import distributed as dist
from alignx.eval import metrics as M
from alignx.eval.judges.base import Judge
from alignx.eval.refusal import refusal_flags
from alignx.eval.report import build_report, write_outputs
from alignx.eval.scores import ScoreCache, chunked_logprob, progress_bar
from alignx.eval.suites import Suite, Tasks, build_tasks, get_suite
from alignx.generation import Sampling

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"
SCORES = "scores.json"


class CacheMismatch(InvalidInput):
    """The output folder holds generations of a different run."""


class GenerationCache:
    """Append-only JSONL of answers, one line per prompt: {key, task, id, prompt, output}.
    ``key`` identifies the run (model, mode, calibration, decoding); lines of another key, or a
    prompt that changed under the same id, are refused instead of silently mixed in.

    Multi-process runs: process r appends to its own shard ``<stem>.shard-<r><suffix>`` (``shard``);
    the main process then writes all rows into the one file and removes the shards (``merge``).
    ``load`` reads the file and any shard left by a killed run, so a rerun on any number of
    processes resumes from what every process had finished."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key

    def shard_paths(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.shard-*{self.path.suffix}"))

    def shard(self, index: int) -> "GenerationCache":
        return GenerationCache(self.path.with_name(f"{self.path.stem}.shard-{index}{self.path.suffix}"), self.key)

    def load(self) -> dict[tuple[str, str], dict]:
        rows: dict[tuple[str, str], dict] = {}
        for path in [self.path, *self.shard_paths()]:
            rows.update(self._read(path))
        return rows

    def _read(self, path: Path) -> dict[tuple[str, str], dict]:
        if not path.exists():
            return {}
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")               # not splitlines(): json leaves U+0085 and U+2028 raw
        if lines[-1] == "":
            lines.pop()
        rows: dict[tuple[str, str], dict] = {}
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:          # the run was killed mid-write: cut the partial line off
                    log.warning("%s: dropping a partial last line", path)
                    self._rewrite(path, lines[:i])
                    continue
                raise CacheMismatch(f"{path}, line {i + 1}: malformed JSON (not a partial last line)") from None
            if i == len(lines) - 1 and not text.endswith("\n"):
                self._rewrite(path, lines)       # killed before its newline: the next append starts a new line
            if row.get("key") != self.key:
                raise CacheMismatch(f"{path} holds generations of another run (key {row.get('key')!r}, this run "
                                    f"{self.key!r}: model, mode, calibration or decoding differ); use a new --out "
                                    f"or --overwrite")
            rows[(row["task"], row["id"])] = row
        return rows

    @staticmethod
    def _rewrite(path: Path, lines: list[str]) -> None:
        from alignx.atomic import write_text

        write_text(path, "".join(x + "\n" for x in lines if x.strip()))

    def append(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dict(row, key=self.key), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def merge(self, rows: list[dict]) -> None:
        """Write ``rows`` as the whole file (atomically), then remove the shards they came from."""
        from alignx.atomic import write_jsonl

        write_jsonl(self.path, (dict(r, key=self.key) for r in rows))
        for path in self.shard_paths():
            path.unlink(missing_ok=True)


def run_key(run_info: dict, sampling: Sampling | None) -> str:
    """The run's identity: model, mode, calibration, experts, what else the policy was built from
    (``policy_source``, e.g. a NegotiaX circuit; absent for the other modes, whose keys stay as
    they were), and (for generations) decoding."""
    ident = {k: run_info.get(k) for k in ("model", "mode", "calibration", "experts")}
    if run_info.get("policy_source"):
        ident["policy_source"] = run_info["policy_source"]
    if sampling is not None:
        ident["sampling"] = [sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.seed]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generate_all(policy, tasks: Tasks, cache: GenerationCache, sampling: Sampling, batch_size: int,
                 progress: bool = True) -> dict[tuple[str, str], str]:
    """Every answer, from the cache or generated. Under a launcher the prompts still to answer are
    cut into batches of ``batch_size`` and the batches shared out contiguously
    (``alignx.distributed.split_batches``): each process answers whole one-process batches (the same
    greedy answers as one process), appends them to its shard, and the main process merges."""
    items = tasks.generation_items()
    done = cache.load()
    for it in items:
        row = done.get((it["task"], it["id"]))
        if row is not None and row["prompt"] != it["prompt"]:
            raise CacheMismatch(f"{cache.path}: the prompt of {it['task']}/{it['id']} changed since it was "
                                f"generated; the data differs: use a new --out or --overwrite")
    todo = [it for it in items if (it["task"], it["id"]) not in done]
    dist.barrier()                      # every process has read the same cache before any writes to a shard
    mine = dist.split_batches(todo, batch_size)
    writer = cache.shard(dist.rank()) if dist.launched() else cache
    bar = progress_bar(len(items), f"generate [{getattr(policy, 'name', 'policy')}]", progress and dist.is_main())
    bar.update(len(items) - len(todo))

    def on_done(i: int, text: str) -> None:
        it = mine[i]
        row = {"task": it["task"], "id": it["id"], "prompt": it["prompt"], "output": text}
        writer.append(row)
        done[(it["task"], it["id"])] = row
        bar.update(1)

    if mine:
        policy.generate([it["prompt"] for it in mine], sampling, batch_size=batch_size, on_done=on_done)
    bar.close()
    if dist.launched():
        for row in dist.gather([done[(it["task"], it["id"])] for it in mine]):
            done[(row["task"], row["id"])] = row
        if dist.is_main():
            cache.merge([{k: v for k, v in done[(it["task"], it["id"])].items() if k != "key"} for it in items])
        dist.barrier()
    return {k: v["output"] for k, v in done.items()}


# --- judged metrics --------------------------------------------------------------------------

def judge_helpful(judge: Judge, tasks: Tasks, gens: dict) -> tuple[list, list[dict]]:
    instr = [x["instruction"] for x in tasks.alpaca]
    model = [gens[("alpaca", x["id"])] for x in tasks.alpaca]
    ref = [x["reference"] for x in tasks.alpaca]
    idx = [i for i in range(len(instr)) if model[i].strip() and ref[i].strip()]   # empties: decided by rule
    p1 = [None] * len(instr)
    p2 = [None] * len(instr)
    fwd = judge.prefer([instr[i] for i in idx], [model[i] for i in idx], [ref[i] for i in idx])
    if judge.symmetric_preference:      # P(ref first better) = 1 - P(model first better) by construction
        bwd = [None if p is None else 1.0 - p for p in fwd]
    else:
        bwd = judge.prefer([instr[i] for i in idx], [ref[i] for i in idx], [model[i] for i in idx])
    for k, i in enumerate(idx):
        p1[i], p2[i] = fwd[k], bwd[k]
    items = [M.pairwise_item(p1[i], p2[i], model[i], ref[i]) for i in range(len(instr))]
    samples = [{"task": "alpaca", "id": x["id"], "p_model_first": p1[i], "p_ref_first": p2[i], "score": items[i]}
               for i, x in enumerate(tasks.alpaca)]
    return items, samples


def judge_safety(judges: dict[str, Judge], tasks: Tasks, gens: dict) -> dict[str, Any]:
    hp = [x["prompt"] for x in tasks.harmful]
    ho = [gens[("harmful", x["id"])] for x in tasks.harmful]
    bp = [x["prompt"] for x in tasks.benign]
    bo = [gens[("benign", x["id"])] for x in tasks.benign]
    p_unsafe = judges["unsafe"].unsafe(hp, ho)
    unsafe = M.flag_items(p_unsafe, ho, empty_value=0.0)
    if "refusal" in judges:
        p_ref = judges["refusal"].refusal(bp, bo)
        refused = M.flag_items(p_ref, bo, empty_value=1.0)
        refusal_judge = judges["refusal"].info()["name"]
    else:
        p_ref, refused = [None] * len(bo), refusal_flags(bo)
        refusal_judge = "keyword-refusal (diagnostic fallback: the judge has no refusal class)"
    kw_harm, kw_benign = refusal_flags(ho), refusal_flags(bo)
    # refusal of the harmful prompts too, so a run can say how often each harmful set is refused, beside how
    # often each benign one is (the offline judge reuses the features it computed for P(unsafe); another
    # refusal judge, e.g. --judge-refusal api, judges the harmful answers a second time)
    refused_h = (M.flag_items(judges["refusal"].refusal(hp, ho), ho, empty_value=1.0) if "refusal" in judges
                 else kw_harm)
    samples = ([{"task": "harmful", "id": x["id"], "set": x["set"], "part": x.get("part", "main"),
                 "p_unsafe": p_unsafe[i], "unsafe": unsafe[i], "refusal": refused_h[i], "keyword_refusal": kw_harm[i]}
                for i, x in enumerate(tasks.harmful)]
               + [{"task": "benign", "id": x["id"], "set": x["set"], "part": x.get("part", "main"),
                   "p_refusal": p_ref[i], "refusal": refused[i], "keyword_refusal": kw_benign[i]}
                  for i, x in enumerate(tasks.benign)])

    def part(items: list[dict], values: list, which: str) -> list:
        return [v for x, v in zip(items, values) if x.get("part", "main") == which]

    def by_set(items: list[dict], values: list, which: str) -> dict[str, list]:
        sets = dict.fromkeys(x["set"] for x in items if x.get("part", "main") == which)
        return {s: [v for x, v in zip(items, values) if x["set"] == s] for s in sets}

    return {"unsafe": part(tasks.harmful, unsafe, "main"), "refused": part(tasks.benign, refused, "main"),
            "refusal_judge": refusal_judge, "kw_harmful": part(tasks.harmful, kw_harm, "main"),
            "kw_benign": part(tasks.benign, kw_benign, "main"), "samples": samples,
            "unsafe_by_set": by_set(tasks.harmful, unsafe, "main"),
            "refusal_by_set": {"harmful": {s: {"judged": v, "keyword": by_set(tasks.harmful, kw_harm, "main")[s]}
                                           for s, v in by_set(tasks.harmful, refused_h, "main").items()},
                               "benign": {s: {"judged": v, "keyword": by_set(tasks.benign, kw_benign, "main")[s]}
                                          for s, v in by_set(tasks.benign, refused, "main").items()}},
            "extra": {"harmful": {s: {"judged": v, "keyword": by_set(tasks.harmful, kw_harm, "extra")[s]}
                                  for s, v in by_set(tasks.harmful, unsafe, "extra").items()},
                      "benign": {s: {"judged": v, "keyword": by_set(tasks.benign, kw_benign, "extra")[s]}
                                 for s, v in by_set(tasks.benign, refused, "extra").items()}}}


def judge_honest(judges: dict[str, Judge], tasks: Tasks, gens: dict) -> dict[str, Any]:
    qs = [x["question"] for x in tasks.truthfulqa]
    ans = [gens[("truthfulqa", x["id"])] for x in tasks.truthfulqa]
    pt = judges["truthful"].truthful(qs, ans, [x["references"] for x in tasks.truthfulqa])
    pi = judges["informative"].informative(qs, ans)
    ti = M.ti_items(pt, pi, ans)
    truthful = [1.0 if not a.strip() else (None if p is None else float(p >= M.THRESHOLD)) for a, p in zip(ans, pt)]
    informative = [0.0 if not a.strip() else (None if p is None else float(p >= M.THRESHOLD)) for a, p in zip(ans, pi)]
    samples = [{"task": "truthfulqa", "id": x["id"], "p_truthful": pt[i], "p_informative": pi[i], "ti": ti[i]}
               for i, x in enumerate(tasks.truthfulqa)]
    return {"ti": ti, "truthful": truthful, "informative": informative, "samples": samples}


# --- judge-free metrics ----------------------------------------------------------------------

def score_mc(policy, tasks: Tasks, batch_size: int, progress: bool, cache: ScoreCache | None = None) -> dict[str, Any]:
    flat_q, flat_a, spans = [], [], []
    for m in tasks.mc:
        answers = list(dict.fromkeys(list(m["mc1_targets"]) + list(m["mc2_targets"])))
        spans.append((len(flat_a), answers))
        flat_q += [m["question"]] * len(answers)
        flat_a += answers
    lp = chunked_logprob(policy, flat_q, flat_a, batch_size, "MC log-likelihoods", progress, cache)
    mc1, mc2, samples = [], [], []
    for m, (start, answers) in zip(tasks.mc, spans):
        score = dict(zip(answers, lp[start:start + len(answers)]))
        for key, fn, out in (("mc1_targets", M.mc1_item, mc1), ("mc2_targets", M.mc2_item, mc2)):
            t = m[key]
            out.append(fn([score[a] for a in t if t[a] == 1], [score[a] for a in t if t[a] == 0]))
        samples.append({"task": "mc", "id": m["id"], "mc1": mc1[-1], "mc2": mc2[-1]})
    return {"mc1": mc1, "mc2": mc2, "samples": samples}


def pair_texts(pairs: Sequence[dict]) -> tuple[list[str], list[str]]:
    """(prompts, continuations) of one axis's preference pairs: every chosen answer, then every rejected one."""
    return [p["prompt"] for p in pairs] * 2, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]


def score_reference(ref_policy, tasks: Tasks, batch_size: int, progress: bool, ref_cache: ScoreCache) -> int:
    """pi_ref's log-probs of every preference pair of ``tasks`` into ``ref_cache``, exactly as
    ``score_pairs`` scores them (same texts, order and batches), so evaluations of several modes run
    in parallel against one base read them instead of each scoring them. Returns the pairs' count."""
    for axis, pairs in tasks.pairs.items():
        prompts, conts = pair_texts(pairs)
        chunked_logprob(ref_policy, prompts, conts, batch_size, f"ref log-probs [{axis}]", progress, ref_cache)
    return sum(len(pairs) for pairs in tasks.pairs.values())


def score_pairs(policy, ref_policy, tasks: Tasks, batch_size: int, progress: bool, cache: ScoreCache | None = None,
                ref_cache: ScoreCache | None = None) -> dict[str, Any]:
    per_axis: dict[str, list[float]] = {}
    samples = []
    same = ref_policy is None or ref_policy is policy
    for axis, pairs in tasks.pairs.items():
        prompts, conts = pair_texts(pairs)
        pi = chunked_logprob(policy, prompts, conts, batch_size, f"pi log-probs [{axis}]", progress, cache)
        ref = pi if same else chunked_logprob(ref_policy, prompts, conts, batch_size, f"ref log-probs [{axis}]",
                                              progress, ref_cache)
        n = len(pairs)
        items = M.implicit_reward_items(pi[:n], pi[n:], ref[:n], ref[n:])
        per_axis[axis] = items
        samples += [{"task": f"pairs:{axis}", "id": p["id"], "reward_chosen": pi[i] - ref[i],
                     "reward_rejected": pi[n + i] - ref[n + i], "correct": items[i]} for i, p in enumerate(pairs)]
    return {"per_axis": per_axis, "samples": samples, "reference_is_policy": same}


# --- the whole run ---------------------------------------------------------------------------

def run_suite(suite: Suite | str, policy, judges: dict[str, Judge], out_dir: str | os.PathLike, *,
              ref_policy=None, sampling: Sampling | None = None, batch_size: int = 8, n_boot: int = 1000,
              seed: int = 0, data_dir=None, run_info: dict | None = None, progress: bool = True,
              tasks: Tasks | None = None, log_fn: Callable[[str], None] | None = None,
              ref_cache: ScoreCache | None = None) -> dict | None:
    """Evaluate ``policy`` on ``suite``; ``judges`` maps capability -> judge (see judges.base.build_judges).
    Under a launcher (``accelerate launch``) generation and log-likelihood scoring are shared between
    the processes and merged; the main process judges, writes the files and returns the report, the
    others return None.
    ``ref_policy`` is pi_ref for Alignment Accuracy (None = the policy itself, e.g. for the base);
    ``ref_cache`` keeps its log-probs across runs (see ``alignx.eval.options.reference_cache``). The
    policy's own log-probs are kept in ``out_dir/scores.json``."""
    t0 = time.time()
    suite = get_suite(suite) if isinstance(suite, str) else suite
    for cap in ("prefer", "unsafe", "truthful", "informative"):
        if cap not in judges:
            raise InvalidInput(f"no judge for {cap!r}: pass one per capability (see build_judges)")
    say = log_fn or (lambda msg: print(msg, file=sys.stderr, flush=True) if progress and dist.is_main() else None)
    sampling = sampling or Sampling(max_new_tokens=suite.max_new_tokens, temperature=0.0, seed=seed)
    run_info = dict(run_info or {}, mode=(run_info or {}).get("mode", getattr(policy, "name", "policy")))
    processes = dist.world_size()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = tasks or build_tasks(suite, data_dir)
    timings: dict[str, float] = {}

    def stage(name: str, fn):
        t = time.time()
        say(f"[{suite.name}] {name} ...")
        result = fn()
        timings[name] = round(time.time() - t, 1)
        return result

    cache = GenerationCache(out / GENERATIONS, run_key(run_info, sampling))
    gens = stage("generate", lambda: generate_all(policy, tasks, cache, sampling, batch_size, progress))
    scores = ScoreCache(out / SCORES, run_key(run_info, None))
    mc = stage("MC1/MC2", lambda: score_mc(policy, tasks, batch_size, progress, scores))
    pairs = stage("alignment accuracy", lambda: score_pairs(policy, ref_policy, tasks, batch_size, progress, scores,
                                                             ref_cache))
    if not dist.is_main():              # the policy's work is shared; judging and the report are rank 0's
        return None
    helpful, help_samples = stage("judge helpfulness", lambda: judge_helpful(judges["prefer"], tasks, gens))
    safety = stage("judge safety", lambda: judge_safety(judges, tasks, gens))
    honest = stage("judge honesty", lambda: judge_honest(judges, tasks, gens))
    report = build_report(suite=suite, tasks=tasks, judges=judges, helpful=helpful, safety=safety, honest=honest,
                          mc=mc, pairs=pairs, n_boot=n_boot, seed=seed, sampling=sampling, run_info=run_info,
                          timings=dict(timings, total=round(time.time() - t0, 1)))
    report["run"]["processes"] = processes
    model_outputs = [{"instruction": x["instruction"], "output": gens[("alpaca", x["id"])],
                      "generator": f"alignx-{run_info['mode']}", "dataset": x["dataset"]} for x in tasks.alpaca]
    samples = help_samples + safety["samples"] + honest["samples"] + mc["samples"] + pairs["samples"]
    for s in samples:
        text = gens.get((s["task"], s["id"]))
        if text is not None:
            s["output"] = text
    write_outputs(out, report, model_outputs, samples)
    return report
