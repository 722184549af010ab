#!/usr/bin/env bash
# Builds the strategy plugins written in Python and JavaScript, each with its pinned toolchain
# installed into a local environment (nothing global, nothing by hand):
# - Python (plugins/python-keyed, on guest-sdk/python): componentize-py in a virtual
#   environment under the target directory;
# - JavaScript (plugins/js-keyed): componentize-js from the plugin's package-lock.json, into
#   its node_modules.
# Both are built against snapshot:strategy@0.1.0 (wit/v0.1.0): full snapshots, and the
# plugins the tests use to show that the host keeps loading 0.1.0 strategies unchanged.
# A build is skipped when its component is newer than every source, so running this again
# (setup.sh, then the tests) costs nothing. Needs python3 with venv and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPONENTIZE_PY_VERSION=0.25.1
target="${CARGO_TARGET_DIR:-target}"
out="$target/wasm32-wasip2/plugin"

# True when $1 is missing or older than any file below the other arguments.
stale() {
  local output=$1; shift
  [ ! -f "$output" ] || [ -n "$(find "$@" -type f -newer "$output" -not -path '*/node_modules/*' -not -path '*/__pycache__/*' -print -quit)" ]
}

venv="$target/guest-toolchains/componentize-py-$COMPONENTIZE_PY_VERSION"
if stale "$out/python_keyed.wasm" plugins/python-keyed guest-sdk/python wit/v0.1.0; then
  if [ ! -x "$venv/bin/componentize-py" ]; then
    echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
  echo "==> building the Python strategy plugin (componentize-py)"
  mkdir -p "$out"
  "$venv/bin/componentize-py" -d wit/v0.1.0 -w strategy componentize -p guest-sdk/python -p plugins/python-keyed app \
    -o "$out/python_keyed.wasm.tmp" >/dev/null
  mv "$out/python_keyed.wasm.tmp" "$out/python_keyed.wasm"
fi

if stale "$out/js_keyed.wasm" plugins/js-keyed wit/v0.1.0; then
  if stale plugins/js-keyed/node_modules/.package-lock.json plugins/js-keyed/package-lock.json; then
    echo "==> installing componentize-js (plugins/js-keyed/package-lock.json)"
    (cd plugins/js-keyed && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  echo "==> building the JavaScript strategy plugin (componentize-js)"
  mkdir -p "$out"
  plugins/js-keyed/node_modules/.bin/componentize-js --wit wit/v0.1.0 --world-name strategy \
    -o "$out/js_keyed.wasm.tmp" plugins/js-keyed/strategy.js >/dev/null
  mv "$out/js_keyed.wasm.tmp" "$out/js_keyed.wasm"
fi
