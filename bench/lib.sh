# bench/lib.sh: what the bench scripts and proxy/examples/demo.sh share,
# sourced by them (not run): the repository root, tool checks, the build,
# free-port checks and the clean-up of their processes and files.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"      (a script in bench/)
#
# Sets `root` (the repository) and `prog` (the script's name, for messages).
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prog="$(basename "$0")"

# Prints a message naming the script and exits with 1.
die() {
  echo "$prog: $*" >&2
  exit 1
}

# Exits unless every TOOL is on the PATH, naming the apt package of those
# that are not.
require_tools() { # TOOL...
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) && return
  local -A package=([h2load]=nghttp2-client [nginx]=nginx-light)
  local packages=()
  for tool in "${missing[@]}"; do packages+=("${package[$tool]:-$tool}"); done
  die "${missing[*]} missing (apt-get install ${packages[*]})"
}

# Exits if something already listens on one of the PORTs of 127.0.0.1;
# VAR is the setting that moves the script's ports.
require_free_ports() { # VAR PORT...
  local var=$1 port
  shift
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is in use; set $var to another base port"
    fi
  done
}

# Builds faultline-proxy's TARGETS (cargo's --bin/--example flags) with
# PROFILE (release, dev, ...) and prints the directory they are in.
# BENCH_BUILD=0 skips the build and measures the binaries already there.
# CARGO_TARGET_DIR and the CARGO_PROFILE_* variables are cargo's own.
build_binaries() { # PROFILE TARGETS...
  local profile=$1
  shift
  if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    echo "== building $profile binaries ($*)" >&2
    cargo build --profile "$profile" -q -p faultline-proxy "$@"
  fi
  local dir=$profile
  [[ $profile == dev ]] && dir=debug
  echo "${CARGO_TARGET_DIR:-$root/target}/$dir"
}

# The 1, 5 and 15 minute load averages.
load_average() {
  cut -d' ' -f1-3 /proc/loadavg
}

# Makes the scratch directory `work` and the list `pids` of background
# processes; on exit (also on failure and Ctrl-C) the processes are killed
# and the directory removed.
start_cleanup() {
  work="$(mktemp -d)"
  pids=()
  trap cleanup EXIT INT TERM
}

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
