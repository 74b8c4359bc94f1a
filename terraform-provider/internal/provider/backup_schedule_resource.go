package provider

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/objectvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"controlplane.local/terraform-provider-cp/internal/client"
)

const scheduleTimeout = 5 * time.Minute

var (
	_ resource.ResourceWithConfigure   = (*backupScheduleResource)(nil)
	_ resource.ResourceWithImportState = (*backupScheduleResource)(nil)
)

// NewBackupScheduleResource is cp_backup_schedule: one of an instance's backup schedules
// (`…/instances/{id}/backup-schedules`).
func NewBackupScheduleResource() resource.Resource { return &backupScheduleResource{} }

type backupScheduleResource struct{ data *providerData }

type backupScheduleModel struct {
	ID         types.String    `tfsdk:"id"`
	Project    types.String    `tfsdk:"project"`
	InstanceID types.String    `tfsdk:"instance_id"`
	Name       types.String    `tfsdk:"name"`
	Cron       types.String    `tfsdk:"cron"`
	TimeZone   types.String    `tfsdk:"time_zone"`
	Enabled    types.Bool      `tfsdk:"enabled"`
	Retention  *retentionModel `tfsdk:"retention"`
	NextRunAt  types.String    `tfsdk:"next_run_at"`
}

type retentionModel struct {
	KeepLast   types.Int64 `tfsdk:"keep_last"`
	MaxAgeDays types.Int64 `tfsdk:"max_age_days"`
}

func (r *backupScheduleResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backup_schedule"
}

func (r *backupScheduleResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A backup schedule of an instance: the control plane asks for a backup at each due time of a " +
			"five-field cron expression and expires what the retention no longer keeps. Every field but " +
			"`project` and `instance_id` changes in place. A schedule is part of its instance's desired state, " +
			"so a change to it moves the instance's `instance_version`.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "Schedule id.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"project": schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Project; defaults to the provider's.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()}},
			"instance_id": schema.StringAttribute{Required: true, MarkdownDescription: "The instance (`cp_instance.<name>.id`).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"name": schema.StringAttribute{Required: true, MarkdownDescription: "Unique among the instance's schedules; a DNS-1123 label.",
				Validators: []validator.String{stringvalidator.RegexMatches(dns1123, "must be a DNS-1123 label")}},
			"cron": schema.StringAttribute{Required: true, MarkdownDescription: "Five-field cron expression: minute hour day-of-month month day-of-week, e.g. `30 2 * * *`."},
			"time_zone": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("UTC"),
				MarkdownDescription: "IANA time zone the expression is read in."},
			"enabled": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Whether it makes backups."},
			"retention": schema.SingleNestedAttribute{Required: true, MarkdownDescription: "How long its backups are kept (at least one of the two).",
				Attributes: map[string]schema.Attribute{
					"keep_last": schema.Int64Attribute{Optional: true, MarkdownDescription: "Keep this many of its newest completed backups (1 to 1000).",
						Validators: []validator.Int64{int64validator.Between(1, 1000)}},
					"max_age_days": schema.Int64Attribute{Optional: true, MarkdownDescription: "Delete its backups older than this many days (1 to 3650).",
						Validators: []validator.Int64{int64validator.Between(1, 3650)}},
				},
				Validators: []validator.Object{objectvalidator.AtLeastOneOf(
					path.MatchRelative().AtName("keep_last"), path.MatchRelative().AtName("max_age_days"))},
			},
			"next_run_at": schema.StringAttribute{Computed: true, MarkdownDescription: "When it makes its next backup, while enabled (as last read)."},
		},
	}
}

func (r *backupScheduleResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
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

func (m *backupScheduleModel) request() client.BackupScheduleRequest {
	req := client.BackupScheduleRequest{Name: m.Name.ValueString(), Cron: m.Cron.ValueString(),
		TimeZone: m.TimeZone.ValueString(), Enabled: m.Enabled.ValueBool()}
	if m.Retention != nil {
		req.Retention = client.Retention{KeepLast: m.Retention.KeepLast.ValueInt64Pointer(), MaxAgeDays: m.Retention.MaxAgeDays.ValueInt64Pointer()}
	}
	return req
}

func (m *backupScheduleModel) fromAPI(s *client.BackupSchedule) {
	m.ID = types.StringValue(s.ID)
	m.Name = types.StringValue(s.Name)
	m.Cron = types.StringValue(s.Cron)
	m.TimeZone = types.StringValue(s.TimeZone)
	m.Enabled = types.BoolValue(s.Enabled)
	m.Retention = &retentionModel{KeepLast: types.Int64PointerValue(s.Retention.KeepLast), MaxAgeDays: types.Int64PointerValue(s.Retention.MaxAgeDays)}
	m.NextRunAt = types.StringPointerValue(s.NextRunAt)
}

func (r *backupScheduleResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan backupScheduleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if plan.Project.IsUnknown() || plan.Project.IsNull() {
		if r.data.project == "" {
			resp.Diagnostics.AddAttributeError(path.Root("project"), "No project", "Set project here or in the provider (CP_PROJECT).")
			return
		}
		plan.Project = types.StringValue(r.data.project)
	}
	ctx, cancel := context.WithTimeout(ctx, scheduleTimeout)
	defer cancel()
	project, instance := plan.Project.ValueString(), plan.InstanceID.ValueString()
	acc, id, err := r.data.client.CreateSchedule(ctx, project, instance, 0, plan.request())
	if err != nil {
		resp.Diagnostics.AddError("Could not create the backup schedule", err.Error())
		return
	}
	// As for instances: the id is in the state before the wait, so a failure leaves it tainted.
	plan.ID = types.StringValue(id)
	plan.NextRunAt = types.StringNull()
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("Backup schedule not applied", explainDeadline(err).Error())
		return
	}
	s, _, err := r.data.client.GetSchedule(ctx, project, instance, id, acc.Sequence)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup schedule", err.Error())
		return
	}
	plan.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *backupScheduleResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state backupScheduleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, _, err := r.data.client.GetSchedule(ctx, state.Project.ValueString(), state.InstanceID.ValueString(), state.ID.ValueString(), 0)
	if client.IsStatus(err, http.StatusNotFound) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup schedule", err.Error())
		return
	}
	state.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *backupScheduleResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state backupScheduleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, scheduleTimeout)
	defer cancel()
	project, instance, id := state.Project.ValueString(), state.InstanceID.ValueString(), state.ID.ValueString()
	// The ETag is the instance's; the schedule read with it must still be what Terraform last read, or
	// the change would overwrite someone else's.
	current, etag, err := r.data.client.GetSchedule(ctx, project, instance, id, 0)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup schedule", err.Error())
		return
	}
	seen := state
	seen.fromAPI(current)
	seen.NextRunAt = state.NextRunAt
	if !seen.Name.Equal(state.Name) || !seen.Cron.Equal(state.Cron) || !seen.TimeZone.Equal(state.TimeZone) ||
		!seen.Enabled.Equal(state.Enabled) || !sameRetention(seen.Retention, state.Retention) {
		resp.Diagnostics.AddError("Backup schedule changed outside Terraform — refresh",
			"The schedule is no longer what Terraform last read. Run `terraform apply -refresh-only` (or plan again), review, and apply.")
		return
	}
	acc, err := r.data.client.ReplaceSchedule(ctx, project, instance, id, etag, plan.request())
	if err != nil {
		addWriteError(&resp.Diagnostics, "Could not change the backup schedule", etag, err)
		return
	}
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("Backup schedule change failed", explainDeadline(err).Error())
		return
	}
	s, _, err := r.data.client.GetSchedule(ctx, project, instance, id, acc.Sequence)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the backup schedule", err.Error())
		return
	}
	plan.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func sameRetention(a, b *retentionModel) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.KeepLast.Equal(b.KeepLast) && a.MaxAgeDays.Equal(b.MaxAgeDays)
}

func (r *backupScheduleResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state backupScheduleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, scheduleTimeout)
	defer cancel()
	project := state.Project.ValueString()
	acc, err := r.data.client.DeleteSchedule(ctx, project, state.InstanceID.ValueString(), state.ID.ValueString())
	if client.IsStatus(err, http.StatusNotFound) {
		return
	}
	if client.IsStatus(err, http.StatusConflict) {
		// The instance is being deprovisioned: its schedules go with it.
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not delete the backup schedule", err.Error())
		return
	}
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("Backup schedule removal failed", explainDeadline(err).Error())
	}
}

// ImportState takes `project/instance_id/schedule_id`.
func (r *backupScheduleResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts := strings.Split(req.ID, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("expected project/instance_id/schedule_id, got %q", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("instance_id"), parts[1])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[2])...)
}
