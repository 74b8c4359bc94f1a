package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
)

// Mistakes the API would refuse are refused at plan time, with the API's words: a CIDR not in canonical
// form, a configuration value out of the catalog's bounds or unknown to it, a version not offered, a
// public block without allow_public.
func TestAccInstance_planTimeValidation(t *testing.T) {
	dumpOnFailure(t)
	cfg := func(version, config, acl string) string {
		return fmt.Sprintf(`
resource "cp_instance" "bad" {
  name    = "tf-bad"
  service = "postgresql"
  version = %q
  plan    = "starter"
  config  = %s
  acl     = %s
}
`, version, config, acl)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      cfg("16", "{}", `[{ cidr = "2001:DB8::/32" }]`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`"2001:DB8::/32" is not in canonical form; write it as 2001:db8::/32`),
			},
			{
				Config:      cfg("16", "{}", `[{ cidr = "203.0.113.5/24" }]`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`host bits set; the block is 203.0.113.0/24`),
			},
			{
				Config:      cfg("16", "{}", `[{ cidr = "0.0.0.0/0" }]`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`admits every address; set allow_public`),
			},
			{
				Config:      cfg("16", `{ max_connections = 9 }`, "[]"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`max_connections must be from 10 to 5000, not 9`),
			},
			{
				Config:      cfg("16", `{ shared_buffers = "1GB" }`, "[]"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`postgresql has no configuration parameter "shared_buffers"`),
			},
			{
				Config:      cfg("13", "{}", "[]"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`postgresql 13 is not in the catalog; offered: 14, 15, 16, 17, 18`),
			},
			{
				// A good configuration plans a create.
				Config:             cfg("16", `{ max_connections = 150 }`, `[{ cidr = "2001:db8::/32" }]`),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
		},
	})
}

// An operation that fails shows the reason the cluster's agent reported, and leaves the instance
// tainted; once the cluster is well again, the next apply replaces it.
func TestAccInstance_failedOperationShowsTheReason(t *testing.T) {
	dumpOnFailure(t)
	config := `
resource "cp_instance" "db" {
  name    = "tf-crash"
  service = "grafana"
  version = "11.6"
  plan    = "starter"
  cluster = "eu-1"
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				PreConfig: func() {
					if err := stack.SetFaults("eu-1", `{"crash_loop": ["*"]}`); err != nil {
						t.Fatal(err)
					}
				},
				Config:      config,
				ExpectError: regexp.MustCompile(`CrashLoopBackOff`),
			},
			{
				PreConfig: func() {
					if err := stack.SetFaults("eu-1", `{}`); err != nil {
						t.Fatal(err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(instanceAddr, plancheck.ResourceActionDestroyBeforeCreate)},
				},
			},
		},
	})
}
