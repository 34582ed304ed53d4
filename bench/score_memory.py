"""Peak memory of MoCaE logit fusion's teacher-forced scoring: the full log-softmax against the sliced head.

    python bench/score_memory.py [--rows 4] [--length 512] [--experts-dir assets/experts]

Each path runs in its own child process (so one's peak cannot hide the other's): load the default
model and the shipped experts, then ``mixture_token_logprobs`` on ``--rows`` random answers of
``--length`` tokens, the shape of one Alignment Accuracy batch:
  logits       the (n x B, L, V) logits of every expert row, log-softmax, gather (the path before
               ``alignx.logprobs``; forced with ``plain_head`` returning None)
  sliced_head  the final hidden states, the LM head slice by slice (``head_logprobs``; the default)
Each child reports its peak RSS above its RSS after loading (``ru_maxrss``), the seconds of the call
and the sum of the log-probs; the last line is one JSON object with both, ``memory_ratio`` =
logits / sliced_head and ``max_abs_diff`` of the two results (they must agree).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(path: str, rows: int, length: int, experts_dir: str | None) -> dict:
    import torch

    import alignx.mocae.fusion as fusion
    from alignx.models import DEFAULT_MODEL
    from alignx.studio import DEFAULT_EXPERTS_DIR, Studio

    studio = Studio.load(DEFAULT_MODEL, experts_dir or DEFAULT_EXPERTS_DIR)
    mocae = studio.mocae
    if path == "logits":
        fusion.plain_head = lambda model: None
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, studio.tokenizer.vocab_size, (rows, length), generator=g)
    w = torch.full((len(mocae.experts),), 1.0 / len(mocae.experts))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with torch.inference_mode():
        lp = fusion.mixture_token_logprobs(studio.model, mocae.experts, mocae.temperatures, w, ids,
                                           torch.ones_like(ids), 0, mocae.stacked)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"path": path, "peak_above_load_mb": round((peak - before) / 1024, 1), "seconds": round(seconds, 2),
            "values": lp.flatten().tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--experts-dir", default=None)
    ap.add_argument("--child", choices=["logits", "sliced_head"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.rows, a.length, a.experts_dir)))
        return
    out = {}
    for path in ("logits", "sliced_head"):
        cmd = [sys.executable, __file__, "--child", path, "--rows", str(a.rows), "--length", str(a.length)]
        if a.experts_dir:
            cmd += ["--experts-dir", a.experts_dir]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            sys.exit(f"{path}: child failed ({res.returncode}):\n{res.stderr[-2000:]}")
        out[path] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{path:12s} peak above load {out[path]['peak_above_load_mb']:8.1f} MB   {out[path]['seconds']:6.2f} s",
              file=sys.stderr)
    a_vals, b_vals = out["logits"].pop("values"), out["sliced_head"].pop("values")
    diff = max(abs(x - y) for x, y in zip(a_vals, b_vals))
    print(json.dumps({"rows": a.rows, "length": a.length, **out, "max_abs_diff": diff,
                      "memory_ratio": round(out["logits"]["peak_above_load_mb"]
                                            / max(out["sliced_head"]["peak_above_load_mb"], 1e-9), 2)}))


if __name__ == "__main__":
    main()
