package provider

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"controlplane.local/terraform-provider-cp/internal/acctest"
	"controlplane.local/terraform-provider-cp/internal/client"
)

// testProject is the project every acceptance test works in.
const testProject = "tfacc"

// The control plane the acceptance tests run against, started once per `go test` run when TF_ACC is
// set: cluster eu-1 with its agent, and eu-3 registered but without an agent until a test starts it.
var stack *acctest.Stack

// testAccProtoV6ProviderFactories serves the provider in-process (terraform-plugin-testing connects the
// core to it through TF_REATTACH_PROVIDERS), as the scaffolding's provider_test.go does.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"cp": providerserver.NewProtocol6WithError(New("test")()),
}

func TestMain(m *testing.M) {
	if os.Getenv("TF_ACC") == "" {
		os.Exit(m.Run())
	}
	var err error
	stack, err = acctest.Start(acctest.Options{Clusters: []string{"eu-1"}, Idle: []string{"eu-3"}, Backups: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	os.Setenv(EnvEndpoint, stack.Endpoint)
	os.Setenv(EnvToken, stack.Token)
	os.Setenv(EnvProject, testProject)
	code := m.Run()
	stack.Stop()
	os.Exit(code)
}

// apiClient is a client of the test's control plane, for changes "outside Terraform" and checks.
func apiClient() *client.Client {
	return client.New(stack.Endpoint, stack.Token, "terraform-provider-cp-tests")
}

func dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() && stack != nil {
			if err := stack.CheckAlive(); err != nil {
				t.Log(err)
			}
			stack.DumpLogs(t)
		}
	})
}

var _ = context.Background
