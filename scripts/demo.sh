#!/usr/bin/env bash
# The main demo job, from a fresh clone: installs the wasm target, builds the plugins and the
# host (release), and runs `snapshot-host demo`. Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> building the host (release)"
cargo build --quiet --release -p snapshot-host
exec "${CARGO_TARGET_DIR:-target}/release/snapshot-host" demo "$@"
