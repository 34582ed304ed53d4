#!/usr/bin/env bash
# The GPU path in one short run, on a machine with a CUDA GPU:
#   1. bench/decode.py   --device cuda  (every way to use the experts: decode ratios to the base, CUDA peak memory)
#   2. bench/negotiax.py --device cuda  (NegotiaX against the base and MoCaE: decode ratios, CUDA peak memory)
#   3. the GPU-marked tests (pytest -m gpu: bf16 by default, cached decode = full forward, batch sized to memory)
# then prints the ratios of both benches as one table. Exits 2 at once, before anything runs, when
# torch sees no CUDA GPU (the CPU benches are `python bench/decode.py` and `python bench/negotiax.py`).
#
#   bash bench/gpu.sh                         # default model (SmolLM2-135M) and the shipped experts
#   MODEL=mistralai/Mistral-7B-Instruct-v0.2 EXPERTS=runs/mistral bash bench/gpu.sh
# Environment: PYTHON (default .venv/bin/python, else python3), MODEL, EXPERTS (experts folder),
# TOKENS (new tokens per prompt, 24), ROUNDS (interleaved rounds, 5).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    PY="$(command -v python3)"
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "bench/gpu.sh: torch sees no CUDA GPU (torch.cuda.is_available() is False); this script measures" \
         "the GPU path only. On a CPU run: $PY bench/decode.py and $PY bench/negotiax.py" >&2
    exit 2
fi

MODEL="${MODEL:-smollm2-135m-instruct}"
EXPERTS="${EXPERTS:-assets/experts}"
TOKENS="${TOKENS:-24}"
ROUNDS="${ROUNDS:-5}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False

"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}")'
for bench in decode negotiax; do
    echo "== bench/$bench.py --device cuda --model $MODEL"
    "$PY" "bench/$bench.py" --device cuda --model "$MODEL" --experts-dir "$EXPERTS" --tokens "$TOKENS" \
        --rounds "$ROUNDS" | tee "$OUT/$bench.txt"
done

echo "== GPU-marked tests"
tests_rc=0
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py || tests_rc=$?

echo "== ratios to the base (decode time per token; CUDA peak memory)"
"$PY" - "$OUT" <<'PYEOF'
import json
import sys
from pathlib import Path

for bench in ("decode", "negotiax"):
    lines = Path(sys.argv[1], bench + ".txt").read_text().strip().splitlines()
    result = json.loads(lines[-1])
    peak = result.get("cuda_peak_ratio", {})
    modes = [k for k, v in result.items() if isinstance(v, (int, float)) and not k.endswith("_prefill")
             and k not in ("rounds", "tokens", "base_ms_per_token", "recalibrate_ms", "threads", "torch_threads",
                           "negotiax_added_params", "negotiax_added_params_share")]
    print(f"{bench} (base {result.get('base_ms_per_token')} ms/token on {result.get('device')}):")
    print(f"  {'mode':32s} {'time ratio':>10s} {'prefill':>8s} {'CUDA peak':>10s}")
    for m in modes:
        print(f"  {m:32s} {result[m]:10.3f} {result.get(m + '_prefill', float('nan')):8.3f} "
              f"{peak.get(m, float('nan')):10.3f}")
PYEOF
exit "$tests_rc"
