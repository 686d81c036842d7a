#!/usr/bin/env bash
# Runs the end-to-end suite: real `bridge` processes driven by the official OpenAI and Anthropic
# Python SDKs.
# Creates .venv with the pinned packages from tests/e2e/requirements.txt when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.requirements"
if ! cmp -s tests/e2e/requirements.txt "$stamp" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "installing python3-venv from Debian's packages"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/e2e/requirements.txt
  cp tests/e2e/requirements.txt "$stamp"
fi

cargo build --locked --bin bridge
BRIDGE_BIN="$PWD/target/debug/bridge" "$venv/bin/python" -m pytest -q tests/e2e "$@"
