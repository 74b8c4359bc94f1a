package provider

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

var (
	_ resource.ResourceWithConfigure   = (*instanceUserResource)(nil)
	_ resource.ResourceWithImportState = (*instanceUserResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*instanceUserResource)(nil)
)

// NewInstanceUserResource is cp_instance_user: a per-application database user of an instance
// (`…/instances/{id}/users`, README "Users"), with a role from the service's catalog.
func NewInstanceUserResource() resource.Resource { return &instanceUserResource{} }

type instanceUserResource struct{ data *providerData }

type instanceUserModel struct {
	ID               types.String   `tfsdk:"id"`
	Project          types.String   `tfsdk:"project"`
	InstanceID       types.String   `tfsdk:"instance_id"`
	Name             types.String   `tfsdk:"name"`
	Role             types.String   `tfsdk:"role"`
	PasswordRotation types.String   `tfsdk:"password_rotation"`
	Password         types.String   `tfsdk:"password"`
	Host             types.String   `tfsdk:"host"`
	Port             types.Int64    `tfsdk:"port"`
	State            types.String   `tfsdk:"state"`
	Timeouts         timeouts.Value `tfsdk:"timeouts"`
}

// userName is what the API takes (domain/src/instance/users.rs, check_name): 1 to 63 of a-z, 0-9 and _,
// starting with a letter and not ending with _. Reserved names are left to the API, which names them.
var userName = regexp.MustCompile(`^[a-z]([a-z0-9_]{0,61}[a-z0-9])?$`)

func (r *instanceUserResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance_user"
}

func (r *instanceUserResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A per-application database user of an instance (`…/instances/{id}/users`) with a role from " +
			"the service's catalog (`cp_catalog`'s `user_roles`: PostgreSQL `readwrite`/`readonly`, MongoDB " +
			"`readWrite`/`read`). Create returns once the engine reports the user applied; destroy once the engine " +
			"revoked it. The password is made in the instance's cluster, never by the control plane: it is read " +
			"from `…/users/{name}/credentials` after creation and at every refresh (so a rotation made elsewhere " +
			"shows), and kept in the state as a sensitive value — protect the state accordingly. `name`, `role`, " +
			"`instance_id` and `project` replace the user; `password_rotation` rotates its password in place. " +
			"Needs the `editor` role.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keep,
				MarkdownDescription: "`<instance_id>/<name>`."},
			"project": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "Project; defaults to the provider's. Changing it replaces the user.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()}},
			"instance_id": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "The instance (`cp_instance.<name>.id`)."},
			"name": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "The user's name in the engine: 1 to 63 lowercase letters, digits or `_`, starting with a " +
					"letter and not ending with `_`; not a reserved name (`postgres`, `admin`, `app`, `root`, `pg_…`, " +
					"`cnpg_…`, …: the API names the rule). Changing it replaces the user.",
				Validators: []validator.String{stringvalidator.RegexMatches(userName,
					"1 to 63 of a-z, 0-9 and _, starting with a letter and not ending with _")}},
			"role": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "One of the service's user roles (`cp_catalog`'s `user_roles`). Changing it replaces the user."},
			"password_rotation": schema.StringAttribute{Optional: true,
				MarkdownDescription: "A rotation trigger: changing this value (a date, a counter) from one value to another asks " +
					"the API for a new password (`POST …/users/{name}/password/rotate`), waits until the engine accepts " +
					"only the new one, and reads it into `password`. Not read back from the API: setting it where it " +
					"had no value (at creation, after an import, or added later) records it without rotating."},
			"password": schema.StringAttribute{Computed: true, Sensitive: true, PlanModifiers: keep,
				MarkdownDescription: "The user's password, as the instance's cluster holds it."},
			"host": schema.StringAttribute{Computed: true, PlanModifiers: keep,
				MarkdownDescription: "Host name to connect to inside the instance's cluster (the instance's `connection` is the address from outside)."},
			"port": schema.Int64Attribute{Computed: true,
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
				MarkdownDescription: "Port."},
			"state": schema.StringAttribute{Computed: true, PlanModifiers: keep,
				MarkdownDescription: "`applied`, `pending` or `error`, as last read."},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *instanceUserResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	r.data = data
}

// rotationAsked tells whether the plan changes the rotation trigger from one value to another.
func rotationAsked(plan, state *instanceUserModel) bool {
	return !plan.PasswordRotation.IsNull() && !plan.PasswordRotation.IsUnknown() && !state.PasswordRotation.IsNull() &&
		!plan.PasswordRotation.Equal(state.PasswordRotation)
}

// ModifyPlan shows a rotation's new password as known after apply; every other update keeps it.
func (r *instanceUserResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || req.State.Raw.IsNull() {
		return // destroy or create
	}
	var plan, state instanceUserModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if rotationAsked(&plan, &state) {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("password"), types.StringUnknown())...)
	}
}

// fromAPI copies what the API says of the user and, when read, its credentials.
func (m *instanceUserModel) fromAPI(u *client.User, creds *client.Credentials) {
	m.ID = types.StringValue(m.InstanceID.ValueString() + "/" + u.Name)
	m.Name = types.StringValue(u.Name)
	m.Role = types.StringValue(u.Role)
	m.State = types.StringValue(u.State)
	if creds != nil {
		m.Password = types.StringValue(creds.Password)
		m.Host = types.StringValue(creds.Host)
		m.Port = types.Int64Value(creds.Port)
	}
}

// readCredentials reads the user's credentials from the cluster; with `keep` set, a cluster that cannot
// answer now (its agent silent: 503, or the password not made yet: 409) leaves the last read value (none,
// for a user whose creation failed) and warns instead of failing the refresh.
func (r *instanceUserResource) readCredentials(ctx context.Context, m *instanceUserModel, keep bool, diags *diag.Diagnostics) *client.Credentials {
	creds, err := r.data.client.GetUserCredentials(ctx, m.Project.ValueString(), m.InstanceID.ValueString(), m.Name.ValueString())
	if err == nil {
		return creds
	}
	if keep && (client.IsStatus(err, http.StatusServiceUnavailable) || client.IsStatus(err, http.StatusConflict)) {
		diags.AddWarning("User's password not read", fmt.Sprintf("The instance's cluster did not tell the password of %s now; "+
			"the state keeps the one last read.\n\n%s", m.Name.ValueString(), err))
		return nil
	}
	diags.AddError("Could not read the user's credentials", err.Error())
	return nil
}

func (r *instanceUserResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan instanceUserModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if plan.Project.IsUnknown() || plan.Project.IsNull() {
		if r.data.project == "" {
			resp.Diagnostics.AddAttributeError(path.Root("project"), "No project", "Set project here or in the provider (CP_PROJECT).")
			return
		}
		plan.Project = types.StringValue(r.data.project)
	}
	project, instance, name := plan.Project.ValueString(), plan.InstanceID.ValueString(), plan.Name.ValueString()
	acc, err := r.data.client.CreateUser(ctx, project, instance, client.UserRequest{Name: name, Role: plan.Role.ValueString()}, client.NewIdempotencyKey())
	if err != nil {
		resp.Diagnostics.AddError("Could not create the user", err.Error())
		return
	}
	// In the state before waiting: a user the engine refuses, or one that outlasts the timeout, is
	// tainted (and deleted by the next apply), not lost.
	partial := plan
	partial.ID = types.StringValue(instance + "/" + name)
	partial.State = types.StringValue("pending")
	partial.Password, partial.Host, partial.Port = types.StringNull(), types.StringNull(), types.Int64Null()
	resp.Diagnostics.Append(resp.State.Set(ctx, &partial)...)
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("User not applied", explainDeadline(err).Error())
		return
	}
	if !r.readApplied(ctx, &plan, project, instance, name, &resp.Diagnostics) {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// readApplied fills m with the user as the API shows it once its operation succeeded, and its password
// as the cluster tells it now; false when either cannot be read (the error is in diags).
func (r *instanceUserResource) readApplied(ctx context.Context, m *instanceUserModel, project, instance, name string, diags *diag.Diagnostics) bool {
	u, err := r.data.client.GetUser(ctx, project, instance, name)
	if err != nil {
		diags.AddError("Could not read the user", err.Error())
		return false
	}
	creds := r.readCredentials(ctx, m, false, diags)
	if creds == nil {
		return false
	}
	m.fromAPI(u, creds)
	return true
}

func (r *instanceUserResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state instanceUserModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if state.Project.IsNull() || state.Project.ValueString() == "" {
		state.Project = types.StringValue(r.data.project) // imported as instance_id/name
	}
	u, err := r.data.client.GetUser(ctx, state.Project.ValueString(), state.InstanceID.ValueString(), state.Name.ValueString())
	if client.IsStatus(err, http.StatusNotFound) {
		resp.State.RemoveResource(ctx) // the user, or its instance, is gone
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not read the user", err.Error())
		return
	}
	// A cluster that cannot tell the password now never fails a refresh: a tainted user (its creation
	// failed, no password read) must still be planned for replacement.
	creds := r.readCredentials(ctx, &state, true, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	state.fromAPI(u, creds)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update rotates the password when the trigger changed; otherwise only the trigger's value (or the
// timeouts) change.
func (r *instanceUserResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state instanceUserModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	plan.ID, plan.Project, plan.State = state.ID, state.Project, state.State
	plan.Password, plan.Host, plan.Port = state.Password, state.Host, state.Port
	if rotationAsked(&plan, &state) {
		timeout, d := plan.Timeouts.Update(ctx, 10*time.Minute)
		resp.Diagnostics.Append(d...)
		if resp.Diagnostics.HasError() {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		project, instance, name := state.Project.ValueString(), state.InstanceID.ValueString(), state.Name.ValueString()
		acc, err := r.data.client.RotateUserPassword(ctx, project, instance, name)
		if err != nil {
			resp.Diagnostics.AddError("Could not rotate the user's password", err.Error())
			return
		}
		if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
			resp.Diagnostics.AddError("Password rotation failed", explainDeadline(err).Error())
			return
		}
		if !r.readApplied(ctx, &plan, project, instance, name, &resp.Diagnostics) {
			return
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *instanceUserResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state instanceUserModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	project := state.Project.ValueString()
	acc, err := r.data.client.DeleteUser(ctx, project, state.InstanceID.ValueString(), state.Name.ValueString())
	if client.IsStatus(err, http.StatusNotFound) {
		return // already gone, or its instance is
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not delete the user", err.Error())
		return
	}
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("User deletion did not finish", explainDeadline(err).Error())
	}
}

// ImportState takes `project/instance_id/name`, or `instance_id/name` in the provider's project.
func (r *instanceUserResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts := strings.Split(req.ID, "/")
	if len(parts) == 2 {
		parts = append([]string{r.data.project}, parts...)
	}
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		resp.Diagnostics.AddError("Invalid import id",
			fmt.Sprintf("expected project/instance_id/name (or instance_id/name with the provider's project), got %q", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("instance_id"), parts[1])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), parts[2])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[1]+"/"+parts[2])...)
}
