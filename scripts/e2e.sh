#!/usr/bin/env bash
# Runs the end-to-end suite: real `bridge` processes driven by the official OpenAI and Anthropic
# Python SDKs (tests/e2e) and the official OpenAI Node SDK (tests/e2e-node); fleets of them
# share a real Redis (redis-server, from Debian's packages) in tests/e2e/test_fleet.py; a real
# DNS server (dnsmasq) serves the discovery tests.
# Creates .venv and tests/e2e-node/node_modules with the pinned packages when needed.
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

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool) from Debian's packages (the rules are checked with it)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
if [ ! -x /usr/sbin/dnsmasq ]; then
  echo "installing dnsmasq-base from Debian's packages (the DNS discovery tests start their own)"
  apt-get update -qq && apt-get install -y -qq dnsmasq-base >/dev/null
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server from Debian's packages (the fleet tests start their own)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

node_dir=tests/e2e-node
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm from Debian's packages"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.lock-installed" 2>/dev/null; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$node_dir/package-lock.json" "$node_dir/node_modules/.lock-installed"
fi

cargo build --locked --bin bridge
export BRIDGE_BIN="$PWD/target/debug/bridge"
"$venv/bin/python" -m pytest -q tests/e2e "$@"
echo "== end-to-end tests (official OpenAI Node SDK)"
(cd "$node_dir" && node --test)
