package provider

import (
	"fmt"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// A backup schedule is created, changed in place, imported, and removed with its instance.
func TestAccBackupSchedule(t *testing.T) {
	dumpOnFailure(t)
	config := func(cron string, keep int) string {
		return fmt.Sprintf(`
resource "cp_instance" "db" {
  name    = "tf-sched"
  service = "postgresql"
  version = "16"
  plan    = "starter"
  cluster = "eu-1"
}

resource "cp_backup_schedule" "nightly" {
  instance_id = cp_instance.db.id
  name        = "nightly"
  cron        = %q
  time_zone   = "Europe/Berlin"
  retention = {
    keep_last = %d
  }
}
`, cron, keep)
	}
	const addr = "cp_backup_schedule.nightly"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config("30 2 * * *", 7),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("enabled"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("retention").AtMapKey("keep_last"), knownvalue.Int64Exact(7)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("next_run_at"), knownvalue.NotNull()),
				},
			},
			{
				Config: config("0 3 * * 1", 14),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("cron"), knownvalue.StringExact("0 3 * * 1")),
				},
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateVerify: true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					r := s.RootModule().Resources[addr].Primary
					return testProject + "/" + r.Attributes["instance_id"] + "/" + r.ID, nil
				},
			},
		},
	})
}
