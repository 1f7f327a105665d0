#!/usr/bin/env bash
# Builds the Debian package: the release binaries, their man pages and completions
# (`generate-docs`, from the clap definitions), then cargo-deb with the metadata in
# Cargo.toml ([package.metadata.deb]). Prints the .deb's path on its last line.
#
#   scripts/build-deb.sh        # -> target/debian/switchboard_<version>-1_<arch>.deb
#
# cargo-deb comes from scripts/install.sh (`cargo install --locked cargo-deb`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p switchboard -p switchboard-oci-hook
rm -rf "$target/release/docs"
"$target/release/switchboard" generate-docs "$target/release/docs"
"$target/release/switchboard-oci-hook" generate-docs "$target/release/docs"
# Debian installs man pages compressed; -n keeps the timestamp out.
gzip -9n "$target/release/docs/man/"*.1
# --no-build: cargo-deb would build only the switchboard crate, not the hook. --strip: the
# release profile keeps line tables for backtraces, which a package does not ship.
cargo deb --no-build --strip --locked -p switchboard 2>&1 | tee "$target/cargo-deb.log" >&2
deb=$(tail -1 "$target/cargo-deb.log")
echo "$deb"
