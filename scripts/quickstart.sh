#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the main job on built-in data.
#
# Until the sweep lands (`tsmoe sweep sweeps/quickstart.yaml`), the main runnable job is the model
# itself: print the published TimeMoE-50M shape, then time full training steps of a small Time-MoE
# on built-in synthetic series, in the reference's layout and in tsmoe's fast layout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/tsmoe model info --preset TimeMoE-50M
for implementation in reference fast; do
    .venv/bin/python benchmarks/train_step.py --implementation "$implementation" --ctx 256 --batch 8 --warmup 2 --steps 5 "$@"
done
