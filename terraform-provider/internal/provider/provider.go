// Package provider is the `cp` provider: resources, data sources and ephemeral resources over the
// control plane's HTTP API (package client).
//
// The type name is `cp`: the short name the project already uses for itself (the `cp-api` process, the
// `CP_*` environment of every component, `cpctl`, the `Cp-*` headers), so resources read `cp_instance`.
package provider

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

// Address is the provider's registry address. Tests run it as registry.terraform.io/hashicorp/cp
// (terraform-plugin-testing's default namespace) or registry.opentofu.org/hashicorp/cp.
const Address = "registry.terraform.io/example/cp"

// Environment variables the provider reads.
const (
	EnvToken    = "CP_TOKEN"
	EnvEndpoint = "CP_ENDPOINT"
	EnvProject  = "CP_PROJECT"
)

// DefaultEndpoint is where `./dev up` serves the API.
const DefaultEndpoint = "http://127.0.0.1:8080"

var (
	_ provider.Provider                       = (*cpProvider)(nil)
	_ provider.ProviderWithEphemeralResources = (*cpProvider)(nil)
)

type cpProvider struct{ version string }

// New returns the provider factory providerserver.Serve and the tests take.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &cpProvider{version: version} }
}

type providerModel struct {
	Endpoint types.String `tfsdk:"endpoint"`
	Project  types.String `tfsdk:"project"`
}

// providerData is what Configure hands every resource and data source.
type providerData struct {
	client  *client.Client
	project string
}

func (p *cpProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "cp"
	resp.Version = p.version
}

func (p *cpProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Manages databases of the managed-services control plane through its HTTP API. " +
			"The API token is read from the environment variable `CP_TOKEN` only, so it never appears in a " +
			"configuration or a plan.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "Base URL of the API (`CP_ENDPOINT`; default `" + DefaultEndpoint + "`, where `./dev up` serves it).",
				Optional:            true,
			},
			"project": schema.StringAttribute{
				MarkdownDescription: "Project that resources without their own `project` belong to (`CP_PROJECT`).",
				Optional:            true,
			},
		},
	}
}

func (p *cpProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	endpoint := firstNonEmpty(cfg.Endpoint.ValueString(), os.Getenv(EnvEndpoint), DefaultEndpoint)
	project := firstNonEmpty(cfg.Project.ValueString(), os.Getenv(EnvProject))
	if cfg.Endpoint.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Unknown endpoint",
			"The endpoint must be known when the provider is configured.")
		return
	}
	token := os.Getenv(EnvToken)
	if token == "" {
		resp.Diagnostics.AddWarning("No API token",
			"CP_TOKEN is not set: every request but the catalog will be refused (401). `./dev up` keeps a "+
				"local token in .local/api-token: export CP_TOKEN=$(cat .local/api-token).")
	}
	userAgent := fmt.Sprintf("terraform-provider-cp/%s (%s)", p.version, req.TerraformVersion)
	data := &providerData{client: client.New(endpoint, token, userAgent), project: project}
	resp.DataSourceData = data
	resp.ResourceData = data
	resp.EphemeralResourceData = data
}

func (p *cpProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewInstanceResource, NewBackupScheduleResource, NewBackupResource, NewInstanceUserResource}
}

func (p *cpProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewCatalogDataSource, NewInstanceDataSource}
}

func (p *cpProvider) EphemeralResources(context.Context) []func() ephemeral.EphemeralResource {
	return []func() ephemeral.EphemeralResource{NewCredentialsEphemeralResource}
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
