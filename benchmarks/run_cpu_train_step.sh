#!/usr/bin/env bash
# The CPU train-step figures quoted in docs/performance.md: both shapes from the issue, reference
# layout against tsmoe's fast layout, float32. Writes JSON next to the docs. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/figures}
mkdir -p "$out"
small=(--hidden 256 --layers 4 --heads 4 --experts 8 --top-k 2 --intermediate 1024 --ctx 512 --batch 8)
timemoe_50m=(--hidden 384 --layers 12 --heads 12 --experts 8 --top-k 2 --intermediate 1536 --ctx 512 --batch 2)
for implementation in reference fast; do
    .venv/bin/python benchmarks/train_step.py "${small[@]}" --implementation "$implementation" --steps 8 --warmup 2 \
        --json "$out/cpu_small_$implementation.json"
    .venv/bin/python benchmarks/train_step.py "${timemoe_50m[@]}" --implementation "$implementation" --steps 8 --warmup 2 \
        --json "$out/cpu_50m_$implementation.json"
done
