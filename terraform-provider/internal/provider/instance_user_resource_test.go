package provider

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"controlplane.local/terraform-provider-cp/internal/client"
)

const userAddr = "cp_instance_user.reporting"

// userConfig is a PostgreSQL instance and, unless role is "", its user `reporting` with the catalog's
// role at index role ("0": readwrite, "1": readonly) and the rotation trigger.
func userConfig(role, rotation string) string {
	config := `
data "cp_catalog" "pg" { service = "postgresql" }

resource "cp_instance" "db" {
  name    = "tf-users"
  service = "postgresql"
  version = "16"
  plan    = "starter"
  cluster = "eu-1"
  timeouts {
    create = "3m"
    delete = "3m"
  }
}
`
	if role == "" {
		return config
	}
	return config + fmt.Sprintf(`
resource "cp_instance_user" "reporting" {
  instance_id       = cp_instance.db.id
  name              = "reporting"
  role              = data.cp_catalog.pg.services[0].user_roles[%s]
  password_rotation = %q
  timeouts {
    create = "2m"
    update = "2m"
    delete = "2m"
  }
}
`, role, rotation)
}

// userFromAPI is the user and its credentials as the API tells them now.
func userFromAPI(s *terraform.State) (*client.User, *client.Credentials, error) {
	r := s.RootModule().Resources[userAddr].Primary
	instance, name := r.Attributes["instance_id"], r.Attributes["name"]
	u, err := apiClient().GetUser(context.Background(), testProject, instance, name)
	if err != nil {
		return nil, nil, err
	}
	creds, err := apiClient().GetUserCredentials(context.Background(), testProject, instance, name)
	return u, creds, err
}

// The state holds what the API says: the role, applied, and the password the cluster holds.
func checkUserMatchesAPI(role string, password *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		u, creds, err := userFromAPI(s)
		if err != nil {
			return err
		}
		attrs := s.RootModule().Resources[userAddr].Primary.Attributes
		if u.Role != role || u.State != "applied" {
			return fmt.Errorf("the API has user %s as %s/%s, want %s/applied", u.Name, u.Role, u.State, role)
		}
		if attrs["password"] == "" || attrs["password"] != creds.Password {
			return fmt.Errorf("the state's password is not the one the cluster holds for %s", u.Name)
		}
		if attrs["host"] != creds.Host || attrs["port"] != fmt.Sprint(creds.Port) {
			return fmt.Errorf("state has %s:%s, the API %s:%d", attrs["host"], attrs["port"], creds.Host, creds.Port)
		}
		*password = creds.Password
		return nil
	}
}

// The lifecycle of cp_instance_user against a real control plane (the simulator's agent applies users):
// create with a role from the catalog → the password in the state is the cluster's → import →
// the rotation trigger gives a new password in place → a new role replaces the user → removing the
// resource deletes the user from the API while the instance stays → destroy.
func TestAccInstanceUser_lifecycle(t *testing.T) {
	dumpOnFailure(t)
	var instanceID, first, rotated, replaced string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             checkDestroyed(&instanceID),
		Steps: []resource.TestStep{
			{
				Config: userConfig("1", "2026-11"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(userAddr, tfjsonpath.New("role"), knownvalue.StringExact("readonly")),
					statecheck.ExpectKnownValue(userAddr, tfjsonpath.New("state"), knownvalue.StringExact("applied")),
					statecheck.ExpectKnownValue(userAddr, tfjsonpath.New("project"), knownvalue.StringExact(testProject)),
					statecheck.ExpectKnownValue("data.cp_catalog.pg", tfjsonpath.New("services").AtSliceIndex(0).AtMapKey("user_roles"),
						knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("readwrite"), knownvalue.StringExact("readonly")})),
				},
				Check: resource.ComposeTestCheckFunc(
					func(s *terraform.State) error {
						instanceID = s.RootModule().Resources[instanceAddr].Primary.ID
						return nil
					},
					resource.TestCheckResourceAttrPair(userAddr, "instance_id", instanceAddr, "id"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources[userAddr].Primary.ID; id != instanceID+"/reporting" {
							return fmt.Errorf("id %q, want <instance_id>/reporting", id)
						}
						return nil
					},
					checkUserMatchesAPI("readonly", &first),
				),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// Import by project/instance_id/name: the same user, password read from the cluster.
				ResourceName:            userAddr,
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts", "password_rotation"},
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					r := s.RootModule().Resources[userAddr].Primary
					return testProject + "/" + r.Attributes["instance_id"] + "/" + r.Attributes["name"], nil
				},
			},
			{
				// A new trigger value rotates in place: a new password, the cluster's.
				Config: userConfig("1", "2026-12"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(userAddr, plancheck.ResourceActionUpdate),
						plancheck.ExpectUnknownValue(userAddr, tfjsonpath.New("password")),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeTestCheckFunc(
					checkUserMatchesAPI("readonly", &rotated),
					func(*terraform.State) error {
						if rotated == first {
							return fmt.Errorf("the rotation left the password as it was")
						}
						return nil
					},
				),
			},
			{
				// Another role replaces the user.
				Config: userConfig("0", "2026-12"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(userAddr, plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: checkUserMatchesAPI("readwrite", &replaced),
			},
			{
				// Without the resource the user is deleted from the API; the instance stays.
				Config: userConfig("", ""),
				Check: func(*terraform.State) error {
					if _, err := apiClient().GetInstance(context.Background(), testProject, instanceID, 0); err != nil {
						return fmt.Errorf("the instance should stay: %w", err)
					}
					_, err := apiClient().GetUser(context.Background(), testProject, instanceID, "reporting")
					if !client.IsStatus(err, http.StatusNotFound) {
						return fmt.Errorf("user reporting should be gone from the API, got %v", err)
					}
					return nil
				},
			},
		},
	})
}

// A name the API would refuse is refused at plan time; a reserved one by the API, naming the field and
// the rule (checked before the instance is looked up, so no instance is needed).
func TestAccInstanceUser_refusals(t *testing.T) {
	dumpOnFailure(t)
	config := func(name string) string {
		return fmt.Sprintf(`
resource "cp_instance_user" "bad" {
  instance_id = "01939d3e-8c4f-7b7a-9a52-6f1d1c0e5a10"
  name        = %q
  role        = "readonly"
}
`, name)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config("Bad-Name"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`1 to 63 of a-z, 0-9 and _, starting with a letter`),
			},
			{
				Config:      config("postgres"),
				ExpectError: regexp.MustCompile(`/name: .*reserved.*\(user_name_reserved\)`),
			},
		},
	})
}
