#!/usr/bin/env bash
# End-to-end on a throwaway kind cluster (needs docker + kind + kubectl):
# build images, load them, install, deploy the demo shop, check injection and
# a fault, then delete the cluster.   KEEP=1 keeps the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-faultline-e2e}
TAG=e2e
REGISTRY=faultline.local
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required" >&2; exit 1; }
done
cleanup() { [[ -n "${KEEP:-}" ]] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
REGISTRY=$REGISTRY scripts/image.sh "$TAG"
kind load docker-image --name "$CLUSTER" "$REGISTRY/faultline-webhook:$TAG" "$REGISTRY/faultline-proxy:$TAG"
REGISTRY=$REGISTRY PULL_POLICY=IfNotPresent scripts/deploy.sh "$TAG"

# Wait until the webhook has patched its caBundle (it does so at startup).
deadline=$((SECONDS + 120))
until [[ -n "$(kubectl get mutatingwebhookconfiguration faultline-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]; do
  (( SECONDS < deadline )) || { echo "caBundle never patched" >&2; exit 1; }
  sleep 1
done

kubectl apply -k manifests/examples/
kubectl -n shop rollout status deploy/payments deploy/checkout --timeout=300s
containers=$(kubectl -n shop get pod -l app=checkout -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}')
echo "checkout pod containers: $containers"
[[ "$containers" == *faultline-proxy* && "$containers" == *faultline-init* ]] || { echo "checkout was not injected" >&2; exit 1; }

# An invalid policy is refused with rule and field.
if kubectl -n shop annotate deploy/checkout faultline.dev/faults="$(cat manifests/examples/policies/invalid.yaml)" 2>/tmp/e2e-invalid.txt; then
  echo "invalid policy was accepted" >&2; exit 1
fi
grep -q "abort.status" /tmp/e2e-invalid.txt

# A valid one is accepted, and the load generator sees the injected 503s.
kubectl -n shop annotate deploy/checkout --overwrite faultline.dev/faults='
duration: 60s
rules:
- name: payments-down
  match: {direction: outbound, host: payments.shop.svc.cluster.local, port: 80}
  abort: {status: 503, body: "injected by faultline"}'
deadline=$((SECONDS + 120))
until kubectl -n shop logs deploy/loadgen --since=20s | grep -q '^503 '; do
  (( SECONDS < deadline )) || { echo "no injected 503 seen" >&2; exit 1; }
  sleep 2
done
echo "e2e-kind: injection, validation and fault delivery OK"
