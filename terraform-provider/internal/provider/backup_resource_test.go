package provider

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// An on-demand backup is made (its artifact in the real S3 store), a new instance starts from it through
// restore_from, and destroy deletes the artifact.
func TestAccBackup_andRestoreIntoANewInstance(t *testing.T) {
	dumpOnFailure(t)
	const config = `
resource "cp_instance" "source" {
  name    = "tf-bak-src"
  service = "mongodb"
  version = "7.0"
  plan    = "starter"
  cluster = "eu-1"
  timeouts {
    create = "3m"
  }
}

resource "cp_backup" "now" {
  instance_id = cp_instance.source.id
  timeouts {
    create = "3m"
  }
}

resource "cp_instance" "copy" {
  name    = "tf-bak-copy"
  service = "mongodb"
  version = "7.0"
  plan    = "starter"
  cluster = "eu-1"
  restore_from = {
    backup_id = cp_backup.now.id
  }
  timeouts {
    create = "3m"
  }
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("cp_backup.now", tfjsonpath.New("state"), knownvalue.StringExact("completed")),
					statecheck.ExpectKnownValue("cp_backup.now", tfjsonpath.New("sha256"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue("cp_instance.copy", tfjsonpath.New("status"), knownvalue.StringExact("healthy")),
				},
				Check: resource.TestCheckResourceAttrPair("cp_instance.copy", "restored_from_backup_id", "cp_backup.now", "id"),
			},
			{
				ResourceName:            "cp_backup.now",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					r := s.RootModule().Resources["cp_backup.now"].Primary
					return testProject + "/" + r.Attributes["instance_id"] + "/" + r.ID, nil
				},
			},
		},
	})
}
