#!/usr/bin/env bash
# bench/proxy-memory.sh: the proxy's resident memory (VmRSS) idle, while it
# holds 1,000 and 10,000 keep-alive HTTP/1.1 connections, right after they
# close, and 30 s later; the same load against the upstream alone (a plain
# hyper server, `proxy/examples/bench-upstream.rs`) is the baseline measured
# in the same run.
#
#   sequence  idle -> hold 1k (one request each, then idle) -> all close ->
#             +30 s -> hold 10k -> all close -> +30 s
#   goals     idle <= 10 MB, 1k <= 30 MB, 10k <= 120 MB, after 10k close
#             < 15 MB, 30 s after the 1k burst <= 10 MB
#
# Env: BENCH_THREADS=2 (the proxy's workers) BENCH_PORT=19600
#      BENCH_SETTLE=30 (seconds after a close before the last reading)
#      BENCH_PROFILE=release (dev: a quick look with debug binaries)
#      BENCH_BUILD=1 (0: measure the binaries already built)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$root"
require_tools curl
threads="${BENCH_THREADS:-2}"
base="${BENCH_PORT:-19600}"
settle="${BENCH_SETTLE:-30}"
big=10000

# Each side of 10k connections needs 10k descriptors and some.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < big + 500)); then
  die "the open file limit is $(ulimit -n); $big connections need $((big + 500)) (ulimit -Hn)"
fi

bin="$(build_binaries "${BENCH_PROFILE:-release}" --bin faultline-proxy --example bench-upstream --example bench-client)"
start_cleanup

up=$base direct=$((base + 1)) proxy=$((base + 2)) admin=$((base + 3))
require_free_ports BENCH_PORT "$up" "$direct" "$proxy" "$admin"

# The proxy's upstream, and a second one that the clients connect to
# directly: the baseline.
"$bin/examples/bench-upstream" "127.0.0.1:$up" "$threads" &
pids+=($!)
"$bin/examples/bench-upstream" "127.0.0.1:$direct" "$threads" &
pid_direct=$!
pids+=("$pid_direct")
# The default connection limit (4096) is sized for the sidecar's memory
# limit; this measures what 10k connections cost, so it is raised.
FAULTLINE_WORKERS=$threads FAULTLINE_LOG=warn "$bin/faultline-proxy" run --max-connections 20000 \
  --listen "127.0.0.1:$proxy" --upstream "127.0.0.1:$up" --admin-addr "127.0.0.1:$admin" &
pid_proxy=$!
pids+=("$pid_proxy")

deadline=$((SECONDS + 30))
for p in $up $direct $proxy; do
  until curl -sf "http://127.0.0.1:$p/" >/dev/null; do
    if ((SECONDS > deadline)); then die "127.0.0.1:$p never answered"; fi
    sleep 0.1
  done
done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Holds N keep-alive connections to PORT (one request each) until killed;
# returns once they are all open. Sets `holder`.
hold() {
  local fifo="$work/hold.$1.$2"
  mkfifo "$fifo"
  "$bin/examples/bench-client" hold "127.0.0.1:$1" "$2" 3600 > "$fifo" &
  holder=$!
  read -r _ < "$fifo"
  rm -f "$fifo"
  # Held connections are idle keep-alive ones: the proxy frees their
  # buffers after a tick of its coarse clock (1 to 2 s). Both targets get
  # the same pause before they are measured.
  sleep 3
}

# Client connections a target still has open: the proxy's gauge; for the
# direct server, its descriptors beyond those it held idle.
still_open() { # NAME PID BASELINE_FDS
  if [[ $1 == proxy ]]; then
    curl -sf "http://127.0.0.1:$admin/metrics" |
      awk '/^faultline_connections_active/ {n += $2} END {print n + 0}'
  else
    echo $(($(open_fds "$2") - $3))
  fi
}

# Kills the holder and waits until the target has closed every connection.
release() { # NAME PID BASELINE_FDS
  kill "$holder"
  wait "$holder" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  until (($(still_open "$@") <= 0)); do
    if ((SECONDS > deadline)); then die "connections still open after 60 s"; fi
    sleep 0.2
  done
}

declare -A result
measure() { # NAME PORT PID
  local name=$1 port=$2 pid=$3 fds
  echo "== $name" >&2
  fds=$(open_fds "$pid")
  result[$name.idle]=$(rss_kib "$pid")
  hold "$port" 1000
  result[$name.1k]=$(rss_kib "$pid")
  release "$name" "$pid" "$fds"
  result[$name.1k_closed]=$(rss_kib "$pid")
  sleep "$settle"
  result[$name.1k_settled]=$(rss_kib "$pid")
  hold "$port" "$big"
  result[$name.10k]=$(rss_kib "$pid")
  release "$name" "$pid" "$fds"
  result[$name.10k_closed]=$(rss_kib "$pid")
  sleep "$settle"
  result[$name.10k_settled]=$(rss_kib "$pid")
}
measure direct "$direct" "$pid_direct"
measure proxy "$proxy" "$pid_proxy"

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
per_conn() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (a - b) / n }'; }

echo
echo "faultline-proxy memory: $(nproc) cores, $threads proxy workers, VmRSS in MB; direct = the upstream alone under the same load"
printf '%-28s | %8s %8s %8s | %s\n' "moment" proxy direct "/direct" goal
row() { # LABEL KEY GOAL
  printf '%-28s | %8s %8s %8s | %s\n' "$1" "$(mib "${result[proxy.$2]}")" \
    "$(mib "${result[direct.$2]}")" "$(ratio "${result[proxy.$2]}" "${result[direct.$2]}")" "$3"
}
row "idle" idle "<= 10"
row "1k keep-alive held" 1k "<= 30"
row "1k closed" 1k_closed ""
row "1k closed + ${settle}s" 1k_settled "<= 10"
row "10k keep-alive held" 10k "<= 120"
row "10k closed" 10k_closed "< 15"
row "10k closed + ${settle}s" 10k_settled ""
echo "per connection (KiB, 10k held less idle): proxy $(per_conn "${result[proxy.10k]}" "${result[proxy.idle]}" "$big"), direct $(per_conn "${result[direct.10k]}" "${result[direct.idle]}" "$big")"
