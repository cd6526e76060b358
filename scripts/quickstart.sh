#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the main job on built-in data.
#
# Until the sweep lands (`tsmoe sweep sweeps/quickstart.yaml`), the main job is detection end to end:
# write the built-in synthetic motor-current dataset to data/synthetic (kept if it is already there),
# train a small Time-MoE on its normal segments, and score the labeled test split with the model and
# the four baselines. Extra arguments go to benchmarks/detection.py (e.g. --epochs 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
data=data/synthetic
if [ ! -f "$data/meta.json" ]; then
    .venv/bin/tsmoe data synth "$data" --train-segments 96 --val-segments 32 --test-segments 48 --segment-length 512
fi
.venv/bin/python benchmarks/detection.py --data "$data" --split test "$@"
