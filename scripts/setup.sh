#!/usr/bin/env bash
# Installs what building and testing waf-agent needs on a Debian 12 host, and skips
# whatever is already there. Safe to run again; run it as root.
set -euo pipefail

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (it installs packages and mounts bpffs)" >&2
    exit 1
fi

# Debian packages: LLVM 22 for bpf-linker (it must match the nightly's LLVM major), the
# kernel-test, VM-test, packaging and lab tools, the peers the benchmarks and evaluations
# compare against, the flood generator (trafgen, in netsniff-ng) and the chart font.
packages=(
    llvm-22-dev libpolly-22-dev clang
    iproute2 iputils-ping ethtool bpftool
    xdp-tools nftables
    nginx libnginx-mod-http-modsecurity modsecurity-crs
    wrk qemu-system-x86 cpio busybox-static
    file binutils util-linux curl debootstrap systemd dpkg-dev
    netsniff-ng fonts-dejavu-core
    pkg-config libssl-dev python3
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # nginx starts itself on install; the evaluations start their own instance.
    systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
else
    log "Debian packages present"
fi

# The kernel side builds with nightly and the standard library's source.
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
else
    log "nightly rust-src present"
fi

# bpf-linker against LLVM 22; without LLVM_PREFIX it finds Debian's LLVM 14 and fails to link.
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version >/dev/null 2>&1; then
    log "building bpf-linker against LLVM 22 (about two minutes)"
    LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
        cargo install --locked bpf-linker --no-default-features --features llvm-22
else
    log "bpf-linker present ($(bpf-linker --version))"
fi

# `cargo xtask dist` packages with cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install --locked cargo-deb --version 3.8.0
else
    log "cargo-deb present ($(cargo deb --version))"
fi

if ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs on /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
else
    log "bpffs mounted"
fi

log "done"
