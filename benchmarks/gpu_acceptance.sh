#!/usr/bin/env bash
# The GPU acceptance run in one command (one H100/H200, about 5 minutes): parity and generate on CUDA,
# TimeMoE-50M train-step figures at context 2048, the trainer's data_wait_frac, a DeepSpeed ZeRO-2 step and a
# two-trial sweep sharing the GPU. Figures go to docs/figures/. Details: benchmarks/gpu_acceptance.py.
#   bash benchmarks/gpu_acceptance.sh              # on a CUDA machine
#   bash benchmarks/gpu_acceptance.sh --dry-run    # the same steps on CPU at tiny shapes (tests the script)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
if [[ " $* " != *" --dry-run "* ]] && ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_acceptance: no CUDA device (torch.cuda.is_available() is False); nothing run (--dry-run runs it on CPU)" >&2
    exit 2
fi
if [[ " $* " == *" --dry-run "* ]]; then
    exec "$python" benchmarks/gpu_acceptance.py "$@"   # a shared CPU takes as long as it takes
fi
exec timeout 330 "$python" benchmarks/gpu_acceptance.py "$@"
