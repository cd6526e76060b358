#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the main job on built-in data.
#
# Until the sweep lands (`tsmoe sweep sweeps/quickstart.yaml`), the main job is one training run end to
# end: write the built-in synthetic motor-current dataset to data/synthetic (kept if already there),
# train configs/quickstart.yaml under Ray Train into runs/quickstart (a rerun resumes or reuses it), and
# score the labeled test split with the best model beside the four baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
data=data/synthetic
if [ ! -f "$data/meta.json" ]; then
    .venv/bin/tsmoe data synth "$data" --train-segments 96 --val-segments 32 --test-segments 48 --segment-length 512
fi
.venv/bin/tsmoe train configs/quickstart.yaml --output runs/quickstart "$@"
.venv/bin/tsmoe evaluate runs/quickstart/best_model --data "$data" --split test --heads 1 8
