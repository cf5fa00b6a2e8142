#!/usr/bin/env bash
# Webhook memory under a burst of the largest AdmissionReviews it accepts
# (4 MiB, carrying two fault policies of just under the parser's 256 KiB limit each): RSS idle,
# peak during BENCH_CONCURRENCY concurrent reviews (BENCH_ROUNDS bursts),
# and after. Baseline, in the same run: the same server with the review
# bounds lifted (a decode slot and a body share for every review: how it
# behaved before they existed). Then the RSS per connection at the cap. Release build; glibc's allocator (the
# image is musl: see docs/resource-budget.md).
#
#   bench/webhook-memory.sh          # BENCH_CONCURRENCY=32 BENCH_ROUNDS=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENCY=${BENCH_CONCURRENCY:-32}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=bench/out
mkdir -p "$OUT"

cargo build --release --quiet -p faultline-webhook --bin faultline-webhook --example memory_client
BIN=target/release/faultline-webhook
CLIENT=target/release/examples/memory_client

WORK=$(mktemp -d)
SERVER_PID=
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
}
trap 'stop_server; rm -rf "$WORK"' EXIT

"$BIN" certs --out-dir "$WORK" --san localhost,127.0.0.1 >/dev/null

rss_kib() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }

measure() { # name, extra serve flags...
  local name=$1; shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  FAULTLINE_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" \
    --cert-file "$WORK/tls.crt" --key-file "$WORK/tls.key" --native-sidecars false --disable-controller \
    "$@" 2>"$OUT/webhook-memory-$name.log" &
  SERVER_PID=$!
  local base="https://localhost:$port" deadline=$((SECONDS + 30))
  until curl -sf --cacert "$WORK/ca.crt" "$base/healthz" >/dev/null; do
    if (( SECONDS > deadline )); then echo "webhook did not become ready; see $OUT/webhook-memory-$name.log" >&2; exit 1; fi
    sleep 0.1
  done
  local idle; idle=$(rss_kib "$SERVER_PID" VmRSS)
  "$CLIENT" --url "$base/validate" --ca "$WORK/ca.crt" --concurrency "$CONCURRENCY" --rounds "$ROUNDS" \
    >"$OUT/webhook-memory-$name.json"
  local peak; peak=$(rss_kib "$SERVER_PID" VmHWM)
  sleep 3
  local after; after=$(rss_kib "$SERVER_PID" VmRSS)
  stop_server
  echo "$name $idle $peak $after" >>"$OUT/webhook-memory.txt"
}

rm -f "$OUT/webhook-memory.txt"
measure unbounded --max-concurrent-reviews "$CONCURRENCY" \
  --review-body-budget-bytes $((CONCURRENCY * 4 * 1024 * 1024)) --review-wait-ms 60000
measure bounded

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for line in open(f"{out}/webhook-memory.txt"):
    name, idle, peak, after = line.split()
    rows[name] = dict(idle=int(idle) / 1024, peak=int(peak) / 1024, after=int(after) / 1024,
                      client=json.load(open(f"{out}/webhook-memory-{name}.json")))
base = rows["unbounded"]["peak"] or 1
print(f"{'case':<10} {'idle MiB':>9} {'peak MiB':>9} {'after MiB':>10} {'peak vs baseline':>17} {'seconds':>8}  answers")
for name, r in rows.items():
    c = r["client"]
    print(f"{name:<10} {r['idle']:>9.1f} {r['peak']:>9.1f} {r['after']:>10.1f} {r['peak']/base:>16.2f}x {c['seconds']:>8.1f}  "
          f"{c['statuses']} ({c['retried_429']} retried 429s, body {c['body_bytes']} B)")
print("goal: bounded peak and after < 128 MiB (half the 256Mi limit)")
PY

# Connections at the cap: RSS per connection when every slot holds a client
# idle after its handshake, and one that has sent 60 KiB of headers that
# never end (the worst an HTTP/1 client can make a connection hold).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FAULTLINE_LOG=error "$BIN" serve --listen "127.0.0.1:$port" \
  --cert-file "$WORK/tls.crt" --key-file "$WORK/tls.key" --native-sidecars false --disable-controller \
  --first-request-timeout-seconds 60 --header-timeout-seconds 60 2>"$OUT/webhook-memory-conns.log" &
SERVER_PID=$!
deadline=$((SECONDS + 30))
until curl -sf --cacert "$WORK/ca.crt" "https://localhost:$port/healthz" >/dev/null; do
  if (( SECONDS > deadline )); then echo "webhook did not become ready" >&2; exit 1; fi
  sleep 0.1
done
python3 - "$SERVER_PID" "$port" "$WORK/ca.crt" <<'PY'
import socket, ssl, sys, time
pid, port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
n = 500
before = rss()
conns = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") for _ in range(n)]
time.sleep(1)
idle = rss()
for c in conns:
    c.sendall(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n" + b"x-filler: " + b"a" * 60000)
time.sleep(2)
filled = rss()
print(f"{n} connections: idle after handshake {(idle - before) / n:.1f} KiB each, "
      f"with 60 KiB of unfinished headers {(filled - before) / n:.1f} KiB each "
      f"(RSS {before / 1024:.1f} -> {idle / 1024:.1f} -> {filled / 1024:.1f} MiB)")
for c in conns:
    c.close()
PY
stop_server
