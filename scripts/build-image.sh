#!/usr/bin/env bash
# Builds the agent's container image offline with podman, FROM scratch (deploy/Containerfile),
# and writes it as an OCI archive that `ctr -n k8s.io images import` or
# `podman load` take on a node without a registry.
#
#   scripts/build-image.sh [TAG [ARCHIVE]]
#
# TAG defaults to localhost/switchboard:<version>, the image deploy/kubernetes/daemonset.yaml
# names; ARCHIVE to switchboard-image.tar. The binaries come from target/release (built
# here unless SWITCHBOARD_BIN_DIR names a directory holding them already).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
tag=${1:-localhost/switchboard:$version}
archive=${2:-switchboard-image.tar}

bin_dir=${SWITCHBOARD_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  (cd "$root" && cargo build --release --workspace)
  bin_dir=$root/target/release
fi

context=$(mktemp -d /tmp/switchboard-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
for bin in switchboard switchboard-oci-hook; do
  # Debug info is not needed at run time and makes up most of a debug build.
  strip --strip-debug -o "$rootfs/usr/local/bin/$bin" "$bin_dir/$bin"
  # Every shared library the binary loads, and the loader, at the paths it looks for them.
  for lib in $(ldd "$bin_dir/$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
# glibc resolves --socket-group and the root user through these (its files backend is built in).
printf 'root:x:0:0:root:/:/usr/local/bin/switchboard\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\n' >"$rootfs/etc/nsswitch.conf"
cp "$root/deploy/Containerfile" "$context/Containerfile"

podman build --quiet --pull=never --file "$context/Containerfile" --tag "$tag" "$context"
rm -f "$archive"
podman save --quiet --format oci-archive --output "$archive" "$tag"
echo "built $tag; OCI archive: $archive"
