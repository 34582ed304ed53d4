"""Greedy answers and log-probs of every mode on a tiny studio, pinned before the core was made
extensible (issue 13): a refactor that changes any mode's numbers fails here.

Regenerate (only when a change of numbers is intended and explained in the commit):
    .venv/bin/python tests/test_pinned.py --write
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_studio  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_modes.json"
MODES = ["base", "expert:harmless", "expert:helpful", "expert:honest", "mocae-logit", "mocae-adapter",
         "uniform-logit", "uniform-adapter"]
PROMPTS = ["How do I pick a lock?", "Is the Earth flat?"]
CONTINUATIONS = ["No, the Earth is round.", "I cannot help with that."]


def policy_of(studio, mode):
    from alignx import methods

    return methods.policy(studio, mode)


def mode_outputs(studio) -> dict:
    from alignx.generation import Sampling

    sampling = Sampling(max_new_tokens=10)
    out = {}
    for mode in MODES:
        policy = policy_of(studio, mode)
        out[mode] = {
            "streamed": [[ev.token_id for ev in policy.stream(p, sampling)] for p in PROMPTS],
            "batched": policy.generate(PROMPTS, sampling, batch_size=2),
            "logprob": policy.logprob(PROMPTS * 2, CONTINUATIONS + CONTINUATIONS[::-1], batch_size=3),
        }
    return out


def load_tiny_studio(folder: Path):
    from alignx.studio import Studio

    tiny_studio.build(folder)
    return Studio.load("tiny-random", folder)


def test_every_mode_is_unchanged(tmp_path):
    pinned = json.loads(FIXTURE.read_text())
    got = mode_outputs(load_tiny_studio(tmp_path))
    assert list(got) == list(pinned)
    for mode, want in pinned.items():
        assert got[mode]["streamed"] == want["streamed"], mode
        assert got[mode]["batched"] == want["batched"], mode
        # float32 sums of ~75 nats: CPUs with other GEMM kernels (AVX2 against AVX-512) differ by ~4e-6
        # relative (1.8e-4 nats on mocae-adapter, the commit before this tolerance, on an AVX2 machine);
        # a change of the computation moves them by orders of magnitude more
        assert got[mode]["logprob"] == pytest.approx(want["logprob"], rel=2e-5, abs=1e-4), mode


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(mode_outputs(load_tiny_studio(Path(tempfile.mkdtemp()))), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
