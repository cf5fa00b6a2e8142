#!/usr/bin/env bash
# Build both images.   scripts/image.sh [TAG]   (default tag: dev)
# Env: REGISTRY (default ghcr.io/faultline-dev), DOCKER (default docker; podman works).
# Without a working container engine, builds them as tarballs instead
# (scripts/image-tar.sh: release binaries + Debian packages, no engine needed).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-dev}
REGISTRY=${REGISTRY:-ghcr.io/faultline-dev}
DOCKER=${DOCKER:-docker}
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "image: no working $DOCKER engine; building docker-archive tarballs offline instead" >&2
  cargo build --release --locked -p faultline-proxy -p faultline-webhook --bins
  exec bash scripts/image-tar.sh "$TAG"
fi
"$DOCKER" build -f Dockerfile.webhook -t "$REGISTRY/faultline-webhook:$TAG" .
"$DOCKER" build -f Dockerfile.proxy -t "$REGISTRY/faultline-proxy:$TAG" .
echo "built $REGISTRY/faultline-webhook:$TAG and $REGISTRY/faultline-proxy:$TAG"
