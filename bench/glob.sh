#!/usr/bin/env bash
# bench/glob.sh: the cost of matching `path` globs, through the policy
# crate's public decision API, for an ordinary glob and for one of long
# literal pieces that almost match a 60 KB path everywhere; the baseline,
# measured in the same run, is the same glob matched with a naive substring
# search (pattern length x path length). No tools needed but cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
echo "== building the benchmark" >&2
cargo build --release -q -p faultline-policy --example bench-glob
"${CARGO_TARGET_DIR:-$root/target}/release/examples/bench-glob"
