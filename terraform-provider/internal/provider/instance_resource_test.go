package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	"github.com/hashicorp/terraform-plugin-testing/tfversion"

	"controlplane.local/terraform-provider-cp/internal/client"
)

const instanceAddr = "cp_instance.db"

func instanceConfig(name, version, config, acl, extra string) string {
	return instanceConfigPlan(name, version, "starter", config, acl, extra)
}

func instanceConfigPlan(name, version, plan, config, acl, extra string) string {
	return fmt.Sprintf(`
resource "cp_instance" "db" {
  name        = %q
  service     = "postgresql"
  version     = %q
  plan        = %q
  cluster     = "eu-1"
  description = "terraform acceptance test"
  config      = %s
  acl         = %s
%s
  # Bounded, so a control plane that stopped answering fails the test in minutes, not the 30-minute default.
  timeouts {
    create = "3m"
    update = "3m"
    delete = "3m"
  }
}
`, name, version, plan, config, acl, extra)
}

const (
	aclAB = `[
    { cidr = "203.0.113.0/24", description = "office" },
    { cidr = "2001:db8::/32" },
  ]`
	// The same set, written in the other order.
	aclBA = `[
    { cidr = "2001:db8::/32" },
    { cidr = "203.0.113.0/24", description = "office" },
  ]`
)

// The lifecycle of cp_instance against a real control plane: create → empty plan → update in place
// (version, config; the ACL in another order is no change) → import by id and by name → a change made
// through the API shows as drift and is undone → ephemeral credentials never in the state → destroy.
func TestAccInstance_lifecycle(t *testing.T) {
	dumpOnFailure(t)
	name := "tf-life"
	var id string
	var opened struct {
		sync.Mutex
		passwords []string
	}
	credentialsOpened = func(_, password string) {
		opened.Lock()
		opened.passwords = append(opened.passwords, password)
		opened.Unlock()
	}
	t.Cleanup(func() { credentialsOpened = nil })
	passwords := func() []string {
		opened.Lock()
		defer opened.Unlock()
		return append([]string(nil), opened.passwords...)
	}
	const credentials = `
ephemeral "cp_instance_credentials" "db" {
  instance_id = cp_instance.db.id
}
`

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		// Ephemeral resources need Terraform 1.10 (OpenTofu 1.11 reports its own version, 1.12.x here).
		TerraformVersionChecks: []tfversion.TerraformVersionCheck{tfversion.SkipBelow(tfversion.Version1_10_0)},
		CheckDestroy:           checkDestroyed(&id),
		Steps: []resource.TestStep{
			{
				Config: instanceConfig(name, "16", `{ max_connections = 100, track_io_timing = true }`, aclAB, "") + `
data "cp_instance" "by_name" { name = cp_instance.db.name }
data "cp_catalog" "pg" { service = "postgresql" }
`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("status"), knownvalue.StringExact("healthy")),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("project"), knownvalue.StringExact(testProject)),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("storage_gib"), knownvalue.Int64Exact(10)),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("config"), knownvalue.MapExact(map[string]knownvalue.Check{
						"max_connections": knownvalue.StringExact("100"), "track_io_timing": knownvalue.StringExact("true"),
					})),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("acl"), knownvalue.SetSizeExact(2)),
					statecheck.ExpectKnownValue("data.cp_instance.by_name", tfjsonpath.New("version"), knownvalue.StringExact("16")),
					statecheck.ExpectKnownValue("data.cp_catalog.pg", tfjsonpath.New("services").AtSliceIndex(0).AtMapKey("service"), knownvalue.StringExact("postgresql")),
				},
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttrPair(instanceAddr, "id", "data.cp_instance.by_name", "id"),
					func(s *terraform.State) error { id = s.RootModule().Resources[instanceAddr].Primary.ID; return nil },
				),
				// The plan right after apply (and after a refresh) is empty. Lifecycle-mode steps plan before the
				// apply and again after it, before and after a refresh (terraform-plugin-testing docs, "Plan
				// Checks", developer.hashicorp.com/terraform/plugin/testing/acceptance-tests/plan-checks).
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// A version upgrade, a plan change (the storage follows the plan's, 10 -> 50 GiB) and a
				// configuration change are one in-place update; the ACL written in the other order is no
				// change at all.
				Config: instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclBA, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("acl"), knownvalue.SetSizeExact(2)),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("version"), knownvalue.StringExact("17")),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("storage_gib"), knownvalue.Int64Exact(50)),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("resources").AtMapKey("memory_mib"), knownvalue.Int64Exact(8192)),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("config"), knownvalue.MapExact(map[string]knownvalue.Check{
						"max_connections": knownvalue.StringExact("200"),
					})),
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("status"), knownvalue.StringExact("healthy")),
					// The ACL is not empty, so the cluster's load balancer published where to connect.
					statecheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("endpoint").AtMapKey("host"), knownvalue.StringRegexp(regexp.MustCompile(`^198\.51\.100\.`))),
				},
				Check: func(*terraform.State) error { return checkAPI(id, "17", 2) },
			},
			{
				// Only the order of the ACL changed: no diff.
				Config: instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				ResourceName:            instanceAddr,
				ImportState:             true,
				ImportStateIdFunc:       func(*terraform.State) (string, error) { return testProject + "/" + id, nil },
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				ResourceName:            instanceAddr,
				ImportState:             true,
				ImportStateId:           testProject + "/" + name,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				// Someone changes the instance through the API: the refresh sees it, the plan undoes it.
				PreConfig: func() { changeOutside(t, id, "300") },
				Config:    instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("description"), knownvalue.StringExact("terraform acceptance test")),
						plancheck.ExpectKnownValue(instanceAddr, tfjsonpath.New("config"), knownvalue.MapExact(map[string]knownvalue.Check{
							"max_connections": knownvalue.StringExact("200"),
						})),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// The rotation trigger's first value is recorded, not acted on.
				Config: instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, `  credentials_rotation = "2026-11"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionUpdate)},
				},
			},
			{
				// The credentials are read (the ephemeral resource is opened at plan and at apply) and the
				// password is nowhere in the state. (OpenTofu opens an ephemeral resource whose dependencies have
				// changes only at apply, and not at all when nothing refers to it, so this step changes nothing.)
				Config:            instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, `  credentials_rotation = "2026-11"`) + credentials,
				ConfigStateChecks: []statecheck.StateCheck{passwordNotInState{passwords: passwords}},
			},
			{
				// The rotation trigger: a new value (after "2026-11" was recorded) asks the API to rotate; the
				// password changes, and is still never in the state.
				Config: instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, `  credentials_rotation = "2026-12"`) + credentials,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionUpdate)},
				},
			},
			{
				Config: instanceConfigPlan(name, "17", "standard", `{ max_connections = 200 }`, aclAB, `  credentials_rotation = "2026-12"`) + credentials,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				ConfigStateChecks: []statecheck.StateCheck{passwordNotInState{passwords: passwords, wantDistinct: 2}},
			},
		},
	})
}

// A create whose operation cannot finish in time (its cluster's agent is not running) leaves the
// instance in the state as tainted; the next apply, with the agent back, replaces it, and no instance is
// left behind outside the state.
func TestAccInstance_createTimeoutLeavesTainted(t *testing.T) {
	dumpOnFailure(t)
	name := "tf-timeout"
	config := func(timeout string) string {
		return fmt.Sprintf(`
resource "cp_instance" "db" {
  name    = %q
  service = "postgresql"
  version = "16"
  plan    = "starter"
  cluster = "eu-3"
  timeouts {
    create = %q
  }
}
`, name, timeout)
	}
	var firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config("4s"),
				ExpectError: regexp.MustCompile(`(?s)did not become ready.*tainted`),
			},
			{
				PreConfig: func() {
					inst, err := apiClient().FindInstanceByName(context.Background(), testProject, name)
					if err != nil || inst == nil {
						t.Fatalf("the timed-out instance is not in the API: %v", err)
					}
					firstID = inst.ID
					if err := stack.StartAgent("eu-3"); err != nil {
						t.Fatal(err)
					}
				},
				Config: config("5m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					// Tainted: replaced, not forgotten and not re-created beside it.
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: func(s *terraform.State) error {
					got := s.RootModule().Resources[instanceAddr].Primary.ID
					if got == firstID {
						return fmt.Errorf("the tainted instance %s was kept", firstID)
					}
					old, err := apiClient().GetInstance(context.Background(), testProject, firstID, 0)
					if err == nil && old.Lifecycle != "deprovisioning" {
						return fmt.Errorf("the tainted instance %s is still %s", firstID, old.Lifecycle)
					}
					return nil
				},
			},
		},
	})
}

// checkAPI reads the instance through the API.
func checkAPI(id, version string, aclEntries int) error {
	inst, err := apiClient().GetInstance(context.Background(), testProject, id, 0)
	if err != nil {
		return err
	}
	if inst.Version != version || len(inst.ACL) != aclEntries || inst.Status.State != "healthy" {
		return fmt.Errorf("API has version %s, %d ACL entries, %s", inst.Version, len(inst.ACL), inst.Status.State)
	}
	return nil
}

// changeOutside changes description and configuration through the API, as another tool would.
func changeOutside(t *testing.T, id, configValue string) {
	c := apiClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := c.GetInstance(ctx, testProject, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	desc := "changed outside terraform"
	update := client.UpdateRequest{Description: &desc}
	if inst.Service == "postgresql" {
		v := json.RawMessage(configValue)
		update.Config = map[string]*json.RawMessage{"max_connections": &v}
	}
	acc, err := c.Update(ctx, testProject, id, inst.InstanceVersion, update)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOperation(ctx, testProject, acc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitHealthy(ctx, testProject, id, acc.Sequence); err != nil {
		t.Fatal(err)
	}
}

func checkDestroyed(id *string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if *id == "" {
			return nil
		}
		inst, err := apiClient().GetInstance(context.Background(), testProject, *id, 0)
		if client.IsStatus(err, http.StatusNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if inst.Lifecycle != "deprovisioning" {
			return fmt.Errorf("instance %s is still %s", *id, inst.Lifecycle)
		}
		return nil
	}
}

// passwordNotInState fails when a password the ephemeral resource read appears anywhere in the state
// (the whole state as JSON, `terraform show -json`, sensitive values included), or when none was read.
type passwordNotInState struct {
	passwords    func() []string
	wantDistinct int
}

func (c passwordNotInState) CheckState(_ context.Context, req statecheck.CheckStateRequest, resp *statecheck.CheckStateResponse) {
	passwords := c.passwords()
	if len(passwords) == 0 {
		resp.Error = fmt.Errorf("the ephemeral resource was never opened")
		return
	}
	distinct := map[string]bool{}
	for _, p := range passwords {
		distinct[p] = true
	}
	if len(distinct) < c.wantDistinct {
		resp.Error = fmt.Errorf("%d distinct passwords read, want %d (the rotation changed nothing)", len(distinct), c.wantDistinct)
		return
	}
	state, err := json.Marshal(req.State)
	if err != nil {
		resp.Error = err
		return
	}
	for _, p := range passwords {
		if p == "" {
			resp.Error = fmt.Errorf("the ephemeral resource read an empty password")
			return
		}
		if strings.Contains(string(state), p) {
			resp.Error = fmt.Errorf("a password read by cp_instance_credentials is in the state")
			return
		}
	}
}
