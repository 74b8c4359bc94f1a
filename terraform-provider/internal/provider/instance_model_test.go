package provider

import (
	"context"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

// A platform admin moved the instance (a drain): the read keeps the configured placement, so the next
// plan does not replace the instance (and destroy its data), and says where it runs now.
func TestAReadAfterAPlatformMoveKeepsThePlacementAndShowsWhereItRuns(t *testing.T) {
	m := instanceModel{Cluster: types.StringValue("eu-1")}
	if diags := m.fromAPI(context.Background(), &client.Instance{ID: "x", Cluster: "eu-2"}); diags.HasError() {
		t.Fatalf("fromAPI: %v", diags)
	}
	if m.Cluster.ValueString() != "eu-1" || m.RunningCluster.ValueString() != "eu-2" {
		t.Fatalf("cluster %q, running_cluster %q; want eu-1 and eu-2", m.Cluster.ValueString(), m.RunningCluster.ValueString())
	}
	// Imported (nothing known yet): the placement is where it runs.
	imported := instanceModel{Cluster: types.StringNull()}
	if diags := imported.fromAPI(context.Background(), &client.Instance{ID: "x", Cluster: "eu-2"}); diags.HasError() {
		t.Fatalf("fromAPI: %v", diags)
	}
	if imported.Cluster.ValueString() != "eu-2" {
		t.Fatalf("an imported instance's cluster is %q, want eu-2", imported.Cluster.ValueString())
	}
}
