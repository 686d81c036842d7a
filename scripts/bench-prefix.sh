#!/usr/bin/env bash
# Cache-aware balancing on real engines (benchmarks/prefix.py): builds llama-server once
# (scripts/engine.sh, cached), a model large enough that prompts take time to process (made by
# tests/engine/make_model.py, cached), and Bridge's release build, then runs both balancing
# arms interleaved. Results: benchmarks/DATE-prefix/ (or the directory given).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/$(date +%F)-prefix}"
server=$(scripts/engine.sh)
cache=$(dirname "$server")
model="$cache/bench-384x6-$(sha256sum tests/engine/make_model.py | cut -c1-12).gguf"
if [ ! -f "$model" ]; then
  "$cache/tools/bin/python" tests/engine/make_model.py "$model.tmp" 384 6 1024 8192 && mv "$model.tmp" "$model"
fi
cargo build --release --locked --bin bridge
python3 benchmarks/prefix.py "$server" "$model" target/release/bridge "$out"
