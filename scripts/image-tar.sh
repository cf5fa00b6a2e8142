#!/usr/bin/env bash
# Build the faultline-proxy and faultline-webhook images without a container
# engine: a root filesystem per image, made from the built binaries and the
# files of installed Debian packages (plus the shared libraries they link),
# packed as a one-layer docker-archive tarball that `docker load`,
# `podman load` and `ctr images import` all accept.
#
#   scripts/image-tar.sh [TAG]        (default tag: dev)
#
# Env: REGISTRY (default ghcr.io/faultline-dev), BIN_DIR (default target/release:
# run `make release` first), OUT_DIR (default target/images).
# Prints the two tarball paths on stdout; progress on stderr.
# Needs: the Debian package iptables installed (its tools go into the proxy image).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-dev}
REGISTRY=${REGISTRY:-ghcr.io/faultline-dev}
BIN_DIR=${BIN_DIR:-target/release}
OUT_DIR=${OUT_DIR:-target/images}
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
log() { echo "image-tar: $*" >&2; }
die() { log "$*"; exit 1; }

for b in faultline-proxy faultline-webhook; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing: build it first (make release, or BIN_DIR=target/debug after cargo build --bins)"
done
dpkg-query -W -f='${Status}' iptables 2>/dev/null | grep -q "install ok installed" \
  || die "the Debian package iptables is not installed (apt-get install iptables): the proxy image carries its tools"

# The shared libraries (and the dynamic loader) that the given ELF files need, copied to rootfs $1.
add_libs() {
  local root="$1"; shift
  ldd "$@" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
}
# Files of an installed Debian package under the given path prefixes, symlinks kept.
add_package() {
  local root="$1" pkg="$2"; shift 2
  dpkg -L "$pkg" | while read -r f; do
    for prefix in "$@"; do
      case "$f" in "$prefix"*)
        if [ -d "$f" ] && [ ! -L "$f" ]; then mkdir -p "$root$f"
        else mkdir -p "$root$(dirname "$f")"; cp -a "$f" "$root$f"; fi;;
      esac
    done
  done
}
# Minimal /etc and writable-mount points shared by both images.
base_root() {
  local root="$1" user="$2" uid="$3"
  mkdir -p "$root"/{etc,tmp,proc,sys,dev,run,usr/local/bin}
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s::/:/sbin/nologin\n' "$user" "$uid" "$uid" > "$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
}
# docker-archive tarball of rootfs $1 named $2 with image config (JSON object) $3, written to $4.
pack() {
  local root="$1" name="$2" config="$3" out="$4" tmp diff
  tmp=$(mktemp -d)
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$tmp/layer.tar" .
  diff="sha256:$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$ARCH" "$config" "$diff" > "$tmp/config.json"
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$name" > "$tmp/manifest.json"
  tar --sort=name --mtime=@0 -C "$tmp" -cf "$out" manifest.json config.json layer.tar
  rm -rf "$tmp"
}

mkdir -p "$OUT_DIR"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# faultline-proxy: the sidecar runs as 15400; the init container (root,
# NET_ADMIN + NET_RAW) drives iptables/ip6tables, legacy or nft.
log "faultline-proxy: binary + iptables (both backends)"
root="$work/proxy"; base_root "$root" faultline 15400
install -m 0755 "$BIN_DIR/faultline-proxy" "$root/usr/local/bin/faultline-proxy"
add_package "$root" iptables /usr/sbin/ /usr/lib/
# Debian points the plain names at a backend through /etc/alternatives; the image picks nft.
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf "xtables-nft-multi" "$root/usr/sbin/$t"
done
add_libs "$root" "$root/usr/local/bin/faultline-proxy" "$root"/usr/sbin/xtables-*-multi "$root"/usr/lib/*/xtables/*.so
proxy_image="$REGISTRY/faultline-proxy:$TAG"
proxy_tar="$OUT_DIR/faultline-proxy_$TAG.tar"
pack "$root" "$proxy_image" \
  '{"User":"15400:15400","Env":["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/usr/local/bin/faultline-proxy"],"Cmd":["run"],"ExposedPorts":{"15400/tcp":{},"15401/tcp":{},"15406/tcp":{}}}' \
  "$proxy_tar"

# faultline-webhook: the binary alone, as the distroless non-root user 65532.
log "faultline-webhook: binary"
root="$work/webhook"; base_root "$root" nonroot 65532
install -m 0755 "$BIN_DIR/faultline-webhook" "$root/usr/local/bin/faultline-webhook"
add_libs "$root" "$root/usr/local/bin/faultline-webhook"
webhook_image="$REGISTRY/faultline-webhook:$TAG"
webhook_tar="$OUT_DIR/faultline-webhook_$TAG.tar"
pack "$root" "$webhook_image" \
  '{"User":"65532:65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":["/usr/local/bin/faultline-webhook"],"Cmd":["serve","--manage-certs"],"ExposedPorts":{"8443/tcp":{}}}' \
  "$webhook_tar"

log "built $proxy_image ($(du -h "$proxy_tar" | cut -f1)) and $webhook_image ($(du -h "$webhook_tar" | cut -f1))"
echo "$proxy_tar"
echo "$webhook_tar"
