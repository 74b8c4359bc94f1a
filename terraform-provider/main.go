// Command terraform-provider-cp is the Terraform / OpenTofu provider of the managed-databases control plane.
// Layout after github.com/hashicorp/terraform-provider-scaffolding-framework (main.go serving
// internal/provider over protocol 6 with providerserver.Serve).
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"controlplane.local/terraform-provider-cp/internal/provider"
)

// version is set by the build (-ldflags "-X main.version=…"); "dev" otherwise.
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run with support for debuggers like delve")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: provider.Address,
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
