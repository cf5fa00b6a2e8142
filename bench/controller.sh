#!/usr/bin/env bash
# Policy sync: annotation-to-applied latency with BENCH_PROXIES (200) simulated
# proxy streams against one controller (`faultline-webhook serve`, release
# build) on a real API server (KUBEBUILDER_ASSETS), the controller's RSS with
# and without those streams, and its CPU while idle.
#
# Baseline, measured in the same run: how long a plain watch on the
# Deployment takes to see the same annotation change (the API server's own
# notification latency; the controller cannot beat it). Client, controller
# and API server share this machine.
#
#   KUBEBUILDER_ASSETS=/path/to/envtest bench/controller.sh
#   BENCH_PROXIES=200 BENCH_ROUNDS=20 BENCH_IDLE_SECONDS=10 BENCH_PROFILE=release
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KUBEBUILDER_ASSETS:-}" ]]; then
  echo "bench/controller.sh: KUBEBUILDER_ASSETS is not set (etcd, kube-apiserver, kube-controller-manager); skipping" >&2
  exit 0
fi
PROFILE=${BENCH_PROFILE:-release}
OUT=bench/out
mkdir -p "$OUT"
PROFILE_FLAG=()
[[ "$PROFILE" == release ]] && PROFILE_FLAG=(--release)

cargo build "${PROFILE_FLAG[@]}" --quiet -p faultline-webhook --bin faultline-webhook
export FAULTLINE_WEBHOOK_BIN="$PWD/target/$PROFILE/faultline-webhook"
export BENCH_LOG="$PWD/$OUT/controller-server.log"
export BENCH_PROXIES=${BENCH_PROXIES:-200} BENCH_ROUNDS=${BENCH_ROUNDS:-20} BENCH_IDLE_SECONDS=${BENCH_IDLE_SECONDS:-10}

cargo test "${PROFILE_FLAG[@]}" --quiet -p faultline-e2e --test controller bench:: -- --ignored --nocapture \
  2>"$OUT/controller-bench.log" | tee "$OUT/controller-bench.txt" | grep -E '^[a-z_0-9]+=' >"$OUT/controller.kv" || {
  echo "bench/controller.sh: the driver failed; see $OUT/controller-bench.log" >&2
  exit 1
}

python3 - "$OUT/controller.kv" <<'PY'
import sys
kv = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
f = lambda k: float(kv[k])
n = kv["proxies"]
watch50 = f("watch_p50_ms") or 1.0
print(f"policy sync with {n} proxy streams, {kv['rounds']} annotation changes ({kv['samples']} proxy applies)")
print(f"{'measure':<44} {'value':>10} {'vs baseline':>12}")
print(f"{'baseline: plain watch sees the change p50':<44} {f('watch_p50_ms'):>8.1f}ms {1.0:>11.2f}x")
print(f"{'baseline: plain watch sees the change p99':<44} {f('watch_p99_ms'):>8.1f}ms {f('watch_p99_ms')/watch50:>11.2f}x")
print(f"{'annotation-to-applied p50 (per proxy)':<44} {f('applied_p50_ms'):>8.1f}ms {f('applied_p50_ms')/watch50:>11.2f}x")
print(f"{'annotation-to-applied p99 (per proxy)':<44} {f('applied_p99_ms'):>8.1f}ms {f('applied_p99_ms')/watch50:>11.2f}x")
print(f"{'all proxies applied, p50 / max of rounds':<44} {f('all_applied_p50_ms'):>8.1f}ms {f('all_applied_max_ms'):>9.1f}ms")
rss0, rss1 = f("rss_idle_kib"), f("rss_streams_kib")
print(f"{'controller RSS, no streams':<44} {rss0/1024:>8.1f}MiB {1.0:>11.2f}x")
print(f"{'controller RSS, ' + n + ' streams':<44} {rss1/1024:>8.1f}MiB {rss1/rss0:>11.2f}x")
print(f"{'controller CPU while idle (' + n + ' streams)':<44} {f('idle_cpu_pct'):>9.2f}% {'':>12}")
target = "met" if f("applied_p99_ms") <= 1000 else "MISSED"
print(f"target p99 <= 1000 ms: {target}")
PY
