#!/usr/bin/env bash
# bench/proxy.sh: faultline-proxy against a direct connection and against
# nginx and haproxy as reverse proxies, all on loopback, measured in one run.
#
#   peers    direct        client -> upstream
#            proxy         client -> faultline-proxy (no policy) -> upstream
#            nginx         client -> nginx (proxy_pass, keepalive) -> upstream
#            haproxy-http  client -> haproxy mode http (http-reuse always) -> upstream
#            haproxy-tcp   client -> haproxy mode tcp -> upstream
#   rules    proxy+10      10 rules that never match
#            proxy+zero    one rule matching every request: delay 0s
#            proxy+pct0    one rule matching every request: percent 0
#            proxy+spent   one rule matching every request: first 1, spent
#            proxy+resp    one rule decided on the response (match.response
#                          5xx, replace) that no response matches
#            proxy+20%     one rule: delay 200ms on 20% of requests
#
#   lat5k    added latency at a fixed 5k req/s (BENCH_RATE; bench-client
#            latency, 50 keep-alive connections, open loop), p50 and p99
#   lat1k    the same at 1k req/s (peers only)
#   h1 rps   saturated HTTP/1.1 throughput (wrk, BENCH_CONNS connections)
#   CPU us   user+system CPU time of the target per request during that run
#            (less noisy than throughput: it does not depend on how the
#            cores were shared with the load generator and the upstream)
#   h2c rps  saturated h2c throughput (h2load, 10 streams per connection; peers),
#            and the target's CPU per request during that run
#   tcp      saturated raw TCP echo exchanges (bench-client tcp, 64 bytes)
#            and the target's CPU per exchange (direct, proxy, haproxy-tcp)
#   fast     proxy and proxy+20% at 5k req/s on a pool of connections: p50
#            and p99 of the requests the delay did not choose
#   RSS      VmRSS of the target idle, and while 1000 keep-alive
#            connections are held open (peers)
#
# Every target gets the same number of worker threads/processes
# (BENCH_THREADS). The goals are printed as ratios of medians of the same
# run, with the machine's load average before and after; the summary is
# appended to bench/RESULTS.md (BENCH_RECORD=0: not).
# Needs: wrk, h2load (nghttp2-client), nginx, haproxy, curl; haproxy is
# installed with apt-get when missing and the script runs as root.
# Env: BENCH_THREADS=2 BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_RATE=5000 BENCH_CONNS=64
#      BENCH_PORT=19500 BENCH_RECORD=1
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$root"
if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing haproxy" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null
fi
require_tools wrk h2load nginx haproxy curl
threads="${BENCH_THREADS:-2}"
secs="${BENCH_SECONDS:-5}"
rounds="${BENCH_ROUNDS:-3}"
rate="${BENCH_RATE:-5000}"
conns="${BENCH_CONNS:-64}"
base="${BENCH_PORT:-19500}"
record="${BENCH_RECORD:-1}"
load_before="$(load_average)"

bin="$(build_binaries release --bin faultline-proxy --example bench-upstream --example bench-client)"
start_cleanup
chmod 755 "$work"

# Ports: base+0 upstream, +1 its echo port; each target N gets
# base+10+N (HTTP/1.1 and TCP), base+40+N (h2c where separate),
# base+70+N (admin of a faultline-proxy).
up=$base echo_port=$((base + 1))
peers=(direct proxy nginx haproxy-http haproxy-tcp)
ruled=(proxy+10 proxy+zero proxy+pct0 proxy+spent proxy+resp)
split=(proxy proxy+20%)
all=("${peers[@]}" "${ruled[@]}" proxy+20% proxy-tcp haproxy-tcp-echo)
declare -A h1port h2port tpid
i=0
for name in "${all[@]}"; do
  h1port[$name]=$((base + 10 + i))
  h2port[$name]=$((base + 10 + i))
  i=$((i + 1))
done
h1port[direct]=$up h2port[direct]=$up
h2port[nginx]=$((base + 40)) h2port[haproxy-http]=$((base + 41))
# shellcheck disable=SC2046 # seq's ports are words
require_free_ports BENCH_PORT "$up" "$echo_port" "${h1port[@]}" $((base + 40)) $((base + 41)) \
  $(seq $((base + 70)) $((base + 80)))

{
  echo "rules:"
  for i in $(seq 0 9); do
    echo "- name: never-$i"
    echo "  match: {methods: [POST], path: /never/$i/*, headers: {x-bench-never: \"$i\"}}"
    echo "  delay: {fixed: 1s}"
  done
} > "$work/proxy+10.yaml"
echo 'rules: [{name: zero, delay: {fixed: 0s}}]' > "$work/proxy+zero.yaml"
echo 'rules: [{name: never-drawn, percent: 0, delay: {fixed: 1s}}]' > "$work/proxy+pct0.yaml"
# The readiness check below spends the one fault.
echo 'rules: [{name: spent, first: 1, delay: {fixed: 1ms}}]' > "$work/proxy+spent.yaml"
echo 'rules: [{name: slow, percent: 20, delay: {fixed: 200ms}}]' > "$work/proxy+20%.yaml"
# The upstream answers 200: every request is a candidate, no response matches.
echo 'rules: [{name: errors-only, match: {response: {status: 5xx}}, replace: {status: 503, body: x}}]' \
  > "$work/proxy+resp.yaml"

cat > "$work/nginx.conf" <<NGINX
worker_processes $threads;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  upstream app { server 127.0.0.1:$up; keepalive 256; keepalive_requests 10000000; }
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:${h1port[nginx]};
    listen 127.0.0.1:${h2port[nginx]} http2;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX

haproxy_global() {
  cat <<HAPROXY
global
  nbthread $threads
  maxconn 9000
  log stderr format raw local0 err
defaults
  log global
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
HAPROXY
}
{
  haproxy_global
  cat <<HAPROXY
listen h1
  mode http
  bind 127.0.0.1:${h1port[haproxy-http]}
  http-reuse always
  server app 127.0.0.1:$up
listen h2c
  mode http
  bind 127.0.0.1:${h2port[haproxy-http]} proto h2
  http-reuse always
  server app 127.0.0.1:$up proto h2
HAPROXY
} > "$work/haproxy-http.cfg"
{
  haproxy_global
  cat <<HAPROXY
listen tcp
  mode tcp
  bind 127.0.0.1:${h1port[haproxy-tcp]}
  server app 127.0.0.1:$up
listen echo
  mode tcp
  bind 127.0.0.1:${h1port[haproxy-tcp-echo]}
  server app 127.0.0.1:$echo_port
HAPROXY
} > "$work/haproxy-tcp.cfg"

"$bin/examples/bench-upstream" "127.0.0.1:$up" "$threads" "127.0.0.1:$echo_port" &
pids+=($!)
tpid[direct]=$!
admin=$((base + 70))
for name in proxy "${ruled[@]}" proxy+20% proxy-tcp; do
  faults=()
  [ -f "$work/$name.yaml" ] && faults=(--faults "$work/$name.yaml")
  upstream="127.0.0.1:$up"
  [ "$name" = proxy-tcp ] && upstream="127.0.0.1:$echo_port"
  FAULTLINE_WORKERS=$threads FAULTLINE_LOG=warn "$bin/faultline-proxy" run \
    --listen "127.0.0.1:${h1port[$name]}" --upstream "$upstream" --admin-addr "127.0.0.1:$admin" \
    "${faults[@]}" &
  pids+=($!)
  tpid[$name]=$!
  admin=$((admin + 1))
done
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
tpid[nginx]=$!
haproxy -db -f "$work/haproxy-http.cfg" &
pids+=($!)
tpid[haproxy-http]=$!
haproxy -db -f "$work/haproxy-tcp.cfg" &
pids+=($!)
tpid[haproxy-tcp]=$!
tpid[haproxy-tcp-echo]=$!

deadline=$((SECONDS + 30))
for name in "${peers[@]}" "${ruled[@]}" proxy+20%; do
  until curl -sf "http://127.0.0.1:${h1port[$name]}/" >/dev/null; do
    if ((SECONDS > deadline)); then die "$name never answered"; fi
    sleep 0.1
  done
done
# The raw TCP path of each target is the echo upstream behind it.
declare -A tcpport=([direct]=$echo_port [proxy]=${h1port[proxy-tcp]} [haproxy-tcp]=${h1port[haproxy-tcp-echo]})
declare -A tcppid=([direct]=${tpid[direct]} [proxy]=${tpid[proxy-tcp]} [haproxy-tcp]=${tpid[haproxy-tcp]})

# VmRSS in KiB of a process and its children (nginx workers).
rss_kib() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

rss_holding() { # PORT PID -> KiB while 1000 keep-alive connections are open
  local fifo="$work/hold.$1"
  mkfifo "$fifo"
  "$bin/examples/bench-client" hold "127.0.0.1:$1" 1000 6 > "$fifo" &
  local holder=$!
  read -r _ < "$fifo"
  local kib
  kib=$(rss_kib "$2")
  wait "$holder"
  rm -f "$fifo"
  echo "$kib"
}

# utime + stime in clock ticks of a process and its children (nginx workers).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# Microseconds of CPU per operation from two tick readings and a count.
per_op() {
  awk -v t=$(($2 - $1)) -v hz="$(getconf CLK_TCK)" -v n="$3" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'
}
field() { sed -nE "s/.*$1=([0-9.]+).*/\\1/p" <<<"$2"; }

declare -A result
# Appends one round's figure for a target to its list in `result`.
add() { result[$1]="${result[$1]:-} $2"; }

latency() { # NAME KEY RATE
  local lat
  lat=$("$bin/examples/bench-client" latency "127.0.0.1:${h1port[$1]}" "$3" 50 "$secs")
  echo "   latency at $3/s: $lat" >&2
  add "$1.$2.p50" "$(field p50_us "$lat")"
  add "$1.$2.p99" "$(field p99_us "$lat")"
}
h1() { # NAME
  local w cpu0 cpu1 n
  cpu0=$(cpu_ticks "${tpid[$1]}")
  w=$(wrk -t"$threads" -c"$conns" -d"${secs}s" "http://127.0.0.1:${h1port[$1]}/")
  cpu1=$(cpu_ticks "${tpid[$1]}")
  n=$(awk '/requests in/ {print $1}' <<<"$w")
  add "$1.h1" "$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w")"
  add "$1.cpu" "$(per_op "$cpu0" "$cpu1" "$n")"
  echo "   wrk: ${result[$1.h1]##* } req/s, ${result[$1.cpu]##* } us CPU per request" >&2
}
h2() { # NAME
  local h v n cpu0 cpu1
  cpu0=$(cpu_ticks "${tpid[$1]}")
  h=$(h2load -t"$threads" -c"$conns" -m10 -D"$secs" "http://127.0.0.1:${h2port[$1]}/" 2>&1)
  cpu1=$(cpu_ticks "${tpid[$1]}")
  v=$(sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$h" | cut -d. -f1)
  n=$(sed -nE 's/^requests: .* ([0-9]+) succeeded.*/\1/p' <<<"$h")
  add "$1.h2" "${v:-0}"
  add "$1.h2cpu" "$(per_op "$cpu0" "$cpu1" "${n:-0}")"
  echo "   h2load: ${v:-0} req/s, ${result[$1.h2cpu]##* } us CPU per request ($(grep -E '^requests:' <<<"$h"))" >&2
}
tcp() { # NAME
  local out cpu0 cpu1 rps
  cpu0=$(cpu_ticks "${tcppid[$1]}")
  out=$("$bin/examples/bench-client" tcp "127.0.0.1:${tcpport[$1]}" "$conns" "$secs")
  cpu1=$(cpu_ticks "${tcppid[$1]}")
  rps=$(field rps "$out")
  add "$1.tcp" "$rps"
  add "$1.tcpcpu" "$(per_op "$cpu0" "$cpu1" "$((rps * secs))")"
  echo "   tcp: $rps exchanges/s, ${result[$1.tcpcpu]##* } us CPU each" >&2
}
fast() { # NAME
  local out
  out=$("$bin/examples/bench-client" split "127.0.0.1:${h1port[$1]}" "$rate" "$secs" 100)
  echo "   pooled at $rate/s: $out" >&2
  add "$1.f.p50" "$(field p50_us "$out")"
  add "$1.f.p99" "$(field p99_us "$out")"
  add "$1.f.slow" "$(field slow_pct "$out")"
}

for name in "${peers[@]}"; do
  result[$name.rss_idle]=$(rss_kib "${tpid[$name]}")
  result[$name.rss_1k]=$(rss_holding "${h1port[$name]}" "${tpid[$name]}")
done
# Rounds interleave the targets, so a slow spell of the machine hits all
# of them instead of one; every figure is the median over the rounds.
for round in $(seq "$rounds"); do
  for name in "${peers[@]}"; do
    echo "== $name (round $round)" >&2
    latency "$name" l5 "$rate"
    latency "$name" l1 1000
    h1 "$name"
    h2 "$name"
    if [ -n "${tcpport[$name]:-}" ]; then tcp "$name"; fi
  done
  for name in "${ruled[@]}"; do
    echo "== $name (round $round)" >&2
    latency "$name" l5 "$rate"
    h1 "$name"
  done
  for name in "${split[@]}"; do
    echo "== $name pooled (round $round)" >&2
    fast "$name"
  done
done
load_after="$(load_average)"

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END { print v[int((NR + 1) / 2)] }'; }
m() { median "${result[$1.$2]:-}"; }
# The median over rounds of a target's figure minus direct's in the same round.
added() {
  median "$(paste -d' ' <(tr ' ' '\n' <<<"${result[$1.$2]}" | awk 'NF') \
    <(tr ' ' '\n' <<<"${result[direct.$2]}" | awk 'NF') | awk '{print $1 - $2}' | tr '\n' ' ')"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
# goal TEXT VALUE OP LIMIT: one line, "met" or "MISSED".
goal() {
  local ok
  ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { print ((op == "<=" ? v <= l : v >= l) ? "met" : "MISSED") }')
  printf '  %-62s %8s %s %-8s %s\n' "$1" "$2" "$3" "$4" "$ok"
}

summary() {
  echo "faultline-proxy benchmark $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) cores, $threads worker threads each, medians of $rounds interleaved rounds of ${secs}s"
  echo "load average before: $load_before, after: $load_after"
  printf '%-13s | %8s %8s | %8s %8s | %8s %6s | %7s %6s | %8s %6s %6s %6s | %8s %6s | %6s %6s\n' \
    target "+p50 5k" "+p99 5k" "+p50 1k" "+p99 1k" "h1 rps" "/nginx" "CPU us" "/htcp" "h2c rps" "/nginx" "CPU us" "/htcp" "tcp x/s" "CPU us" "RSS MB" "1k MB"
  for name in "${peers[@]}" "${ruled[@]}"; do
    local l1p50=- l1p99=- h2=- h2cpu=- tcp=- tcpcpu=- rss=- rss1k=-
    if [ -n "${result[$name.l1.p50]:-}" ]; then
      l1p50=$(added "$name" l1.p50) l1p99=$(added "$name" l1.p99) h2=$(m "$name" h2)
      h2cpu=$(m "$name" h2cpu)
      rss=$(mib "${result[$name.rss_idle]}") rss1k=$(mib "${result[$name.rss_1k]}")
    fi
    if [ -n "${result[$name.tcp]:-}" ]; then tcp=$(m "$name" tcp) tcpcpu=$(m "$name" tcpcpu); fi
    printf '%-13s | %8s %8s | %8s %8s | %8s %6s | %7s %6s | %8s %6s %6s %6s | %8s %6s | %6s %6s\n' "$name" \
      "$(added "$name" l5.p50)" "$(added "$name" l5.p99)" "$l1p50" "$l1p99" \
      "$(m "$name" h1)" "$(ratio "$(m "$name" h1)" "$(m nginx h1)")" \
      "$(m "$name" cpu)" "$(ratio "$(m "$name" cpu)" "$(m haproxy-tcp cpu)")" \
      "$h2" "$(ratio "$h2" "$(m nginx h2)")" "$h2cpu" "$(ratio "$h2cpu" "$(m haproxy-tcp h2cpu)")" \
      "$tcp" "$tcpcpu" "$rss" "$rss1k"
  done
  for name in "${split[@]}"; do
    printf '%-13s | pooled at %s/s, requests under 100 ms: p50 %s us, p99 %s us; over 100 ms: %s %%\n' \
      "$name" "$rate" "$(m "$name" f.p50)" "$(m "$name" f.p99)" "$(m "$name" f.slow)"
  done
  echo "(+p50/+p99: added over direct at a fixed rate, median of the per-round differences; direct's own row is 0;"
  echo " CPU us: user+system CPU of the target per request in the wrk (h1) or h2load (h2c) run, /htcp: over haproxy-tcp's;"
  echo " direct: the upstream's)"
  echo "goals (ratios of medians of this run):"
  for name in "${ruled[@]}"; do
    goal "$name throughput / proxy (>= 0.9)" "$(ratio "$(m "$name" h1)" "$(m proxy h1)")" ">=" 0.90
    goal "$name p99 at ${rate}/s / proxy (<= 1.2)" "$(ratio "$(m "$name" l5.p99)" "$(m proxy l5.p99)")" "<=" 1.20
  done
  goal "proxy+resp CPU per request / proxy (<= 1.05)" "$(ratio "$(m proxy+resp cpu)" "$(m proxy cpu)")" "<=" 1.05
  goal "proxy+20% undelayed p50 / proxy (<= 1.2)" "$(ratio "$(m proxy+20% f.p50)" "$(m proxy f.p50)")" "<=" 1.20
  goal "proxy+20% undelayed p99 / proxy (<= 1.2)" "$(ratio "$(m proxy+20% f.p99)" "$(m proxy f.p99)")" "<=" 1.20
  local key best
  for key in l5.p50 l5.p99 l1.p50 l1.p99; do
    best=$(min "$(added haproxy-http "$key")" "$(added haproxy-tcp "$key")")
    goal "proxy added $key us <= best haproxy ($best us)" "$(added proxy "$key")" "<=" "$best"
  done
  goal "proxy h1 throughput / nginx (>= 1.1)" "$(ratio "$(m proxy h1)" "$(m nginx h1)")" ">=" 1.10
  goal "proxy h1 throughput / haproxy-tcp (>= 1)" "$(ratio "$(m proxy h1)" "$(m haproxy-tcp h1)")" ">=" 1.00
  goal "proxy h1 CPU per request / haproxy-tcp (<= 1.05)" "$(ratio "$(m proxy cpu)" "$(m haproxy-tcp cpu)")" "<=" 1.05
  goal "proxy h2c throughput / nginx (>= 1.1)" "$(ratio "$(m proxy h2)" "$(m nginx h2)")" ">=" 1.10
  goal "proxy h2c throughput / haproxy-tcp (>= 1)" "$(ratio "$(m proxy h2)" "$(m haproxy-tcp h2)")" ">=" 1.00
  goal "proxy h2c CPU per request / haproxy-tcp (<= 1.05)" "$(ratio "$(m proxy h2cpu)" "$(m haproxy-tcp h2cpu)")" "<=" 1.05
  goal "proxy tcp exchanges / haproxy-tcp (>= 1)" "$(ratio "$(m proxy tcp)" "$(m haproxy-tcp tcp)")" ">=" 1.00
  goal "proxy tcp CPU per exchange / haproxy-tcp (<= 1.05)" "$(ratio "$(m proxy tcpcpu)" "$(m haproxy-tcp tcpcpu)")" "<=" 1.05
}

out="$(summary)"
echo
echo "$out"
if [ "$record" = 1 ]; then
  # Into the proxy section of RESULTS.md, before the next section.
  # shellcheck disable=SC2016 # the backticks are Markdown
  block="$(printf '\n### `bench/proxy.sh`, %s\n\n```\n%s\n```\n' "$(date -u +%Y-%m-%d)" "$out")"
  BLOCK="$block" awk '/^## Capture/ && !done { print ENVIRON["BLOCK"]; print ""; done = 1 } { print }' \
    bench/RESULTS.md > "$work/RESULTS.md"
  cp "$work/RESULTS.md" bench/RESULTS.md
  echo "(appended to bench/RESULTS.md)"
fi
