package provider

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

// instanceModel is cp_instance's state and plan.
type instanceModel struct {
	ID                  types.String   `tfsdk:"id"`
	Project             types.String   `tfsdk:"project"`
	Name                types.String   `tfsdk:"name"`
	Service             types.String   `tfsdk:"service"`
	Version             types.String   `tfsdk:"version"`
	Plan                types.String   `tfsdk:"plan"`
	StorageGiB          types.Int64    `tfsdk:"storage_gib"`
	Config              types.Map      `tfsdk:"config"`
	Description         types.String   `tfsdk:"description"`
	DeletionProtection  types.Bool     `tfsdk:"deletion_protection"`
	Cluster             types.String   `tfsdk:"cluster"`
	RunningCluster      types.String   `tfsdk:"running_cluster"`
	Region              types.String   `tfsdk:"region"`
	ACL                 types.Set      `tfsdk:"acl"`
	AllowPublic         types.Bool     `tfsdk:"allow_public"`
	RestoreFrom         types.Object   `tfsdk:"restore_from"`
	Resources           types.Object   `tfsdk:"resources"`
	Connection          types.Object   `tfsdk:"endpoint"`
	InstanceVersion     types.Int64    `tfsdk:"instance_version"`
	Status              types.String   `tfsdk:"status"`
	CreatedAt           types.String   `tfsdk:"created_at"`
	CredentialsRotation types.String   `tfsdk:"credentials_rotation"`
	RestoredFromBackup  types.String   `tfsdk:"restored_from_backup_id"`
	Timeouts            timeouts.Value `tfsdk:"timeouts"`
}

var (
	aclEntryType    = types.ObjectType{AttrTypes: map[string]attr.Type{"cidr": types.StringType, "description": types.StringType}}
	resourcesType   = map[string]attr.Type{"cpu_millis": types.Int64Type, "memory_mib": types.Int64Type, "replicas": types.Int64Type}
	connectionType  = map[string]attr.Type{"host": types.StringType, "port": types.Int64Type}
	restoreFromType = map[string]attr.Type{"backup_id": types.StringType, "instance_id": types.StringType, "point_in_time": types.StringType}
)

type aclEntryModel struct {
	CIDR        types.String `tfsdk:"cidr"`
	Description types.String `tfsdk:"description"`
}

type restoreFromModel struct {
	BackupID    types.String `tfsdk:"backup_id"`
	InstanceID  types.String `tfsdk:"instance_id"`
	PointInTime types.String `tfsdk:"point_in_time"`
}

// aclEntries reads the planned ACL as API entries.
func (m *instanceModel) aclEntries(ctx context.Context) ([]client.AclEntry, diag.Diagnostics) {
	var entries []aclEntryModel
	var diags diag.Diagnostics
	if !m.ACL.IsNull() && !m.ACL.IsUnknown() {
		diags = m.ACL.ElementsAs(ctx, &entries, false)
	}
	out := make([]client.AclEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, client.AclEntry{CIDR: e.CIDR.ValueString(), Description: e.Description.ValueString()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR < out[j].CIDR })
	return out, diags
}

// configStrings reads the planned configuration.
func (m *instanceModel) configStrings(ctx context.Context) (map[string]string, diag.Diagnostics) {
	out := map[string]string{}
	if m.Config.IsNull() || m.Config.IsUnknown() {
		return out, nil
	}
	return out, m.Config.ElementsAs(ctx, &out, false)
}

// fromAPI fills the model from what the API answered. Fields the API does not return (region,
// restore_from, timeouts) keep their prior values; empty collections stay null where the configuration
// left them out, and an ACL description "" stays as written, so a read never invents a difference.
func (m *instanceModel) fromAPI(ctx context.Context, inst *client.Instance) diag.Diagnostics {
	var diags diag.Diagnostics
	m.ID = types.StringValue(inst.ID)
	m.Project = types.StringValue(inst.Project)
	m.Name = types.StringValue(inst.Name)
	m.Service = types.StringValue(inst.Service)
	m.Version = types.StringValue(inst.Version)
	m.Plan = types.StringValue(inst.Plan)
	m.StorageGiB = types.Int64Value(inst.StorageGiB)
	m.Description = types.StringValue(inst.Description)
	m.DeletionProtection = types.BoolValue(inst.DeletionProtection)
	// `cluster` is where the instance was placed; a platform admin may move it later (a drain, a
	// migration), which is no change of the configuration: replacing the instance over it would destroy
	// its data. So a placement once read is kept, and where it runs now is `running_cluster`.
	if m.Cluster.IsNull() || m.Cluster.IsUnknown() {
		m.Cluster = types.StringValue(inst.Cluster)
	}
	m.RunningCluster = types.StringValue(inst.Cluster)
	m.InstanceVersion = types.Int64Value(int64(inst.InstanceVersion))
	m.Status = types.StringValue(inst.Status.State)
	m.CreatedAt = types.StringValue(inst.CreatedAt)
	m.RestoredFromBackup = types.StringNull()
	if inst.RestoredFrom != nil {
		m.RestoredFromBackup = types.StringValue(inst.RestoredFrom.BackupID)
	}

	if len(inst.Config) == 0 && (m.Config.IsNull() || m.Config.IsUnknown()) {
		m.Config = types.MapNull(types.StringType)
	} else {
		cfg := make(map[string]string, len(inst.Config))
		for k, v := range inst.Config {
			cfg[k] = client.ConfigString(v)
		}
		var d diag.Diagnostics
		m.Config, d = types.MapValueFrom(ctx, types.StringType, cfg)
		diags.Append(d...)
	}

	if len(inst.ACL) == 0 && (m.ACL.IsNull() || m.ACL.IsUnknown()) {
		m.ACL = types.SetNull(aclEntryType)
	} else {
		explicitEmpty := map[string]bool{}
		if !m.ACL.IsNull() && !m.ACL.IsUnknown() {
			var prior []aclEntryModel
			diags.Append(m.ACL.ElementsAs(ctx, &prior, false)...)
			for _, p := range prior {
				if !p.Description.IsNull() && p.Description.ValueString() == "" {
					explicitEmpty[p.CIDR.ValueString()] = true
				}
			}
		}
		entries := make([]aclEntryModel, 0, len(inst.ACL))
		public := false
		for _, e := range inst.ACL {
			d := types.StringValue(e.Description)
			if e.Description == "" && !explicitEmpty[e.CIDR] {
				d = types.StringNull()
			}
			entries = append(entries, aclEntryModel{CIDR: types.StringValue(e.CIDR), Description: d})
			public = public || e.CIDR == "0.0.0.0/0" || e.CIDR == "::/0"
		}
		var d diag.Diagnostics
		m.ACL, d = types.SetValueFrom(ctx, aclEntryType, entries)
		diags.Append(d...)
		if public {
			// The API accepted an ACL admitting every address, so it was sent with allow_public.
			m.AllowPublic = types.BoolValue(true)
		}
	}
	if m.AllowPublic.IsNull() || m.AllowPublic.IsUnknown() {
		m.AllowPublic = types.BoolValue(false)
	}

	var d diag.Diagnostics
	m.Resources, d = types.ObjectValue(resourcesType, map[string]attr.Value{
		"cpu_millis": types.Int64Value(inst.Resources.CPUMillis),
		"memory_mib": types.Int64Value(inst.Resources.MemoryMiB),
		"replicas":   types.Int64Value(inst.Resources.Replicas),
	})
	diags.Append(d...)
	if inst.Connection != nil {
		m.Connection, d = types.ObjectValue(connectionType, map[string]attr.Value{
			"host": types.StringValue(inst.Connection.Host),
			"port": types.Int64Value(inst.Connection.Port),
		})
		diags.Append(d...)
	} else {
		m.Connection = types.ObjectNull(connectionType)
	}
	if m.CredentialsRotation.IsUnknown() {
		m.CredentialsRotation = types.StringNull()
	}
	if m.Region.IsUnknown() {
		m.Region = types.StringNull()
	}
	if m.RestoreFrom.IsUnknown() {
		m.RestoreFrom = types.ObjectNull(restoreFromType)
	}
	if m.Timeouts.IsUnknown() {
		m.Timeouts = timeouts.Value{Object: types.ObjectNull(m.Timeouts.AttributeTypes(ctx))}
	}
	return diags
}

// nullUnknowns replaces every unknown value by null: the state written before waiting for a create
// must be wholly known.
func (m *instanceModel) nullUnknowns() {
	s := func(v *types.String) {
		if v.IsUnknown() {
			*v = types.StringNull()
		}
	}
	for _, v := range []*types.String{&m.Project, &m.Cluster, &m.RunningCluster, &m.Region, &m.CredentialsRotation, &m.RestoredFromBackup, &m.Description, &m.Status, &m.CreatedAt, &m.Version, &m.Plan} {
		s(v)
	}
	if m.StorageGiB.IsUnknown() {
		m.StorageGiB = types.Int64Null()
	}
	if m.InstanceVersion.IsUnknown() {
		m.InstanceVersion = types.Int64Null()
	}
	if m.DeletionProtection.IsUnknown() {
		m.DeletionProtection = types.BoolNull()
	}
	if m.AllowPublic.IsUnknown() {
		m.AllowPublic = types.BoolNull()
	}
	if m.Config.IsUnknown() {
		m.Config = types.MapNull(types.StringType)
	}
	if m.ACL.IsUnknown() {
		m.ACL = types.SetNull(aclEntryType)
	}
	if m.Resources.IsUnknown() {
		m.Resources = types.ObjectNull(resourcesType)
	}
	if m.Connection.IsUnknown() {
		m.Connection = types.ObjectNull(connectionType)
	}
	if m.RestoreFrom.IsUnknown() {
		m.RestoreFrom = types.ObjectNull(restoreFromType)
	}
}

// rawConfig converts the planned configuration to the API's JSON values, checked against the catalog.
func rawConfig(sc *client.ServiceCatalog, version string, cfg map[string]string) (map[string]json.RawMessage, map[string]error) {
	out := make(map[string]json.RawMessage, len(cfg))
	bad := map[string]error{}
	for k, v := range cfg {
		raw, err := sc.ConfigValue(version, k, v)
		if err != nil {
			bad[k] = err
			continue
		}
		out[k] = raw
	}
	return out, bad
}
