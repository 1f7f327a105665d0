#!/usr/bin/env bash
# Installs what Switchboard's build and end-to-end tests need on Debian 12, as root.
# Idempotent: when every package is already installed, apt is not touched at all.
# Downloads nothing except through apt (and cargo, for cargo-nextest if it is missing).
set -euo pipefail

PACKAGES=(
  # OCI runtimes and podman, with what `podman --runtime runc run --rootfs DIR` needs
  runc crun podman conmon catatonit fuse-overlayfs uidmap containerd
  # k8s-cri (tests/e2e_cri.rs) compiles the CRI protobufs at build time
  protobuf-compiler
  # the container image of the tests: a static busybox copied into a bundle rootfs
  busybox-static
  # libseccomp-sys links libseccomp via pkg-config
  libseccomp-dev pkg-config gcc libc6-dev
  # promtool lints the agent's /metrics; setpriv/unshare come from util-linux
  prometheus util-linux
  # switchboard-bench --rows recording compares recording with strace
  strace
  ca-certificates python3
  # the Debian package (scripts/build-deb.sh, tests/package.rs): cargo-deb's dependency
  # scan (dpkg-shlibdeps), `systemd-analyze verify` of the unit, `man -l` of the pages
  dpkg-dev systemd man-db groff-base iproute2
  # the virtualenv of the manifest validators (below)
  python3-venv
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: missing packages (${missing[*]}) and not root: cannot install" >&2
    exit 1
  fi
  echo "install.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A registry hiccup should not fail a CI run: three tries each.
  retry() { "$@" || { sleep 5; "$@"; } || { sleep 15; "$@"; }; }
  retry apt-get update -q
  retry apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
else
  echo "install.sh: all ${#PACKAGES[@]} packages already installed"
fi

# The manifest validators (scripts/validate-manifests.sh), from PyPI, pinned, in a
# virtualenv of Debian's python3 (Debian 12's system Python refuses pip installs).
VENV=/opt/switchboard/venv
PY_PACKAGES=(kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0)
# A stamp names what the virtualenv holds, so a changed pin reinstalls.
if [[ $(cat "$VENV/installed" 2>/dev/null) != "${PY_PACKAGES[*]}" ]]; then
  echo "install.sh: installing ${PY_PACKAGES[*]} into $VENV"
  /usr/bin/python3 -m venv "$VENV"
  pip_install() { "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"; }
  pip_install || { sleep 5; pip_install; } || { sleep 15; pip_install; }
  echo "${PY_PACKAGES[*]}" >"$VENV/installed"
fi

# The .deb builder, pinned; compiled once (a few minutes on 2 cores), then kept in ~/.cargo/bin.
CARGO_DEB_VERSION=3.8.0
if [[ $(cargo deb --version 2>/dev/null) != *" $CARGO_DEB_VERSION"* ]]; then
  echo "install.sh: installing cargo-deb $CARGO_DEB_VERSION from crates.io"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install.sh: installing cargo-nextest from crates.io"
  cargo install --locked cargo-nextest
fi
