#!/usr/bin/env bash
# Install faultline into the current kubectl context with the given image tag.
#   scripts/deploy.sh [TAG]     (default: latest)
# Env: REGISTRY (default ghcr.io/faultline-dev), PULL_POLICY (e.g. IfNotPresent for kind),
#      DRY_RUN=1 prints the manifests instead of applying them.
# The overlay only pins images: the base in manifests/ is applied unchanged otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-latest}
REGISTRY=${REGISTRY:-ghcr.io/faultline-dev}
PULL_POLICY=${PULL_POLICY:-}
OVERLAY=$(mktemp -d)
trap 'rm -rf "$OVERLAY"' EXIT
cp -r manifests "$OVERLAY/base"
cat >"$OVERLAY/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [base]
images:
- {name: ghcr.io/faultline-dev/faultline-webhook, newName: $REGISTRY/faultline-webhook, newTag: "$TAG"}
patches:
- target: {kind: Deployment, name: faultline-webhook}
  patch: |
    - {op: test, path: /spec/template/spec/containers/0/env/1/name, value: FAULTLINE_PROXY_IMAGE}
    - {op: replace, path: /spec/template/spec/containers/0/env/1/value, value: "$REGISTRY/faultline-proxy:$TAG"}
YAML
if [[ -n "$PULL_POLICY" ]]; then
  cat >>"$OVERLAY/kustomization.yaml" <<YAML
    - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: $PULL_POLICY}
    - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: FAULTLINE_PROXY_IMAGE_PULL_POLICY, value: $PULL_POLICY}}
YAML
fi
if [[ -n "${DRY_RUN:-}" ]]; then kubectl kustomize "$OVERLAY"; exit 0; fi
kubectl apply -k "$OVERLAY"
kubectl -n faultline-system rollout status deploy/faultline-webhook --timeout=180s
