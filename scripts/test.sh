#!/usr/bin/env bash
# Runs Bridge's whole test suite on a fresh machine, installing what it needs:
# formatting and lints, the Rust unit and integration tests, and the end-to-end suite that
# drives Bridge with the official OpenAI and Anthropic Python SDKs (pinned, in a project-local venv)
# and the official OpenAI Node SDK (pinned, npm), then the real-engine suite (llama.cpp's
# llama-server built from the llama-cpp-python sdist, cached under ~/.cache/bridge-engine).
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite builds each target once: incremental state would only cost disk (gigabytes).
export CARGO_INCREMENTAL=0

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== supply chain (cargo deny: licenses, bans, sources; see deny.toml)"
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "installing cargo-deny from crates.io (once; a few minutes)"
  cargo install --locked cargo-deny@0.20.2
fi
cargo deny --log-level error check licenses bans sources

echo "== Rust tests (unit, integration over loopback sockets)"
cargo test --locked

echo "== end-to-end tests (official OpenAI and Anthropic Python SDKs, OpenAI Node SDK)"
scripts/e2e.sh

echo "== real-engine tests (llama.cpp's llama-server, built once and cached under ~/.cache)"
scripts/test-engine.sh
