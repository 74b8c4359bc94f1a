#!/usr/bin/env bash
# Builds the provider and installs it where Terraform and OpenTofu look for providers without any CLI
# configuration (their implied local mirror, ~/.terraform.d/plugins/<host>/<namespace>/<type>/<version>/<os_arch>),
# so `source = "example/cp"` resolves with a plain `init`, lock-file hashes included.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.1.0}
platform=$(go env GOOS)_$(go env GOARCH)
for host in registry.terraform.io registry.opentofu.org; do
  dir=${TF_PLUGINS_DIR:-$HOME/.terraform.d/plugins}/$host/example/cp/$VERSION/$platform
  mkdir -p "$dir"
  go build -ldflags "-X main.version=$VERSION" -o "$dir/terraform-provider-cp_v$VERSION" .
  echo "==> installed example/cp $VERSION in $dir"
done
