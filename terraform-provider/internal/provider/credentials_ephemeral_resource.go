package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var (
	_ ephemeral.EphemeralResource              = (*credentialsEphemeralResource)(nil)
	_ ephemeral.EphemeralResourceWithConfigure = (*credentialsEphemeralResource)(nil)
)

// NewCredentialsEphemeralResource is cp_instance_credentials: an ephemeral resource (Terraform ≥ 1.10,
// OpenTofu ≥ 1.11), whose result exists only while Terraform runs and is never written to a plan or the
// state (framework docs: "Ephemeral Resources", developer.hashicorp.com/terraform/plugin/framework/ephemeral-resources).
func NewCredentialsEphemeralResource() ephemeral.EphemeralResource {
	return &credentialsEphemeralResource{}
}

type credentialsEphemeralResource struct{ data *providerData }

type credentialsModel struct {
	Project    types.String `tfsdk:"project"`
	InstanceID types.String `tfsdk:"instance_id"`
	Username   types.String `tfsdk:"username"`
	Password   types.String `tfsdk:"password"`
	Host       types.String `tfsdk:"host"`
	Port       types.Int64  `tfsdk:"port"`
}

// credentialsOpened, when set (by tests), sees every opened result: tests check that the password read
// here appears nowhere in the state file.
var credentialsOpened func(username, password string)

func (e *credentialsEphemeralResource) Metadata(_ context.Context, req ephemeral.MetadataRequest, resp *ephemeral.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance_credentials"
}

func (e *credentialsEphemeralResource) Schema(_ context.Context, _ ephemeral.SchemaRequest, resp *ephemeral.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The credentials of an instance (`GET …/instances/{id}/credentials`), read from its cluster " +
			"each time Terraform runs and never stored in the plan or the state. Use it to configure another " +
			"provider (e.g. a PostgreSQL provider) or a write-only attribute. Needs the `editor` role.",
		Attributes: map[string]schema.Attribute{
			"project":     schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Project; defaults to the provider's."},
			"instance_id": schema.StringAttribute{Required: true, MarkdownDescription: "The instance's id (`cp_instance.<name>.id`)."},
			"username":    schema.StringAttribute{Computed: true, MarkdownDescription: "User to connect as."},
			"password":    schema.StringAttribute{Computed: true, Sensitive: true, MarkdownDescription: "Its password."},
			"host":        schema.StringAttribute{Computed: true, MarkdownDescription: "Host name inside the instance's cluster (the instance's `connection` is the address from outside)."},
			"port":        schema.Int64Attribute{Computed: true, MarkdownDescription: "Port."},
		},
	}
}

func (e *credentialsEphemeralResource) Configure(_ context.Context, req ephemeral.ConfigureRequest, resp *ephemeral.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	e.data = data
}

func (e *credentialsEphemeralResource) Open(ctx context.Context, req ephemeral.OpenRequest, resp *ephemeral.OpenResponse) {
	var m credentialsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	project := firstNonEmpty(m.Project.ValueString(), e.data.project)
	creds, err := e.data.client.GetCredentials(ctx, project, m.InstanceID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Could not read the credentials", err.Error())
		return
	}
	m.Project = types.StringValue(project)
	m.Username = types.StringValue(creds.Username)
	m.Password = types.StringValue(creds.Password)
	m.Host = types.StringValue(creds.Host)
	m.Port = types.Int64Value(creds.Port)
	if credentialsOpened != nil {
		credentialsOpened(creds.Username, creds.Password)
	}
	resp.Diagnostics.Append(resp.Result.Set(ctx, &m)...)
}
