#!/usr/bin/env bash
# Installs what the build needs and builds the strategy plugins. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# Every crate under plugins/ is a strategy plugin: build them all as components.
plugins=()
for manifest in plugins/*/Cargo.toml; do
  plugins+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
echo "==> building strategy plugins ($(( ${#plugins[@]} / 2 )) crates)"
cargo build --quiet --profile plugin --target wasm32-wasip2 "${plugins[@]}"
