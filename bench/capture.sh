#!/usr/bin/env bash
# bench/capture.sh — what the traffic capture costs an app, measured in one run.
#
# Two network namespaces joined by a veth pair: "pod" runs nginx (the app, on
# :8080) and the real faultline-proxy as UID 15400; "peer" runs wrk. First wrk
# hits the app with no rules installed, then `faultline-proxy init` installs the
# redirection and the same wrk command goes through iptables + the proxy (with
# a policy whose rule matches nothing, so rules are evaluated but no fault
# fires); `init --clean` removes it again, and the pair of runs is repeated.
# Prints median throughput and p99 for both and the captured/direct ratios.
#
# Needs root, iproute2, iptables, wrk, nginx, curl and a built proxy
# (`make release`, or FAULTLINE_PROXY_BIN=path). Knobs: BENCH_DURATION (5s per
# run), BENCH_ROUNDS (3), BENCH_CONNECTIONS (32), BENCH_THREADS (2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${FAULTLINE_PROXY_BIN:-$root/target/release/faultline-proxy}"
DURATION="${BENCH_DURATION:-5s}"
CONNS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
POD_IP=10.241.0.2
PEER_IP=10.241.0.1

die() { echo "bench/capture.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces and iptables)"
for tool in ip iptables wrk nginx curl setpriv; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install iproute2 iptables wrk nginx curl util-linux)"
done
[ -x "$BIN" ] || die "no proxy binary at $BIN (run 'make release' or set FAULTLINE_PROXY_BIN)"

ns="flbench-$$"
pod="$ns-pod"
peer="$ns-peer"
tmp="$(mktemp -d)"
chmod 755 "$tmp"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$pod" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$pod"
ip netns add "$peer"
ip -n "$pod" link add eth0 type veth peer name eth0 netns "$peer"
ip -n "$pod" addr add "$POD_IP/30" dev eth0
ip -n "$peer" addr add "$PEER_IP/30" dev eth0
for n in "$pod" "$peer"; do
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
done

cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  server {
    listen 8080;
    location / { return 200 "ok\n"; }
  }
}
EOF
ip netns exec "$pod" nginx -c "$tmp/nginx.conf" &
pids+=($!)

cat >"$tmp/faults.yaml" <<'EOF'
rules:
- name: never-matches
  match: {direction: inbound, path: /faultline-bench-never}
  delay: {fixed: 1s}
EOF
chmod 644 "$tmp/faults.yaml"
ip netns exec "$pod" env FAULTLINE_FAULTS_FILE="$tmp/faults.yaml" FAULTLINE_LOG=warn \
  setpriv --reuid 15400 --regid 15400 --clear-groups "$BIN" run >"$tmp/proxy.log" 2>&1 &
pids+=($!)

# Wait for readiness by polling, with a deadline.
ready() { ip netns exec "$peer" curl -fs -o /dev/null --max-time 1 "$1"; }
deadline=$((SECONDS + 20))
until ready "http://$POD_IP:8080/" && ready "http://$POD_IP:15400/readyz"; do
  [ $SECONDS -lt $deadline ] || { cat "$tmp/proxy.log" >&2; die "app or proxy not ready after 20s"; }
  sleep 0.1
done

# One wrk run from the peer namespace with $1 connections; prints
# "<requests/s> <p50 ms> <p99 ms>".
wrk_run() {
  local conns="$1" threads out
  threads=$((conns < THREADS ? conns : THREADS))
  ip netns exec "$peer" wrk -t"$threads" -c"$conns" -d2s "http://$POD_IP:8080/" >/dev/null # warm-up
  out="$(ip netns exec "$peer" wrk -t"$threads" -c"$conns" -d"$DURATION" --latency "http://$POD_IP:8080/")"
  if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; die "wrk saw non-2xx responses"; fi
  echo "$out" | awk '
    function ms(v,   unit) { unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
      return (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : v }
    /Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

# Throughput and tail under load ($CONNS connections), then the latency one
# request adds (a single connection, no queueing): "<req/s> <p99> <p50 c1> <p99 c1>".
measure() {
  local loaded single
  loaded="$(wrk_run "$CONNS")"
  single="$(wrk_run 1)"
  echo "$(echo "$loaded" | cut -d' ' -f1,3) $(echo "$single" | cut -d' ' -f2,3)"
}

# Alternate direct and captured rounds (init, measure, --clean) so load from
# other work on the machine hits both alike; report medians.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$tmp/direct"
: >"$tmp/captured"
redirected=0
for round in $(seq 1 "$ROUNDS"); do
  direct="$(measure)"
  echo "$direct" >>"$tmp/direct"
  ip netns exec "$pod" "$BIN" init >/dev/null 2>"$tmp/init.log" || { cat "$tmp/init.log" >&2; die "init failed"; }
  captured="$(measure)"
  echo "$captured" >>"$tmp/captured"
  # The captured runs must really have gone through the redirect.
  count="$(ip netns exec "$pod" iptables-save -c -t nat |
    sed -n 's/^\[\([0-9]*\):.*-A FAULTLINE_INBOUND .*-j FAULTLINE_IN_REDIRECT$/\1/p')"
  [ "${count:-0}" -gt 0 ] || die "round $round: no connection was redirected to the proxy"
  redirected=$((redirected + count))
  ip netns exec "$pod" "$BIN" init --clean >/dev/null 2>"$tmp/init.log" || { cat "$tmp/init.log" >&2; die "init --clean failed"; }
  echo "round $round (req/s p99 p50@1 p99@1): direct $direct | captured $captured" >&2
done
col() { cut -d' ' -f"$1" "$tmp/$2" | median; }

echo "capture: wrk -c$CONNS and -c1, -d$DURATION each, median of $ROUNDS alternating rounds;"
echo "nginx app in a pod netns, wrk in a peer netns; captured = iptables REDIRECT + faultline-proxy"
printf "%-30s %10s %12s %14s %14s\n" "path" "req/s" "p99 ms" "p50 ms (c1)" "p99 ms (c1)"
for path in direct captured; do
  label="direct (no rules)"; [ "$path" = captured ] && label="captured (iptables + proxy)"
  printf "%-30s %10.0f %12.2f %14.3f %14.3f\n" "$label" "$(col 1 $path)" "$(col 2 $path)" "$(col 3 $path)" "$(col 4 $path)"
done
awk -v a="$(col 1 direct)" -v b="$(col 1 captured)" -v c="$(col 2 direct)" -v d="$(col 2 captured)" \
    -v e="$(col 3 direct)" -v f="$(col 3 captured)" -v g="$(col 4 direct)" -v h="$(col 4 captured)" 'BEGIN {
  printf "%-30s %10.2f %12.2f %14.2f %14.2f\n", "ratio captured/direct", b / a, d / c, f / e, h / g
}'
echo "connections redirected to the proxy: $redirected; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
