#!/usr/bin/env bash
# Pod start-up on a real node (tests/node/node.sh), injected vs plain: 20
# pods created at once in a labelled namespace vs an unlabelled one, same
# node, same run, rounds alternating; time from create to Ready, the ratio,
# and where an injected pod's start-up goes. Goal: ratio <= 1.3.
#
# Needs root and KUBEBUILDER_ASSETS with etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet (docs/e2e-harness.md).
# The images are built from release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "bench/node.sh: SKIPPED: set KUBEBUILDER_ASSETS (see docs/e2e-harness.md)" >&2
  [ -n "${CI:-}" ] && exit 1
  exit 0
fi
cargo build --release -q --workspace --bins
out="$(cargo test --release -q -p faultline-e2e --test node pod_startup \
  -- --ignored --nocapture --test-threads=1 2>&1)" || { echo "$out" >&2; exit 1; }
echo "node pod start-up, injected vs plain"
echo "$out" | sed -n 's/^BENCH|//p'
