#!/usr/bin/env bash
# Policy sync at scale: BENCH_PROXIES (10000) simulated proxy streams (the
# real stream client over real TLS, one pod-bound TokenRequest token each)
# against one controller (`faultline-webhook serve`, release build) on a real
# API server (KUBEBUILDER_ASSETS). Reports annotation-to-applied latency, the
# controller's RSS and idle CPU, the first connect of every proxy, and a
# controller restart: how long until every proxy is back and what that cost
# the API server (TokenReviews, LISTs, WATCHes, from its own metrics).
#
# Baseline, measured in the same run: how long a plain watch on the
# Deployment takes to see the same annotation change (the API server's own
# notification latency; the controller cannot beat it). Client, controller
# and API server share this machine. The pods are created directly through
# the API, owned by the Deployment (see tests/tests/controller/bench.rs).
#
#   KUBEBUILDER_ASSETS=/path/to/envtest bench/controller.sh
#   BENCH_PROXIES=10000 BENCH_ROUNDS=20 BENCH_IDLE_SECONDS=10 BENCH_PROFILE=release
#   BENCH_WEBHOOK_BIN=/path/to/faultline-webhook (default: build this tree's)
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

# BENCH_WEBHOOK_BIN measures another build of the controller (an earlier
# commit's, for a before/after on the same machine in one sitting).
if [[ -n "${BENCH_WEBHOOK_BIN:-}" ]]; then
  export FAULTLINE_WEBHOOK_BIN="$BENCH_WEBHOOK_BIN"
else
  cargo build "${PROFILE_FLAG[@]}" --quiet -p faultline-webhook --bin faultline-webhook
  export FAULTLINE_WEBHOOK_BIN="$PWD/target/$PROFILE/faultline-webhook"
fi
export BENCH_LOG="$PWD/$OUT/controller-server.log"
# Every reconcile pass is logged at debug level with its cost (summarised below).
export BENCH_CONTROLLER_LOG=${BENCH_CONTROLLER_LOG:-warn,faultline_webhook::controller::run=debug}
: >"$BENCH_LOG"
export BENCH_PROXIES=${BENCH_PROXIES:-10000} BENCH_ROUNDS=${BENCH_ROUNDS:-20} BENCH_IDLE_SECONDS=${BENCH_IDLE_SECONDS:-10}

# Both processes hold one socket per stream.
ulimit -n "$(( BENCH_PROXIES * 2 + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo test "${PROFILE_FLAG[@]}" --quiet -p faultline-e2e --test controller bench:: -- --ignored --nocapture \
  2>"$OUT/controller-bench.log" | tee "$OUT/controller-bench.txt" | grep -E '^[a-z_0-9]+=' >"$OUT/controller.kv" || {
  echo "bench/controller.sh: the driver failed; see $OUT/controller-bench.log" >&2
  exit 1
}

python3 - "$OUT/controller.kv" "$BENCH_LOG" <<'PY'
import re, statistics, sys
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
print(f"{'controller RSS after the rounds':<44} {f('rss_after_rounds_kib')/1024:>8.1f}MiB {f('rss_after_rounds_kib')/rss0:>11.2f}x")
print(f"{'controller CPU while idle (' + n + ' streams)':<44} {f('idle_cpu_pct'):>9.2f}% {'':>12}")
print(f"{'first connect of every proxy':<44} {f('connect_all_s'):>9.1f}s   ({kv['connect_token_reviews']} TokenReviews)")
print(f"{'restart: every proxy back':<44} {f('restart_settle_s'):>9.1f}s")
print(f"{'restart: TokenReviews / LISTs / WATCHes':<44} {kv['restart_token_reviews']:>10} / {kv['restart_lists']} / {kv['restart_watches']}")
print(f"{'restart: LISTs by resource':<44} {kv.get('restart_lists_by_resource', '')}")
print(f"{'restart: logins refused with Retry-After':<44} {kv['restart_limited']:>10}")
print(f"{'controller RSS after the restart':<44} {f('rss_restart_kib')/1024:>8.1f}MiB")
print(f"setup: pods {kv['setup_pods_s']}s, tokens {kv['setup_tokens_s']}s")
passes = {}
pattern = re.compile(r'reconciled pass="?(\w+)"? pods=(\d+) reconcile_ms=([\d.]+) publish_ms=([\d.]+)')
for line in open(sys.argv[2], errors="replace"):
    m = pattern.search(line)
    if m:
        passes.setdefault(m[1], []).append((int(m[2]), float(m[3]), float(m[4])))
for kind, runs in sorted(passes.items()):
    ms = sorted(r[1] for r in runs)
    pub = sorted(r[2] for r in runs)
    pods = sorted(r[0] for r in runs)
    print(f"{'reconcile, ' + kind + ' passes: ' + str(len(runs)):<44} {ms[0]:.1f} / {statistics.median(ms):.1f} / {ms[-1]:.1f} ms (min/median/max); "
          f"publish {statistics.median(pub):.1f} / {pub[-1]:.1f} ms (median/max); pods {pods[0]}-{pods[-1]}")
target = "met" if f("applied_p99_ms") <= 1000 else "MISSED"
print(f"target p99 <= 1000 ms: {target}")
rss = "met" if rss1 <= 250 * 1024 else "MISSED"
print(f"target RSS <= 250 MB with {n} streams: {rss}")
settle = "met" if f("restart_settle_s") <= 30 else "MISSED"
print(f"target restart settles <= 30 s: {settle}")
PY
