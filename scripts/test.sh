#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite. Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
