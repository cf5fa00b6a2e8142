#!/usr/bin/env bash
# Pod creation on a real kube-apiserver with and without the faultline
# webhook in the path: 300 pods in an opted-in namespace (each one goes
# through /mutate) vs 300 in an unlabelled namespace, same control plane,
# same run, rounds alternating. Target: ratio <= 1.15.
#
# Needs KUBEBUILDER_ASSETS (etcd, kube-apiserver, kube-controller-manager).
# Knobs: FAULTLINE_BENCH_PODS (default 300), FAULTLINE_BENCH_CONCURRENCY (8).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "bench/apiserver.sh: SKIPPED: set KUBEBUILDER_ASSETS to a directory with etcd, kube-apiserver, kube-controller-manager" >&2
  [ -n "${CI:-}" ] && exit 1
  exit 0
fi

out="$(cargo test --release -q -p faultline-e2e --test webhook pod_creation_bench:: \
  -- --ignored --nocapture --test-threads=1 2>&1)" || { echo "$out" >&2; exit 1; }
echo "$out" | sed -n 's/^BENCH|//p'
