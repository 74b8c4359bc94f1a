package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

var _ datasource.DataSourceWithConfigure = (*catalogDataSource)(nil)

// NewCatalogDataSource is cp_catalog: the served catalog (`GET /v1/catalog`).
func NewCatalogDataSource() datasource.DataSource { return &catalogDataSource{} }

type catalogDataSource struct{ data *providerData }

type catalogModel struct {
	Service  types.String          `tfsdk:"service"`
	Services []catalogServiceModel `tfsdk:"services"`
}

type catalogServiceModel struct {
	Service     types.String          `tfsdk:"service"`
	UpgradePath types.String          `tfsdk:"upgrade_path"`
	Versions    []catalogVersionModel `tfsdk:"versions"`
	Plans       []catalogPlanModel    `tfsdk:"plans"`
	Parameters  []catalogParamModel   `tfsdk:"parameters"`
	UserRoles   []types.String        `tfsdk:"user_roles"`
}

type catalogVersionModel struct {
	Version    types.String   `tfsdk:"version"`
	UpgradesTo []types.String `tfsdk:"upgrades_to"`
	Parameters []types.String `tfsdk:"parameters"`
}

type catalogPlanModel struct {
	Name       types.String `tfsdk:"name"`
	CPUMillis  types.Int64  `tfsdk:"cpu_millis"`
	MemoryMiB  types.Int64  `tfsdk:"memory_mib"`
	Replicas   types.Int64  `tfsdk:"replicas"`
	StorageGiB types.Int64  `tfsdk:"storage_gib"`
}

type catalogParamModel struct {
	Name        types.String   `tfsdk:"name"`
	Type        types.String   `tfsdk:"type"`
	Minimum     types.Int64    `tfsdk:"minimum"`
	Maximum     types.Int64    `tfsdk:"maximum"`
	Values      []types.String `tfsdk:"values"`
	Apply       types.String   `tfsdk:"apply"`
	Description types.String   `tfsdk:"description"`
	Default     types.String   `tfsdk:"default"`
	Since       types.String   `tfsdk:"since"`
}

func (d *catalogDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_catalog"
}

func (d *catalogDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	num := func(desc string) schema.Int64Attribute {
		return schema.Int64Attribute{Computed: true, MarkdownDescription: desc}
	}
	strs := func(desc string) schema.ListAttribute {
		return schema.ListAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The served catalog: services, their versions with upgrade paths, plans and configuration parameters.",
		Attributes: map[string]schema.Attribute{
			"service": schema.StringAttribute{Optional: true, MarkdownDescription: "Only this service."},
			"services": schema.ListNestedAttribute{
				Computed: true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"service":      str("The service."),
					"upgrade_path": str("`any_newer` or `one_major_at_a_time`."),
					"user_roles":   strs("Roles a `cp_instance_user` of this service may have."),
					"versions": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "Offered versions, oldest first.",
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"version":     str("The version."),
							"upgrades_to": strs("Versions an instance on this one may be upgraded to."),
							"parameters":  strs("Parameters an instance on this version may set."),
						}}},
					"plans": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "Offered plans.",
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"name":        str("Plan name."),
							"cpu_millis":  num("CPU per replica, in millicores."),
							"memory_mib":  num("Memory per replica, in MiB."),
							"replicas":    num("Replicas."),
							"storage_gib": num("Storage an instance starts with, and the least it may have."),
						}}},
					"parameters": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "Configuration parameters.",
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"name":        str("Key in an instance's `config`."),
							"type":        str("`integer`, `boolean` or `enum`."),
							"minimum":     num("Smallest value (integers)."),
							"maximum":     num("Largest value (integers)."),
							"values":      strs("Allowed values (enums)."),
							"apply":       str("`dynamic`, `restart` or `immutable`."),
							"description": str("What it sets."),
							"default":     str("What the service runs with while it is not set, when known."),
							"since":       str("First version that has it."),
						}}},
				}},
			},
		},
	}
}

func (d *catalogDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
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

func (d *catalogDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m catalogModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cat, err := d.data.client.GetCatalog(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the catalog", err.Error())
		return
	}
	m.Services = []catalogServiceModel{}
	for _, s := range cat.Services {
		if !m.Service.IsNull() && m.Service.ValueString() != s.Service {
			continue
		}
		m.Services = append(m.Services, serviceModel(s))
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func serviceModel(s client.ServiceCatalog) catalogServiceModel {
	out := catalogServiceModel{Service: types.StringValue(s.Service), UpgradePath: types.StringValue(s.UpgradePath),
		Versions: []catalogVersionModel{}, Plans: []catalogPlanModel{}, Parameters: []catalogParamModel{},
		UserRoles: stringList(s.UserRoles)}
	for _, v := range s.Versions {
		out.Versions = append(out.Versions, catalogVersionModel{Version: types.StringValue(v.Version),
			UpgradesTo: stringList(v.UpgradesTo), Parameters: stringList(v.Parameters)})
	}
	for _, p := range s.Plans {
		out.Plans = append(out.Plans, catalogPlanModel{Name: types.StringValue(p.Name),
			CPUMillis: types.Int64Value(p.Resources.CPUMillis), MemoryMiB: types.Int64Value(p.Resources.MemoryMiB),
			Replicas: types.Int64Value(p.Resources.Replicas), StorageGiB: types.Int64Value(p.StorageGiB)})
	}
	for _, p := range s.Parameters {
		pm := catalogParamModel{Name: types.StringValue(p.Name), Type: types.StringValue(p.Type),
			Minimum: types.Int64PointerValue(p.Minimum), Maximum: types.Int64PointerValue(p.Maximum),
			Values: stringList(p.Values), Apply: types.StringValue(p.Apply), Description: types.StringValue(p.Description),
			Default: types.StringNull(), Since: types.StringPointerValue(p.Since)}
		if len(p.Default) > 0 {
			pm.Default = types.StringValue(client.ConfigString(p.Default))
		}
		if p.Values == nil {
			pm.Values = nil
		}
		out.Parameters = append(out.Parameters, pm)
	}
	return out
}

func stringList(in []string) []types.String {
	out := make([]types.String, 0, len(in))
	for _, s := range in {
		out = append(out, types.StringValue(s))
	}
	return out
}
