#!/usr/bin/env bash
# The real-engine suite: llama.cpp's llama-server (scripts/engine.sh builds it once and caches
# it) serving a tiny model generated with the `gguf` package, driven directly and through Bridge
# by the official OpenAI and Anthropic SDKs (the venv scripts/e2e.sh made).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
server=$(scripts/engine.sh)
cache=$(dirname "$server")
# The models are made by scripts in this repository: cached by each script's hash.
made() {
  local out="$cache/$2-$(sha256sum "tests/engine/$1" | cut -c1-12).gguf"
  if [ ! -f "$out" ]; then
    "$cache/tools/bin/python" "tests/engine/$1" "$out.tmp" >&2 && mv "$out.tmp" "$out"
  fi
  echo "$out"
}
model=$(made make_model.py bridge-tiny)
embedder=$(made make_embedder.py all-minilm-l6-v2)
echo "engine setup: $(( $(date +%s) - start )) s (cached under $cache)"

if [ ! -x .venv/bin/python ] || [ ! -d tests/e2e-node/node_modules/openai ]; then
  echo "the SDKs are missing: run scripts/e2e.sh (scripts/test.sh does) first" >&2
  exit 1
fi
cargo build --locked --bin bridge
LLAMA_SERVER="$server" ENGINE_MODEL="$model" ENGINE_EMBEDDER="$embedder" BRIDGE_BIN="$PWD/target/debug/bridge" \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/engine "$@"
