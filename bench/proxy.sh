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
# Env: BENCH_THREADS=2 BENCH_SECONDS=10 BENCH_RATE=5000 BENCH_CONNS=64 BENCH_PORT=19500
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
secs="${BENCH_SECONDS:-10}"
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
measure() { # NAME H1PORT H2PORT PID
  local name=$1 port=$2 h2port=$3 pid=$4
  echo "== $name" >&2
  result[$name.rss_idle]=$(rss_kib "$pid")
  result[$name.rss_1k]=$(rss_holding "$port" "$pid")
  local lat
  lat=$("$bin/examples/bench-client" latency "127.0.0.1:$port" "$rate" 50 "$secs")
  echo "   latency: $lat" >&2
  result[$name.p50]=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$lat")
  result[$name.p99]=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$lat")
  result[$name.rate]=$(sed -E 's/^rate=([0-9]+).*/\1/' <<<"$lat")
  local w cpu0 cpu1
  cpu0=$(cpu_ticks "$pid")
  w=$(wrk -t"$threads" -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/")
  cpu1=$(cpu_ticks "$pid")
  result[$name.h1]=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w")
  # CPU time (user + system) the target spent per proxied request: less
  # noisy than throughput on a shared machine, since it does not depend on
  # how the cores were split between the load generator and the upstream.
  result[$name.cpu]=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" \
    -v n="$(awk '/requests in/ {print $1}' <<<"$w")" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')
  echo "   wrk: ${result[$name.h1]} req/s, ${result[$name.cpu]} us CPU per request" >&2
  local h
  h=$(h2load -t"$threads" -c"$conns" -m10 -D"$secs" "http://127.0.0.1:$h2port/" 2>&1)
  result[$name.h2]=$(sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$h" | cut -d. -f1)
  echo "   h2load: ${result[$name.h2]} req/s ($(grep -E '^requests:' <<<"$h"))" >&2
}

measure direct "$up" "$up" "$pid_up"
measure proxy "$p_empty" "$p_empty" "$pid_empty"
measure proxy+10 "$p_rules" "$p_rules" "$pid_rules"
measure nginx "$p_nginx" "$p_nginx_h2" "$pid_nginx"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "faultline-proxy benchmark: $(nproc) cores, $threads worker threads each, ${secs}s per run, fixed rate $rate req/s"
printf '%-9s | %7s %7s | %8s %8s | %9s %6s %6s | %7s %6s | %9s %6s | %8s %8s\n' \
  target "p50 us" "p99 us" "+p50 us" "+p99 us" "h1 rps" "/dir" "/nginx" "CPU us" "/nginx" "h2c rps" "/nginx" "RSS MB" "1k MB"
for name in direct proxy proxy+10 nginx; do
  printf '%-9s | %7s %7s | %8s %8s | %9s %6s %6s | %7s %6s | %9s %6s | %8s %8s\n' "$name" \
    "${result[$name.p50]}" "${result[$name.p99]}" \
    "$((result[$name.p50] - result[direct.p50]))" "$((result[$name.p99] - result[direct.p99]))" \
    "${result[$name.h1]}" "$(ratio "${result[$name.h1]}" "${result[direct.h1]}")" \
    "$(ratio "${result[$name.h1]}" "${result[nginx.h1]}")" \
    "${result[$name.cpu]}" "$(ratio "${result[$name.cpu]}" "${result[nginx.cpu]}")" \
    "${result[$name.h2]}" "$(ratio "${result[$name.h2]}" "${result[nginx.h2]}")" \
    "$(mib "${result[$name.rss_idle]}")" "$(mib "${result[$name.rss_1k]}")"
done
echo "(+p50/+p99: added over direct at the fixed rate; /dir, /nginx: throughput ratios;"
echo " CPU us: the target's user+system CPU per request during the h1 run (direct: the upstream's); direct RSS is the upstream's)"
