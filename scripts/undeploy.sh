#!/usr/bin/env bash
# Remove faultline (webhook configurations first, so pod creation never waits on a dying webhook).
set -euo pipefail
cd "$(dirname "$0")/.."
kubectl delete mutatingwebhookconfiguration faultline-webhook --ignore-not-found
kubectl delete validatingwebhookconfiguration faultline-webhook --ignore-not-found
kubectl delete -k manifests/ --ignore-not-found
