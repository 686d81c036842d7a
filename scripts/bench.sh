#!/usr/bin/env bash
# Bridge's benchmark: direct vs Bridge vs nginx, interleaved in one run on this machine.
# Installs nginx from Debian's packages if missing, builds in release mode, raises the file
# descriptor limit for the 10,000-stream run, and writes raw results, plots and table.md.
#   scripts/bench.sh [--quick] [--out DIR] [--baseline OTHER_BRIDGE_BINARY]   (default DIR: bench-results)
# --baseline measures another build as a fourth arm, interleaved: before/after in one run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server from Debian's packages (the limits figure shares limits through it)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v nginx >/dev/null 2>&1; then
  echo "installing nginx from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# 10,000 streams need 20,000+ loopback connections at once; widen the ephemeral port range
# when allowed (it is a loopback-only run either way).
sysctl -qw net.ipv4.ip_local_port_range="10000 65000" 2>/dev/null || true

cargo build --release --locked --bin bridge --bin bridge-bench
exec target/release/bridge-bench "$@"
