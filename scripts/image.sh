#!/usr/bin/env bash
# Build both images.   scripts/image.sh [TAG]   (default tag: dev)
# Env: REGISTRY (default ghcr.io/faultline-dev), DOCKER (default docker; podman works).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-dev}
REGISTRY=${REGISTRY:-ghcr.io/faultline-dev}
DOCKER=${DOCKER:-docker}
"$DOCKER" build -f Dockerfile.webhook -t "$REGISTRY/faultline-webhook:$TAG" .
"$DOCKER" build -f Dockerfile.proxy -t "$REGISTRY/faultline-proxy:$TAG" .
echo "built $REGISTRY/faultline-webhook:$TAG and $REGISTRY/faultline-proxy:$TAG"
