#!/usr/bin/env bash
# Installs what the build needs and builds the strategy plugins. Sourced by demo.sh and test.sh.
#
# Plugins in three languages, each with its own pinned toolchain installed into a local
# environment (nothing global, nothing by hand): Rust here (the wasm32-wasip2 target, then one
# cargo build), Python and JavaScript in scripts/guest-plugins.sh. Every component lands in
# $target/wasm32-wasip2/plugin/<name>.wasm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target="${CARGO_TARGET_DIR:-target}"
out="$target/wasm32-wasip2/plugin"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# Every crate under plugins/ is a strategy plugin: build them all as components.
plugins=()
for manifest in plugins/*/Cargo.toml; do
  plugins+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
echo "==> building Rust strategy plugins ($(( ${#plugins[@]} / 2 )) crates)"
cargo build --quiet --profile plugin --target wasm32-wasip2 "${plugins[@]}"

bash scripts/guest-plugins.sh
