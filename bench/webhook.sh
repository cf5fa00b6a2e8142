#!/usr/bin/env bash
# Webhook throughput: AdmissionReviews/s over TLS keep-alive and server-side
# p99, against a baseline measured in the same run (GET /healthz on the same
# TLS server: the transport's ceiling). Release build; client and server share
# this machine, so absolute figures are a lower bound for a dedicated node.
#
#   bench/webhook.sh                 # BENCH_SECONDS=8 BENCH_CONCURRENCY=8 by default
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${BENCH_SECONDS:-8}
CONCURRENCY=${BENCH_CONCURRENCY:-8}
OUT=bench/out
mkdir -p "$OUT"

cargo build --release --quiet -p faultline-webhook --bin faultline-webhook --example bench_client
BIN=target/release/faultline-webhook
CLIENT=target/release/examples/bench_client

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" certs --out-dir "$WORK" --san localhost,127.0.0.1 >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FAULTLINE_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" \
  --cert-file "$WORK/tls.crt" --key-file "$WORK/tls.key" --native-sidecars false --disable-controller \
  2>"$OUT/webhook-server.log" &
SERVER_PID=$!

BASE="https://localhost:$PORT"
deadline=$((SECONDS + 30))
until curl -sf --cacert "$WORK/ca.crt" "$BASE/healthz" >/dev/null; do
  if (( SECONDS > deadline )); then echo "webhook did not become ready; see $OUT/webhook-server.log" >&2; exit 1; fi
  sleep 0.1
done

run() { # name, path, extra flags...
  local name=$1 path=$2; shift 2
  "$CLIENT" --url "$BASE$path" --ca "$WORK/ca.crt" --seconds "$SECONDS_EACH" \
    --concurrency "$CONCURRENCY" --metrics-url "$BASE/metrics" "$@" >"$OUT/webhook-$name.json"
}

run baseline-healthz /healthz
run mutate-http1 /mutate
run mutate-h2 /mutate --http2

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {n: json.load(open(f"{out}/webhook-{n}.json")) for n in ["baseline-healthz", "mutate-http1", "mutate-h2"]}
base = rows["baseline-healthz"]["rps"] or 1
print(f"{'case':<18} {'req/s':>9} {'vs baseline':>12} {'client p50':>11} {'client p99':>11} {'server p99':>11} {'errors':>7}")
for name, r in rows.items():
    sp99 = "-" if name.startswith("baseline") or r["server_p99_us"] is None else f"{r['server_p99_us']:.0f}us"
    print(f"{name:<18} {r['rps']:>9.0f} {r['rps']/base:>11.2f}x {r['client_p50_us']:>9}us {r['client_p99_us']:>9}us {sp99:>11} {r['errors']:>7}")
print("targets: >= 5000 AdmissionReviews/s, server p99 <= 1000us")
PY
