#!/usr/bin/env bash
# Drives a real kms-connector with Alibaba's own Python SDKs (installed from PyPI in a venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HYOK_SDK_VENV:-target/sdk-venv}"
if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/python/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$venv/requirements.txt"
fi
cargo build --quiet -p kms-connector
"$venv/bin/pytest" -q -p no:cacheprovider tests/python "$@"
