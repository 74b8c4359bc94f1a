//go:build tools

// kwok's command is built from its module with `go build sigs.k8s.io/kwok/cmd/kwok`; this import
// keeps it in go.mod so `go mod tidy` does not drop it.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
