#!/usr/bin/env bash
# bench/proxy.sh: faultline-proxy against a direct connection and against
# nginx as a reverse proxy, all on loopback, measured in one run.
#
#   targets  direct      client -> upstream
#            proxy       client -> faultline-proxy (no policy) -> upstream
#            proxy+10    the same with 10 rules that never match
#            nginx       client -> nginx (proxy_pass, keepalive) -> upstream
#   latency  fixed rate (BENCH_RATE req/s over 50 keep-alive connections,
#            open loop: from the send, or from the scheduled send time when
#            the connection was behind schedule; bench-client latency)
#   h1 rps   saturated HTTP/1.1 throughput (wrk, BENCH_CONNS connections)
#   CPU us   user+system CPU time of the target per request during that run
#            (less noisy than throughput: it does not depend on how the
#            cores were shared with the load generator and the upstream)
#   h2c rps  saturated h2c throughput (h2load, 10 streams per connection)
#   RSS      VmRSS of the proxy (nginx: master + workers) idle, and while
#            1000 keep-alive connections are held open
#
# The proxy and nginx get the same number of worker threads/processes
# (BENCH_THREADS). Needs: wrk, h2load (nghttp2-client), nginx, curl.
# Env: BENCH_THREADS=2 BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_RATE=5000 BENCH_CONNS=64
#      BENCH_PORT=19500
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for tool in wrk h2load nginx curl; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool is missing (apt-get install wrk nghttp2-client nginx-light curl)" >&2
    exit 1
  }
done
threads="${BENCH_THREADS:-2}"
secs="${BENCH_SECONDS:-5}"
rounds="${BENCH_ROUNDS:-3}"
rate="${BENCH_RATE:-5000}"
conns="${BENCH_CONNS:-64}"
base="${BENCH_PORT:-19500}"

echo "== building release binaries" >&2
cargo build --release -q -p faultline-proxy --bin faultline-proxy --example bench-upstream --example bench-client
bin="${CARGO_TARGET_DIR:-$root/target}/release"

work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

up=$base p_empty=$((base + 1)) p_rules=$((base + 2)) p_nginx=$((base + 3)) p_nginx_h2=$((base + 4))
a_empty=$((base + 11)) a_rules=$((base + 12))
for p in $up $p_empty $p_rules $p_nginx $p_nginx_h2 $a_empty $a_rules; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "bench: port $p is in use; set BENCH_PORT" >&2
    exit 1
  fi
done

{
  echo "rules:"
  for i in $(seq 0 9); do
    echo "- name: never-$i"
    echo "  match: {methods: [POST], path: /never/$i/*, headers: {x-bench-never: \"$i\"}}"
    echo "  delay: {fixed: 1s}"
  done
} > "$work/rules.yaml"

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
    listen 127.0.0.1:$p_nginx;
    listen 127.0.0.1:$p_nginx_h2 http2;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX

"$bin/examples/bench-upstream" "127.0.0.1:$up" "$threads" &
pids+=($!)
FAULTLINE_WORKERS=$threads FAULTLINE_LOG=warn "$bin/faultline-proxy" run \
  --listen "127.0.0.1:$p_empty" --upstream "127.0.0.1:$up" --admin-addr "127.0.0.1:$a_empty" &
pid_empty=$!
pids+=($pid_empty)
FAULTLINE_WORKERS=$threads FAULTLINE_LOG=warn "$bin/faultline-proxy" run \
  --listen "127.0.0.1:$p_rules" --upstream "127.0.0.1:$up" --admin-addr "127.0.0.1:$a_rules" \
  --faults "$work/rules.yaml" &
pid_rules=$!
pids+=($pid_rules)
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pid_nginx=$!
pids+=($pid_nginx)
pid_up=${pids[0]}

deadline=$((SECONDS + 30))
for p in $up $p_empty $p_rules $p_nginx; do
  until curl -sf "http://127.0.0.1:$p/" >/dev/null; do
    if ((SECONDS > deadline)); then echo "bench: 127.0.0.1:$p never answered" >&2; exit 1; fi
    sleep 0.1
  done
done

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

declare -A result
# Appends one round's figures for a target to its lists in `result`.
add() { result[$1]="${result[$1]:-} $2"; }
measure() { # NAME H1PORT H2PORT PID
  local name=$1 port=$2 h2port=$3 pid=$4
  echo "== $name (round $round)" >&2
  local lat
  lat=$("$bin/examples/bench-client" latency "127.0.0.1:$port" "$rate" 50 "$secs")
  echo "   latency: $lat" >&2
  add "$name.p50" "$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$lat")"
  add "$name.p99" "$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$lat")"
  local w cpu0 cpu1 h1 cpu
  cpu0=$(cpu_ticks "$pid")
  w=$(wrk -t"$threads" -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/")
  cpu1=$(cpu_ticks "$pid")
  h1=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w")
  # CPU time (user + system) the target spent per proxied request: less
  # noisy than throughput on a shared machine, since it does not depend on
  # how the cores were split between the load generator and the upstream.
  cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" \
    -v n="$(awk '/requests in/ {print $1}' <<<"$w")" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')
  add "$name.h1" "$h1"
  add "$name.cpu" "$cpu"
  echo "   wrk: $h1 req/s, $cpu us CPU per request" >&2
  local h h2
  h=$(h2load -t"$threads" -c"$conns" -m10 -D"$secs" "http://127.0.0.1:$h2port/" 2>&1)
  h2=$(sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$h" | cut -d. -f1)
  add "$name.h2" "${h2:-0}"
  echo "   h2load: $h2 req/s ($(grep -E '^requests:' <<<"$h"))" >&2
}

targets=(direct proxy proxy+10 nginx)
declare -A h1port=([direct]=$up [proxy]=$p_empty [proxy+10]=$p_rules [nginx]=$p_nginx)
declare -A h2port=([direct]=$up [proxy]=$p_empty [proxy+10]=$p_rules [nginx]=$p_nginx_h2)
declare -A tpid=([direct]=$pid_up [proxy]=$pid_empty [proxy+10]=$pid_rules [nginx]=$pid_nginx)
for name in "${targets[@]}"; do
  result[$name.rss_idle]=$(rss_kib "${tpid[$name]}")
  result[$name.rss_1k]=$(rss_holding "${h1port[$name]}" "${tpid[$name]}")
done
# Rounds interleave the targets, so a slow spell of the machine hits all
# of them instead of one; every figure is the median over the rounds.
for round in $(seq "$rounds"); do
  for name in "${targets[@]}"; do
    measure "$name" "${h1port[$name]}" "${h2port[$name]}" "${tpid[$name]}"
  done
done

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END { print v[int((NR + 1) / 2)] }'; }
# The median over rounds of a target's figure minus direct's in the same round.
added() {
  median "$(paste -d' ' <(tr ' ' '\n' <<<"${result[$1.$2]}" | awk 'NF') \
    <(tr ' ' '\n' <<<"${result[direct.$2]}" | awk 'NF') | awk '{print $1 - $2}' | tr '\n' ' ')"
}
for name in "${targets[@]}"; do
  for key in p50 p99 h1 cpu h2; do
    result[$name.$key.m]=$(median "${result[$name.$key]}")
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "faultline-proxy benchmark: $(nproc) cores, $threads worker threads each, medians of $rounds interleaved rounds of ${secs}s, fixed rate $rate req/s"
printf '%-9s | %7s %7s | %8s %8s | %9s %6s %6s | %7s %6s | %9s %6s | %8s %8s\n' \
  target "p50 us" "p99 us" "+p50 us" "+p99 us" "h1 rps" "/dir" "/nginx" "CPU us" "/nginx" "h2c rps" "/nginx" "RSS MB" "1k MB"
for name in "${targets[@]}"; do
  m() { echo "${result[$1.$2.m]}"; }
  printf '%-9s | %7s %7s | %8s %8s | %9s %6s %6s | %7s %6s | %9s %6s | %8s %8s\n' "$name" \
    "$(m "$name" p50)" "$(m "$name" p99)" "$(added "$name" p50)" "$(added "$name" p99)" \
    "$(m "$name" h1)" "$(ratio "$(m "$name" h1)" "$(m direct h1)")" "$(ratio "$(m "$name" h1)" "$(m nginx h1)")" \
    "$(m "$name" cpu)" "$(ratio "$(m "$name" cpu)" "$(m nginx cpu)")" \
    "$(m "$name" h2)" "$(ratio "$(m "$name" h2)" "$(m nginx h2)")" \
    "$(mib "${result[$name.rss_idle]}")" "$(mib "${result[$name.rss_1k]}")"
done
echo "(+p50/+p99: added over direct at the fixed rate, median of the per-round differences; /dir, /nginx: ratios of medians;"
echo " CPU us: the target's user+system CPU per request during the h1 run (direct: the upstream's); direct RSS is the upstream's)"
