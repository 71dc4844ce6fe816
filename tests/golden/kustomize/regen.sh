#!/bin/sh
# Regenerates the goldens with the real kustomize (kubectl kustomize, v5.5.0).
# Each case: <case>/expected.yaml = `kubectl kustomize <case>/<root>`.
set -eu
cd "$(dirname "$0")"
build() { kubectl kustomize "$1/$2" > "$1/expected.yaml"; }
build basic overlay
build images .
build patches-smp .
build patches-json6902 .
build generators overlay
build labels .
build rbac .
build misc .
for env in staging production; do
  mkdir -p "example-guestbook-$env"
  kubectl kustomize "../../../examples/gitops/apps/guestbook/overlays/$env" > "example-guestbook-$env/expected.yaml"
  mkdir -p "example-redis-$env"
  kubectl kustomize "../../../examples/gitops/apps/redis/overlays/$env" > "example-redis-$env/expected.yaml"
done
kubectl version --client 2>/dev/null | grep -i kustomize > KUSTOMIZE_VERSION || true
