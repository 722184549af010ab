#!/usr/bin/env bash
# All tests, from a fresh clone: installs the wasm target, builds the plugins the tests load,
# and runs every test of the workspace (unit, integration, property and doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> running all tests"
cargo test --workspace "$@"
