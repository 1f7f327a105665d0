#!/usr/bin/env bash
# The project's test command (see README): installs system dependencies, then checks
# formatting and lints, builds the Debian package, then runs every test. The end-to-end
# tests need root; as non-root they print SKIP. Under CI=true a missing runtime fails
# instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The .deb that tests/package.rs unpacks and checks (a release build of both binaries).
bash scripts/build-deb.sh >/dev/null
# 2 cores: the root end-to-end tests use unique socket paths and container ids, so
# two of them can share the machine.
cargo nextest run --workspace --no-fail-fast --test-threads 2
