#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the main job on built-in data: the quickstart sweep.
#
# `tsmoe sweep sweeps/quickstart.yaml` writes the built-in synthetic dataset to data/synthetic if it is
# missing, starts Ray with its dashboard and runs the sweep into runs/sweeps/quickstart. With --resume a
# rerun continues (or, once finished, only re-reads) the sweep already there instead of refusing it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/tsmoe sweep sweeps/quickstart.yaml --resume "$@"
