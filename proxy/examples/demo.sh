#!/usr/bin/env bash
# faultline demo, no cluster needed: a demo upstream, faultline-proxy in
# front of it with examples/policies/demo.yaml, and curl showing clean
# traffic, delays, aborts, `first: N`, a truncated response, faults a
# request asks for with headers, faults on the upstream's response, a hot
# reload and the metrics; then a second proxy in front of a TLS server
# faulting HTTPS by server name (SNI)
# without decrypting it; then a third proxy's DNS listener answering
# lookups by name (examples/policies/dns.yaml).
#
# Usage: proxy/examples/demo.sh        (from anywhere; needs cargo, curl and openssl)
# Ports: DEMO_PORT (default 18480) for the proxy, +1 upstream, +2 admin;
# +3 the TLS proxy, +4 the TLS server, +5 the TLS proxy's admin; +6 the DNS
# proxy's admin, +7 its DNS listener, +8 the resolver stand-in (UDP and TCP),
# +9 the DNS proxy's (unused) HTTP listener.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../../bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../bench/lib.sh"
cd "$root"
require_tools curl openssl

port="${DEMO_PORT:-18480}"
upstream_port=$((port + 1))
admin_port=$((port + 2))
tls_port=$((port + 3))
tls_upstream_port=$((port + 4))
tls_admin_port=$((port + 5))
dns_admin_port=$((port + 6))
dns_port=$((port + 7))
resolver_port=$((port + 8))
dns_http_port=$((port + 9))
require_free_ports DEMO_PORT "$port" "$upstream_port" "$admin_port" "$tls_port" "$tls_upstream_port" \
  "$tls_admin_port" "$dns_admin_port" "$dns_port" "$resolver_port" "$dns_http_port"

target="$(build_binaries dev --bin faultline-proxy --example bench-upstream --example dns-stand-in)"
start_cleanup

cp examples/policies/demo.yaml "$work/faults.yaml"
"$target/examples/bench-upstream" "127.0.0.1:$upstream_port" 1 &
pids+=($!)
FAULTLINE_LOG=warn "$target/faultline-proxy" run \
  --listen "127.0.0.1:$port" --upstream "127.0.0.1:$upstream_port" \
  --admin-addr "127.0.0.1:$admin_port" --faults "$work/faults.yaml" &
pids+=($!)

# Wait for readiness (and the upstream) with a deadline.
deadline=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && \
      curl -sf "http://127.0.0.1:$upstream_port/" >/dev/null; do
  if (( SECONDS > deadline )); then die "the proxy did not become ready"; fi
  sleep 0.1
done

proxy="http://127.0.0.1:$port"
show() { # METHOD PATH [CURL ARGS...]
  local method="$1" path="$2" out
  shift 2
  out="$(curl -s -X "$method" "$@" -w '\n%{http_code} %{time_total}' "$proxy$path")"
  local status_time="${out##*$'\n'}" body="${out%$'\n'*}"
  printf '  %-5s %-22s %s-> %s in %5.3fs  %s\n' "$method" "$path" "${*:+$* }" "${status_time% *}" "${status_time#* }" "${body//$'\n'/ }"
}

echo
echo "== policy: examples/policies/demo.yaml"
sed 's/^/  /' "$work/faults.yaml"
echo
echo "== clean traffic passes untouched"
show GET /
show GET /api/orders
echo "== slow-checkout: POST /api/checkout is delayed 500ms +/- 50ms"
show POST /api/checkout
show GET /api/checkout
echo "== slow-search: a heavy tail, pareto from 50ms (median 79ms), capped at 1s"
for _ in 1 2 3 4 5; do show GET /api/search; done
echo "== payments-down: aborted with 503 and a body"
show GET /api/payments/42
echo "== flaky-inventory: the first 2 requests fail, then it passes (first: 2)"
for _ in 1 2 3; do show GET /api/inventory; done
echo "== profile-broken: the upstream answers 200, the client gets a 502 (match.response + replace)"
show GET /api/profile
echo "== cart-tagged: the upstream's answer with headers patched in"
curl -s -D - -o /dev/null "$proxy/api/cart" | grep -iE '^(HTTP|x-faultline|cache-control)' | sed 's/^/  /'

echo "== truncated-report: limitData passes 5 bytes of the 13-byte body, then closes the connection"
set +e
body="$(curl -s "$proxy/api/report")"
code=$?
set -e
printf '  GET   /api/report            -> body %q, curl exit %s (18: closed before the whole body came)\n' "$body" "$code"
echo "== asked (fromHeaders): each request names its fault, within the rule's bounds"
echo "   (the upstream never sees x-faultline-* headers; 2s is over maxDelay: refused, forwarded)"
show GET /api/asked -H 'x-faultline-delay: 300ms'
show GET /api/asked -H 'x-faultline-abort: 503'
show GET /api/asked -H 'x-faultline-delay: 2s'
show GET /api/asked

echo "== hot reload: the file changes, the proxy applies it within a second"
printf 'rules:\n- name: everything-down\n  abort: {status: 500, body: "all down\\n"}\n' > "$work/faults.yaml.new"
mv "$work/faults.yaml.new" "$work/faults.yaml"
deadline=$((SECONDS + 5))
until curl -s "http://127.0.0.1:$admin_port/policy" | grep -q everything-down; do
  if (( SECONDS > deadline )); then die "reload not applied"; fi
  sleep 0.1
done
show GET /
echo
echo "== metrics (http://127.0.0.1:$admin_port/metrics)"
curl -s "http://127.0.0.1:$admin_port/metrics" | grep -E '^faultline_(faults_injected|header_faults_refused|requests)_total' | sed 's/^/  /'

echo
echo "== HTTPS by server name: a second proxy in front of a TLS server (openssl s_server)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=demo \
  -addext "subjectAltName=DNS:api.stripe.test,DNS:shop.test" \
  -keyout "$work/tls-key.pem" -out "$work/tls-cert.pem" 2>/dev/null
openssl s_server -quiet -www -accept "127.0.0.1:$tls_upstream_port" \
  -cert "$work/tls-cert.pem" -key "$work/tls-key.pem" </dev/null >/dev/null 2>&1 &
pids+=($!)
printf 'rules:\n- name: stripe-down\n  match: {sni: "*.stripe.test"}\n  abort: {reset: true}\n' > "$work/tls.yaml"
sed 's/^/  /' "$work/tls.yaml"
FAULTLINE_LOG=warn "$target/faultline-proxy" run \
  --listen "127.0.0.1:$tls_port" --upstream "127.0.0.1:$tls_upstream_port" \
  --admin-addr "127.0.0.1:$tls_admin_port" --faults "$work/tls.yaml" &
pids+=($!)
deadline=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$tls_admin_port/readyz" >/dev/null && \
      (exec 3<>"/dev/tcp/127.0.0.1/$tls_upstream_port") 2>/dev/null; do
  if (( SECONDS > deadline )); then die "the TLS proxy did not become ready"; fi
  sleep 0.1
done
https() { # NAME: curl checks the server's own certificate, so nothing decrypted the connection
  local out
  out="$(curl -s --cacert "$work/tls-cert.pem" --resolve "$1:$tls_port:127.0.0.1" \
    -o /dev/null -w '%{http_code}' "https://$1:$tls_port/" 2>&1)" || out="failed: connection reset (curl exit $?)"
  printf '  https://%-16s -> %s\n' "$1" "$out"
}
https shop.test
https api.stripe.test
curl -s "http://127.0.0.1:$tls_admin_port/metrics" \
  | grep -E '^faultline_(faults_injected|connections)_total' | sed 's/^/  /'

echo
echo "== DNS by name: a third proxy with a DNS listener, in front of a resolver stand-in"
echo "   (in a pod: faultline.dev/capture-dns: \"true\"; here the lookups go to the listener directly)"
sed 's/^/  /' examples/policies/dns.yaml
"$target/examples/dns-stand-in" serve "127.0.0.1:$resolver_port" &
pids+=($!)
FAULTLINE_LOG=warn "$target/faultline-proxy" run \
  --listen "127.0.0.1:$dns_http_port" --upstream "127.0.0.1:$upstream_port" \
  --admin-addr "127.0.0.1:$dns_admin_port" --faults examples/policies/dns.yaml \
  --dns-addr "127.0.0.1:$dns_port" --dns-upstream "127.0.0.1:$resolver_port" &
pids+=($!)
deadline=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$dns_admin_port/readyz" >/dev/null; do
  if (( SECONDS > deadline )); then die "the DNS proxy did not become ready"; fi
  sleep 0.1
done
lookup() { # NAME
  local out
  out="$("$target/examples/dns-stand-in" ask "127.0.0.1:$dns_port" "$1")"
  printf '  %-32s -> %s\n' "$1" "$out"
}
lookup orders.shop.svc.cluster.local
lookup queue.nats.svc.cluster.local
lookup api.payments.test
lookup lost.example.test
lookup www.example.test
curl -s "http://127.0.0.1:$dns_admin_port/metrics" \
  | grep -E '^faultline_(faults_injected|dns_queries)_total' | sed 's/^/  /'
echo
echo "demo done"
