#!/usr/bin/env bash
# The main demo job, from a fresh clone: installs the wasm target, builds the plugins and the
# host (release), and runs `snapshot-host demo`. Extra arguments go to the demo.
# SNAPSHOT_HOST_PROFILE=debug runs the debug binary as the workspace's tests build it (CI: after
# the tests that is no build at all, where a release build of wasmtime would add a quarter of
# an hour on two cores, and a plain `cargo build` would resolve other features and rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
profile="${SNAPSHOT_HOST_PROFILE:-release}"
case "$profile" in
  release) echo "==> building the host (release)"; cargo build --quiet --release -p snapshot-host-cli ;;
  debug) echo "==> building the host (debug, as the tests build it)"; cargo test --quiet --workspace --no-run ;;
  *) echo "SNAPSHOT_HOST_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
exec "${CARGO_TARGET_DIR:-target}/$profile/snapshot-host" demo "$@"
