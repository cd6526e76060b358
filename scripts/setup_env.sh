#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with tsmoe installed in editable mode.
#
# torch: if .venv already has torch, it is kept (install the build for your GPU there first, see
# README). Otherwise torch==$TSMOE_TORCH_VERSION (default 2.13.0) is installed from your pip index.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TSMOE_VENV:-.venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

if ! "$py" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==${TSMOE_TORCH_VERSION:-2.13.0}"
    "$py" -m pip install --quiet --disable-pip-version-check "torch==${TSMOE_TORCH_VERSION:-2.13.0}"
fi

stamp="$venv/.tsmoe-install-stamp"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Pin torch to the installed build so no dependency swaps it for another one.
    torch_version=$("$py" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null)
    pin=$(mktemp)
    trap 'rm -f "$pin"' EXIT
    echo "torch==$torch_version" > "$pin"
    echo "[setup] installing tsmoe and its dependencies into $venv (torch $torch_version kept)"
    "$py" -m pip install --quiet --disable-pip-version-check -c "$pin" -e ".[test]"
    echo "$want" > "$stamp"
fi
