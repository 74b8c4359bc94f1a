// Command cpstack runs the acceptance tests' control plane by itself (cluster eu-1 with its agent) until
// interrupted, printing the endpoint and a token: for trying the provider or an example by hand without
// `./dev up`.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"controlplane.local/terraform-provider-cp/internal/acctest"
)

func main() {
	s, err := acctest.Start(acctest.Options{Clusters: []string{"eu-1"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer s.Stop()
	fmt.Printf("export CP_ENDPOINT=%s CP_TOKEN=%s\n", s.Endpoint, s.Token)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
