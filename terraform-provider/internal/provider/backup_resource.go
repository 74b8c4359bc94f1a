package provider

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

var (
	_ resource.ResourceWithConfigure   = (*backupResource)(nil)
	_ resource.ResourceWithImportState = (*backupResource)(nil)
)

// NewBackupResource is cp_backup: an on-demand backup of an instance (`POST …/instances/{id}/backups`).
//
// Restoring is not a resource of its own: a new instance starts from a backup through cp_instance's
// `restore_from` (a provision argument, so it replaces), which is what the API offers for every service;
// restoring in place (`POST …/restore`) is an imperative act on a live instance that a declarative
// resource could only express as a trigger, and PostgreSQL refuses it.
func NewBackupResource() resource.Resource { return &backupResource{} }

type backupResource struct{ data *providerData }

type backupModel struct {
	ID          types.String   `tfsdk:"id"`
	Project     types.String   `tfsdk:"project"`
	InstanceID  types.String   `tfsdk:"instance_id"`
	State       types.String   `tfsdk:"state"`
	SizeBytes   types.Int64    `tfsdk:"size_bytes"`
	SHA256      types.String   `tfsdk:"sha256"`
	Location    types.String   `tfsdk:"location"`
	RequestedAt types.String   `tfsdk:"requested_at"`
	CompletedAt types.String   `tfsdk:"completed_at"`
	Timeouts    timeouts.Value `tfsdk:"timeouts"`
}

func (r *backupResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backup"
}

func (r *backupResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc,
			PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "An on-demand backup of an instance. Create returns once the artifact is in the object store " +
			"(a failed backup shows the cluster's reason and is left tainted); destroy deletes the artifact (the API " +
			"keeps the record, marked deleted). A backup never changes: any argument change makes a new one. " +
			"Restore into a new instance with `cp_instance.restore_from`.",
		Attributes: map[string]schema.Attribute{
			"id": computed("Backup id (also the id of the operation that made it)."),
			"project": schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Project; defaults to the provider's.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()}},
			"instance_id": schema.StringAttribute{Required: true, MarkdownDescription: "The instance to back up (`cp_instance.<name>.id`).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"state":        schema.StringAttribute{Computed: true, MarkdownDescription: "`completed` once made (as last read)."},
			"size_bytes":   schema.Int64Attribute{Computed: true, MarkdownDescription: "The artifact's size in bytes."},
			"sha256":       schema.StringAttribute{Computed: true, MarkdownDescription: "The artifact's SHA-256, hex."},
			"location":     schema.StringAttribute{Computed: true, MarkdownDescription: "The artifact's key in the backup bucket."},
			"requested_at": computed("When it was asked for."),
			"completed_at": schema.StringAttribute{Computed: true, MarkdownDescription: "When it completed."},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (r *backupResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
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

func (m *backupModel) fromAPI(b *client.Backup) {
	m.ID = types.StringValue(b.ID)
	m.InstanceID = types.StringValue(b.InstanceID)
	m.State = types.StringValue(b.State)
	m.SizeBytes = types.Int64PointerValue(b.SizeBytes)
	m.SHA256 = types.StringPointerValue(b.SHA256)
	m.Location = types.StringPointerValue(b.Location)
	m.RequestedAt = types.StringValue(b.RequestedAt)
	m.CompletedAt = types.StringPointerValue(b.CompletedAt)
}

func (r *backupResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 30*time.Minute)
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
	project, instance := plan.Project.ValueString(), plan.InstanceID.ValueString()
	acc, err := r.data.client.CreateBackup(ctx, project, instance, client.NewIdempotencyKey())
	if err != nil {
		resp.Diagnostics.AddError("Could not ask for a backup", err.Error())
		return
	}
	// In the state before waiting: a backup that fails or outlasts the timeout is tainted, not lost.
	partial := plan
	partial.ID = types.StringValue(acc.Operation.ID)
	partial.State = types.StringValue("requested")
	partial.SizeBytes, partial.SHA256, partial.Location = types.Int64Null(), types.StringNull(), types.StringNull()
	partial.RequestedAt, partial.CompletedAt = types.StringNull(), types.StringNull()
	resp.Diagnostics.Append(resp.State.Set(ctx, &partial)...)
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("Backup not made", explainDeadline(err).Error())
		return
	}
	b, err := r.data.client.GetBackup(ctx, project, instance, acc.Operation.ID, acc.Sequence)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup", err.Error())
		return
	}
	plan.fromAPI(b)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *backupResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	b, err := r.data.client.GetBackup(ctx, state.Project.ValueString(), state.InstanceID.ValueString(), state.ID.ValueString(), 0)
	if client.IsStatus(err, http.StatusNotFound) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup", err.Error())
		return
	}
	if b.State == "deleting" || b.State == "deleted" {
		resp.State.RemoveResource(ctx)
		return
	}
	state.fromAPI(b)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update is never called with a change (every argument replaces); it keeps a timeouts-only change.
func (r *backupResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *backupResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 20*time.Minute)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	project := state.Project.ValueString()
	for {
		acc, err := r.data.client.DeleteBackup(ctx, project, state.InstanceID.ValueString(), state.ID.ValueString())
		if client.IsStatus(err, http.StatusNotFound) {
			return
		}
		if client.IsStatus(err, http.StatusConflict) && ctx.Err() == nil {
			// Still being made (a tainted backup being replaced): it can be deleted once it ends.
			time.Sleep(client.PollInterval)
			continue
		}
		if err != nil {
			resp.Diagnostics.AddError("Could not delete the backup", err.Error())
			return
		}
		if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
			resp.Diagnostics.AddError("Backup deletion did not finish", explainDeadline(err).Error())
		}
		return
	}
}

// ImportState takes `project/instance_id/backup_id`.
func (r *backupResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts := strings.Split(req.ID, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("expected project/instance_id/backup_id, got %q", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("instance_id"), parts[1])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[2])...)
}
