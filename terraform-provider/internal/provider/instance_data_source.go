package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var _ datasource.DataSourceWithConfigure = (*instanceDataSource)(nil)

// NewInstanceDataSource is cp_instance (data): a live instance looked up by name.
func NewInstanceDataSource() datasource.DataSource { return &instanceDataSource{} }

type instanceDataSource struct{ data *providerData }

type instanceDataModel struct {
	Project            types.String `tfsdk:"project"`
	Name               types.String `tfsdk:"name"`
	ID                 types.String `tfsdk:"id"`
	Service            types.String `tfsdk:"service"`
	Version            types.String `tfsdk:"version"`
	Plan               types.String `tfsdk:"plan"`
	StorageGiB         types.Int64  `tfsdk:"storage_gib"`
	Config             types.Map    `tfsdk:"config"`
	Description        types.String `tfsdk:"description"`
	DeletionProtection types.Bool   `tfsdk:"deletion_protection"`
	Cluster            types.String `tfsdk:"cluster"`
	ACL                types.Set    `tfsdk:"acl"`
	Connection         types.Object `tfsdk:"endpoint"`
	InstanceVersion    types.Int64  `tfsdk:"instance_version"`
	Status             types.String `tfsdk:"status"`
}

func (d *instanceDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (d *instanceDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A live instance of a project, by name.",
		Attributes: map[string]schema.Attribute{
			"project":             schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Project; defaults to the provider's."},
			"name":                schema.StringAttribute{Required: true, MarkdownDescription: "Name of the instance."},
			"id":                  schema.StringAttribute{Computed: true, MarkdownDescription: "Its id."},
			"service":             schema.StringAttribute{Computed: true, MarkdownDescription: "Service."},
			"version":             schema.StringAttribute{Computed: true, MarkdownDescription: "Service version."},
			"plan":                schema.StringAttribute{Computed: true, MarkdownDescription: "Plan."},
			"storage_gib":         schema.Int64Attribute{Computed: true, MarkdownDescription: "Storage in GiB."},
			"config":              schema.MapAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: "Configuration."},
			"description":         schema.StringAttribute{Computed: true, MarkdownDescription: "Description."},
			"deletion_protection": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether deletion is refused."},
			"cluster":             schema.StringAttribute{Computed: true, MarkdownDescription: "Cluster it is placed on."},
			"acl": schema.SetNestedAttribute{Computed: true, MarkdownDescription: "Network ACL.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"cidr":        schema.StringAttribute{Computed: true, MarkdownDescription: "Block."},
					"description": schema.StringAttribute{Computed: true, MarkdownDescription: "Description."},
				}}},
			"endpoint": schema.SingleNestedAttribute{Computed: true, MarkdownDescription: "Where clients connect from outside.",
				Attributes: map[string]schema.Attribute{
					"host": schema.StringAttribute{Computed: true, MarkdownDescription: "Host."},
					"port": schema.Int64Attribute{Computed: true, MarkdownDescription: "Port."},
				}},
			"instance_version": schema.Int64Attribute{Computed: true, MarkdownDescription: "Version of the desired state (ETag)."},
			"status":           schema.StringAttribute{Computed: true, MarkdownDescription: "`healthy`, `reconciling` or `error`."},
		},
	}
}

func (d *instanceDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	d.data = data
}

func (d *instanceDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m instanceDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	project := firstNonEmpty(m.Project.ValueString(), d.data.project)
	inst, err := d.data.client.FindInstanceByName(ctx, project, m.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Could not look the instance up", err.Error())
		return
	}
	if inst == nil {
		resp.Diagnostics.AddError("No such instance", fmt.Sprintf("project %s has no live instance named %q", project, m.Name.ValueString()))
		return
	}
	// The resource's conversion, with empty collections as empty (not null): nothing here is configured.
	full := instanceModel{Config: types.MapValueMust(types.StringType, nil), ACL: types.SetValueMust(aclEntryType, nil)}
	resp.Diagnostics.Append(full.fromAPI(ctx, inst)...)
	m = instanceDataModel{
		Project: full.Project, Name: full.Name, ID: full.ID, Service: full.Service, Version: full.Version, Plan: full.Plan,
		StorageGiB: full.StorageGiB, Config: full.Config, Description: full.Description, DeletionProtection: full.DeletionProtection,
		Cluster: full.Cluster, ACL: full.ACL, Connection: full.Connection, InstanceVersion: full.InstanceVersion, Status: full.Status,
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
