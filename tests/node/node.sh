#!/usr/bin/env bash
# A real Kubernetes node on this machine, for the end-to-end tests (see
# docs/e2e-harness.md): containerd + runc + a CNI bridge (pods in 10.88.0.0/16
# on bridge fl0, host side and node IP 10.88.0.1) + kubelet + kube-scheduler
# from $KUBEBUILDER_ASSETS, joined to the API server of $KUBECONFIG.
#   node.sh up                  start; waits for the node to be Ready; prints the node name
#   node.sh down                stop what `up` started (by pid); remove pods, mounts, cgroups, bridge, state
#   node.sh images              build and import the base images below
#   node.sh import TAR...       import docker-archive / OCI tarballs (your own images)
#   node.sh rootfs-image DIR NAME CONFIG_JSON   make a one-layer image of a root filesystem and import it
# No registry is reachable here, so every image is local (imagePullPolicy
# IfNotPresent or Never; the kubelet never garbage-collects them):
#   localhost/faultline/pause:1     busybox-static sh that sleeps, exits on SIGTERM (the sandbox image)
#   localhost/faultline/busybox:1   busybox-static, for test apps (httpd, sh, nc, wget; `wget -T` segfaults)
# Needs root and Debian packages: containerd runc containernetworking-plugins busybox-static iptables.
# Traffic stays on this machine: pods are network namespaces on the fl0 bridge.
set -euo pipefail
STATE="${FAULTLINE_NODE_DIR:-/var/lib/faultline-node}"   # containerd root, kubelet root, logs, pids
RUN=/run/faultline-node                                  # containerd state + socket
# The node is named by its IP: the API server dials its Hostname address for logs/exec (no DNS for a name).
NODE=10.88.0.1 BRIDGE=fl0 GW=10.88.0.1 SUBNET=10.88.0.0/16
SOCK="$RUN/containerd.sock"
PAUSE=localhost/faultline/pause:1 BUSYBOX=localhost/faultline/busybox:1
SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
log() { echo "node: $*" >&2; }
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

# --- images ---------------------------------------------------------------
# Copy files (and symlink targets) plus the shared libraries they need into rootfs $R, keeping paths.
addfiles() {
  local R="$1"; shift
  for f in "$@"; do
    mkdir -p "$R$(dirname "$f")"; cp -a "$f" "$R$f"
    if [ -L "$f" ]; then local t; t="$(readlink -f "$f")"; mkdir -p "$R$(dirname "$t")"; cp -a "$t" "$R$t"; fi
    addlibs "$R" "$f"
  done
}
addlibs() {
  local R="$1"; shift
  ldd "$@" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u | while read -r l; do
    mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"
  done
}
# docker-archive tarball of rootfs $R named $NAME with a JSON image config fragment $CFG.
mkimage() {
  local R="$1" NAME="$2" CFG="$3" T; T="$(mktemp -d)"
  tar --numeric-owner --owner=0 --group=0 -C "$R" -cf "$T/layer.tar" .
  local diff; diff="sha256:$(sha256sum "$T/layer.tar" | cut -d' ' -f1)"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$CFG" "$diff" > "$T/config.json"
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$NAME" > "$T/manifest.json"
  tar -C "$T" -cf "$STATE/images/$(echo "$NAME" | tr '/:' '__').tar" manifest.json config.json layer.tar
  rm -rf "$T"
}
busybox_root() {   # /bin/busybox + applet links, passwd/group with the proxy's 15400
  local R="$1"; mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/var/www"
  cp /bin/busybox "$R/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nfaultline:x:15400:15400::/:/sbin/nologin\nnobody:x:65534:65534::/:/sbin/nologin\n' > "$R/etc/passwd"
  printf 'root:x:0:\nfaultline:x:15400:\nnogroup:x:65534:\n' > "$R/etc/group"
}
images() {
  mkdir -p "$STATE/images"; local W; W="$(mktemp -d)"
  busybox_root "$W/bb"
  mkimage "$W/bb" "$BUSYBOX" '{"Env":["PATH=/bin"],"Cmd":["sh"]}'
  mkimage "$W/bb" "$PAUSE" '{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]}'
  rm -rf "$W"
  [ -S "$SOCK" ] && import "$STATE"/images/*.tar || true
}
import() { for t in "$@"; do ctr_ images import "$t" >/dev/null; done; log "images: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"; }
rootfs_image() { mkdir -p "$STATE/images"; mkimage "$1" "$2" "$3"; import "$STATE/images/$(echo "$2" | tr '/:' '__').tar"; }

# --- up -------------------------------------------------------------------
up() {
  local KC="${KUBECONFIG:?set KUBECONFIG to the control plane the node joins}" BINS
  kubectl get --raw /readyz >/dev/null || { log "the API server of $KC is not ready"; exit 1; }
  BINS="${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a directory with kubelet and kube-scheduler}"
  for b in kubelet kube-scheduler; do [ -x "$BINS/$b" ] || { log "$BINS/$b is missing"; exit 1; }; done
  local need=""; for p in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins /bin/busybox:busybox-static iptables:iptables; do
    command -v "${p%%:*}" >/dev/null 2>&1 || [ -x "${p%%:*}" ] || need="$need ${p##*:}"; done
  if [ -n "$need" ]; then log "installing$need"; apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2; fi
  mkdir -p "$STATE"/{cni/net.d,cni/ipam,kubelet,logs,images} "$RUN"
  [ -f "$STATE/sysctl.saved" ] || for s in $SYSCTLS; do echo "$s=$(sysctl -n "$s")"; done > "$STATE/sysctl.saved"
  # The bridge exists before the kubelet so that 10.88.0.1 can be the node IP
  # (kubelet refuses loopback) and the webhook/controller address for pods.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q "$GW/16" || ip addr add "$GW/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  cat > "$STATE/cni/net.d/10-faultline.conflist" <<EOF
{"cniVersion":"0.4.0","name":"faultline-node","plugins":[
 {"type":"bridge","bridge":"$BRIDGE","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"$STATE/cni/ipam","ranges":[[{"subnet":"$SUBNET","rangeStart":"10.88.1.1","gateway":"$GW"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
EOF
  cat > "$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  restrict_oom_score_adj = true   # this VM lacks CAP_SYS_RESOURCE: negative oom_score_adj (sandbox -998) fails in runc
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  if ! { [ -f "$STATE/containerd.pid" ] && kill -0 "$(cat "$STATE/containerd.pid")" 2>/dev/null; }; then
    containerd --config "$STATE/containerd.toml" >"$STATE/logs/containerd.log" 2>&1 & echo $! > "$STATE/containerd.pid"
    for _ in $(seq 60); do ctr_ version >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  ls "$STATE"/images/*.tar >/dev/null 2>&1 || images
  import "$STATE"/images/*.tar
  cp "$KC" "$STATE/kubelet/kubeconfig"   # the caller's credentials (test clusters only; no node certificates)
  cat > "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: $GW
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}   # the API server has no kubelet client cert
authorization: {mode: AlwaysAllow}
makeIPTablesUtilChains: false            # leave the host's iptables alone
imageGCHighThresholdPercent: 100         # never GC the local images (they cannot be pulled)
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
serializeImagePulls: false
EOF
  if ! { [ -f "$STATE/kubelet.pid" ] && kill -0 "$(cat "$STATE/kubelet.pid")" 2>/dev/null; }; then
    "$BINS/kubelet" --config="$STATE/kubelet/config.yaml" --kubeconfig="$STATE/kubelet/kubeconfig" \
      --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --hostname-override="$NODE" --node-ip="$GW" \
      --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" --pod-infra-container-image="$PAUSE" \
      --v=1 >"$STATE/logs/kubelet.log" 2>&1 & echo $! > "$STATE/kubelet.pid"
  fi
  if ! { [ -f "$STATE/scheduler.pid" ] && kill -0 "$(cat "$STATE/scheduler.pid")" 2>/dev/null; }; then
    "$BINS/kube-scheduler" --kubeconfig="$KC" --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=16259 \
      >"$STATE/logs/scheduler.log" 2>&1 & echo $! > "$STATE/scheduler.pid"
  fi
  for _ in $(seq 120); do
    kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break
    sleep 1
  done
  kubectl get node "$NODE" -o wide >&2 || { log "node did not register; see $STATE/logs/kubelet.log"; exit 1; }
  # The kubelet registers with the not-ready taint; the node-lifecycle controller that lifts it is off in cluster.sh.
  kubectl taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  echo "$NODE"
}

# --- down -----------------------------------------------------------------
down() {
  for p in scheduler kubelet; do [ -f "$STATE/$p.pid" ] && kill "$(cat "$STATE/$p.pid")" 2>/dev/null || true; done
  # Without the node-lifecycle controller a stopped node would stay Ready forever: remove it (pod GC then drops its pods).
  [ -n "${KUBECONFIG:-}" ] && timeout 10 kubectl delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  if [ -S "$SOCK" ]; then   # kill every container of this containerd, then its task/containers
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" 2>/dev/null || true; done; sleep 1
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  [ -f "$STATE/containerd.pid" ] && kill "$(cat "$STATE/containerd.pid")" 2>/dev/null || true
  # Shims this containerd started (their command line names our unique socket).
  for p in $(grep -l -a -- "$SOCK" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [ "$p" != $$ ] && grep -qa containerd-shim "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  done
  sleep 1
  # Pod network namespaces (CNI DEL never ran) and every mount under our dirs, deepest first.
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do
    [ -n "$(ip netns exec "$ns" ip -o addr show 2>/dev/null | grep -F '10.88.')" ] && ip netns delete "$ns" 2>/dev/null || true
  done
  awk -v a="$STATE" -v b="$RUN" '$2 ~ "^"a || $2 ~ "^"b {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for c in /sys/fs/cgroup/*/kubepods; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" || true
  [ -f "$STATE/sysctl.saved" ] && while IFS= read -r kv; do sysctl -q -w "$kv" || true; done < "$STATE/sysctl.saved"
  rm -rf "$RUN" "${STATE:?}"/{containerd,kubelet,cni,opt,*.pid,sysctl.saved}
  rmdir /run/containerd/{fifo,s} /run/containerd 2>/dev/null || true   # containerd 1.6 hard-codes these (empty once down)
  rm -rf /var/log/pods/*_*_* /var/log/containers/*.log 2>/dev/null || true
  log "down (images kept in $STATE/images, logs in $STATE/logs)"
}

case "${1:-}" in
  up) up;; down) down;; images) images;;
  import) shift; import "$@";;
  rootfs-image) shift; rootfs_image "$@";;
  *) echo "usage: $0 up|down|images|import TAR...|rootfs-image DIR NAME CONFIG_JSON" >&2; exit 2;;
esac
