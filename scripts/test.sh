#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite. Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# -X faulthandler: a crash, even one past the test summary, prints every thread's Python stack.
exec .venv/bin/python -X faulthandler -m pytest "$@"
