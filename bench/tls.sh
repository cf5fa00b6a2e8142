#!/usr/bin/env bash
# bench/tls.sh: what `sni` rules cost the traffic they do not match, as
# ratios against the same proxy with no rules, measured in one run.
#
#   targets  tls        client -> faultline-proxy (no policy) -> rustls server
#            tls+sni    the same with rules that never match: a `partition`
#                       and an `abort: {reset: true}` for sni "*.never.test"
#                       (the client asks for bench.example.test), so every
#                       connection waits for its ClientHello, has it read
#                       whole and parsed, and is decided again
#            http       client -> faultline-proxy (no policy) -> hyper upstream
#            http+sni   the same with the same rules (never TLS: decided
#                       once detection says HTTP)
#
#   tls conn/s  new TLS connections per second (bench-tls client: BENCH_CONNS
#               loops of connect, full handshake, 64 bytes echoed, close)
#   CPU us      user+system CPU of the proxy per connection in that run
#   h1 req/s    saturated HTTP/1.1 keep-alive throughput (wrk) and the
#               proxy's CPU per request
#   close       the same with `Connection: close`: a new connection, hence a
#               new connection-level decision, per request
#   parse       the ClientHello parse alone (bench-tls parse), in ns, to set
#               against the CPU a TLS connection costs the proxy
#
# Every figure is a median over interleaved rounds (an even number by
# default, so each target runs first as often as second), the ratio the
# median of the per-round ratios; the goal is a ratio within the noise of
# the no-rule proxy, whose spread over the rounds is printed beside it.
# Each TLS target has its own upstream port: thousands of connections a
# second leave their ports in TIME_WAIT, and a target connecting to the
# same address right after another would pay for the other's (measured:
# whichever TLS target ran second in a round lost ~25%). Load average before and after; the summary is
# appended to bench/RESULTS.md (BENCH_RECORD=0: not).
# Needs: wrk, curl. Env: BENCH_THREADS=2 BENCH_SECONDS=5 BENCH_ROUNDS=4
#      BENCH_CONNS=16 BENCH_PORT=19600 BENCH_RECORD=1
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$root"
require_tools wrk curl
threads="${BENCH_THREADS:-2}"
secs="${BENCH_SECONDS:-5}"
rounds="${BENCH_ROUNDS:-4}"
conns="${BENCH_CONNS:-16}"
base="${BENCH_PORT:-19600}"
record="${BENCH_RECORD:-1}"
load_before="$(load_average)"

bin="$(build_binaries release --bin faultline-proxy --example bench-upstream --example bench-tls)"
start_cleanup

# Ports: base+0 HTTP upstream, +1 and +2 TLS upstreams, +10.. the proxies, +20.. their admin.
http_up=$base tls_up=$((base + 1)) tls_up2=$((base + 2))
targets=(tls tls+sni http http+sni)
declare -A port admin tpid
i=0
for name in "${targets[@]}"; do
  port[$name]=$((base + 10 + i)) admin[$name]=$((base + 20 + i))
  i=$((i + 1))
done
require_free_ports BENCH_PORT "$http_up" "$tls_up" "$tls_up2" "${port[@]}" "${admin[@]}"

echo 'rules: []' > "$work/none.yaml"
cat > "$work/sni.yaml" <<'YAML'
rules:
- name: never-partition
  match: {sni: "*.never.test"}
  partition: {}
- name: never-reset
  match: {sni: "*.never.test"}
  abort: {reset: true}
YAML

"$bin/examples/bench-upstream" "127.0.0.1:$http_up" "$threads" &
pids+=($!)
"$bin/examples/bench-tls" server "127.0.0.1:$tls_up" "$threads" "$work/ca.der" bench.example.test &
pids+=($!)
"$bin/examples/bench-tls" server "127.0.0.1:$tls_up2" "$threads" "$work/ca2.der" bench.example.test &
pids+=($!)
for name in "${targets[@]}"; do
  up=$http_up faults=none
  [[ $name == tls ]] && up=$tls_up
  [[ $name == tls+sni ]] && up=$tls_up2
  [[ $name == *+sni ]] && faults=sni
  FAULTLINE_LOG=warn FAULTLINE_WORKERS="$threads" "$bin/faultline-proxy" run \
    --listen "127.0.0.1:${port[$name]}" --upstream "127.0.0.1:$up" \
    --admin-addr "127.0.0.1:${admin[$name]}" --faults "$work/$faults.yaml" &
  tpid[$name]=$!
  pids+=($!)
done
deadline=$((SECONDS + 30))
for name in "${targets[@]}"; do
  until curl -sf "http://127.0.0.1:${admin[$name]}/readyz" >/dev/null && [ -s "$work/ca.der" ] && [ -s "$work/ca2.der" ]; do
    if (( SECONDS > deadline )); then die "$name did not become ready"; fi
    sleep 0.1
  done
done

# utime + stime of a process in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Microseconds of CPU per operation from two tick readings and a count.
per_op() {
  awk -v t=$(($2 - $1)) -v hz="$(getconf CLK_TCK)" -v n="$3" \
    'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "-" }'
}
field() { sed -nE "s/.*$1=([0-9.]+).*/\\1/p" <<<"$2"; }
declare -A result
add() { result[$1]="${result[$1]:-} $2"; }

tls_run() { # NAME
  local out cpu0 cpu1 rps
  cpu0=$(cpu_ticks "${tpid[$1]}")
  local ca=$work/ca.der
  [[ $1 == tls+sni ]] && ca=$work/ca2.der
  out=$("$bin/examples/bench-tls" client "127.0.0.1:${port[$1]}" "$ca" "$conns" "$secs" bench.example.test)
  cpu1=$(cpu_ticks "${tpid[$1]}")
  rps=$(field rps "$out")
  add "$1.conn" "$rps"
  add "$1.conncpu" "$(per_op "$cpu0" "$cpu1" "$((rps * secs))")"
  echo "   tls: $out, ${result[$1.conncpu]##* } us CPU per connection" >&2
}
wrk_run() { # NAME KEY [wrk args]
  local name=$1 key=$2 w cpu0 cpu1 n
  shift 2
  cpu0=$(cpu_ticks "${tpid[$name]}")
  w=$(wrk -t1 "$@" -d"${secs}s" "http://127.0.0.1:${port[$name]}/")
  cpu1=$(cpu_ticks "${tpid[$name]}")
  n=$(awk '/requests in/ {print $1}' <<<"$w")
  add "$name.$key" "$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w")"
  add "$name.${key}cpu" "$(per_op "$cpu0" "$cpu1" "$n")"
  echo "   wrk $key: ${result[$name.$key]##* } req/s, ${result[$name.${key}cpu]##* } us CPU per request" >&2
}

# Rounds interleave the targets (and alternate which goes first), so a slow
# spell of the machine hits both sides of a ratio.
for round in $(seq "$rounds"); do
  order=(tls tls+sni http http+sni)
  (( round % 2 == 0 )) && order=(tls+sni tls http+sni http)
  for name in "${order[@]}"; do
    echo "== $name (round $round)" >&2
    if [[ $name == tls* ]]; then
      tls_run "$name"
    else
      wrk_run "$name" h1 -c64
      wrk_run "$name" close -c"$conns" -H "Connection: close"
    fi
  done
done
load_after="$(load_average)"
# What reading a server name costs on its own (one core, no I/O).
parse_out=$("$bin/examples/bench-tls" parse bench.example.test 200000)

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END { print v[int((NR + 1) / 2)] }'; }
m() { median "${result[$1.$2]:-}"; }
# The no-rule proxy's own spread over the rounds: max / min.
spread() { tr ' ' '\n' <<<"${result[$1.$2]}" | awk 'NF' | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END { if (lo > 0) printf "%.2f", hi / lo; else print "-" }'; }
# The median over rounds of RULED / BASE in the same round.
paired() {
  median "$(paste -d' ' <(tr ' ' '\n' <<<"${result[$2.$3]}" | awk 'NF') \
    <(tr ' ' '\n' <<<"${result[$1.$3]}" | awk 'NF') \
    | awk '{ if ($2 > 0) printf "%.3f ", $1 / $2 }')"
}
row() { # LABEL BASE RULED KEY
  printf '%-26s | %9s | %9s | %6s | no-rule spread %s\n' "$1" "$(m "$2" "$4")" "$(m "$3" "$4")" \
    "$(paired "$2" "$3" "$4")" "$(spread "$2" "$4")"
}

summary() {
  echo "faultline-proxy sni benchmark $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) cores, $threads worker threads, medians of $rounds interleaved rounds of ${secs}s"
  echo "load average before: $load_before, after: $load_after"
  printf '%-26s | %9s | %9s | %6s |\n' "figure" "no rules" "sni rules" "ratio"
  row "TLS connections/s" tls tls+sni conn
  row "TLS CPU us/connection" tls tls+sni conncpu
  row "HTTP keep-alive req/s" http http+sni h1
  row "HTTP CPU us/request" http http+sni h1cpu
  row "HTTP close req/s" http http+sni close
  row "HTTP close CPU us/request" http http+sni closecpu
  echo "ClientHello parse alone: $parse_out (ns per parse)"
  echo "(sni rules: a partition and an abort reset for sni *.never.test, which no connection matches;"
  echo " ratio: median of the per-round ratios; spread: the no-rule proxy's max/min over the rounds, this run's noise)"
}

out="$(summary)"
echo
echo "$out"
if [ "$record" = 1 ]; then
  # shellcheck disable=SC2016 # the backticks are Markdown
  block="$(printf '\n### `bench/tls.sh`, %s\n\n```\n%s\n```\n' "$(date -u +%Y-%m-%d)" "$out")"
  BLOCK="$block" awk '/^## Capture/ && !done { print ENVIRON["BLOCK"]; print ""; done = 1 } { print }' \
    bench/RESULTS.md > "$work/RESULTS.md"
  cp "$work/RESULTS.md" bench/RESULTS.md
  echo "(appended to bench/RESULTS.md)"
fi
