package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"controlplane.local/terraform-provider-cp/internal/client"
)

// Default timeouts of the operations (overridable in a `timeouts` block).
const (
	defaultCreateTimeout = 30 * time.Minute
	defaultUpdateTimeout = 30 * time.Minute
	defaultDeleteTimeout = 20 * time.Minute
)

var (
	_ resource.Resource                   = (*instanceResource)(nil)
	_ resource.ResourceWithConfigure      = (*instanceResource)(nil)
	_ resource.ResourceWithImportState    = (*instanceResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*instanceResource)(nil)
	_ resource.ResourceWithValidateConfig = (*instanceResource)(nil)
)

// NewInstanceResource is cp_instance.
func NewInstanceResource() resource.Resource { return &instanceResource{} }

type instanceResource struct{ data *providerData }

// replaceUnlessImported replaces the instance when a creation-only argument changes, but not when the
// state has no value for it because the instance was imported (the API does not return it): an import
// followed by a plan must never destroy what was just adopted.
var replaceUnlessImported = stringplanmodifier.RequiresReplaceIf(
	func(_ context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
		resp.RequiresReplace = !req.StateValue.IsNull()
	}, "Replaces the instance, unless the prior value is unknown (after an import).", "Replaces the instance, unless the prior value is unknown (after an import).")

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (r *instanceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (r *instanceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A managed database instance (`/v1/projects/{project}/instances`). Create, update and " +
			"delete return only once the control plane's operation succeeded and the instance is healthy; an " +
			"operation that fails shows the reason the cluster's agent reported. `version`, `plan`, " +
			"`storage_gib`, `config`, `description`, `deletion_protection` and `acl` change in place; `name`, " +
			"`service`, `cluster`, `project`, `region` and `restore_from` replace the instance.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "Server-assigned id (UUIDv7).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"project": schema.StringAttribute{
				MarkdownDescription: "Project; defaults to the provider's `project`. Changing it replaces the instance.",
				Optional:            true,
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()},
				Validators:          []validator.String{stringvalidator.RegexMatches(dns1123, "must be a DNS-1123 label")},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "Name, unique in the project; a DNS-1123 label. Changing it replaces the instance.",
				Required:            true,
				PlanModifiers:       replace,
				Validators:          []validator.String{stringvalidator.RegexMatches(dns1123, "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63)")},
			},
			"service": schema.StringAttribute{
				MarkdownDescription: "Service: `postgresql`, `mongodb`, `influxdb` or `grafana`. Changing it replaces the instance.",
				Required:            true,
				PlanModifiers:       replace,
				Validators:          []validator.String{stringvalidator.OneOf("postgresql", "mongodb", "influxdb", "grafana")},
			},
			"version": schema.StringAttribute{
				MarkdownDescription: "Service version, from the catalog (`cp_catalog`). An upgrade is an in-place update along the catalog's `upgrades_to`; a downgrade is refused at plan time.",
				Required:            true,
			},
			"plan": schema.StringAttribute{
				MarkdownDescription: "Plan, from the catalog. Changes in place; without `storage_gib` the storage follows the plan's.",
				Required:            true,
			},
			"storage_gib": schema.Int64Attribute{
				MarkdownDescription: "Storage in GiB; defaults to the plan's. Grows only, in place.",
				Optional:            true,
				Computed:            true,
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"config": schema.MapAttribute{
				MarkdownDescription: "Service configuration, parameter name to value, checked against the served catalog at plan " +
					"time (type, bounds, allowed values, the version offering it). Values are written as strings or " +
					"numbers/booleans (`max_connections = 200`); integers in plain decimal form. Changes in place.",
				ElementType: types.StringType,
				Optional:    true,
			},
			"description": schema.StringAttribute{
				MarkdownDescription: "Free text, at most 256 characters.",
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString(""),
				Validators:          []validator.String{stringvalidator.LengthAtMost(256)},
			},
			"deletion_protection": schema.BoolAttribute{
				MarkdownDescription: "When true, destroying the instance fails (the API answers 409). Turning it off needs the `admin` role.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"cluster": schema.StringAttribute{
				MarkdownDescription: "Cluster to place the instance on; chosen by the placement rule when absent. Changing it replaces the instance. " +
					"A platform admin may move the instance to another cluster of its region later (a drain, a migration): that is not a change " +
					"of this attribute, which keeps the placement; `running_cluster` says where it runs.",
				Optional:      true,
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()},
			},
			"running_cluster": schema.StringAttribute{
				MarkdownDescription: "The cluster the instance runs on now, as last read: `cluster` unless the platform moved it.",
				Computed:            true,
				// Known from the last read: a plan changes nothing of where the instance runs.
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"region": schema.StringAttribute{
				MarkdownDescription: "Region to place the instance in when `cluster` is absent (used at creation only; not read back, so not set by an import). Changing it replaces the instance.",
				Optional:            true,
				PlanModifiers:       []planmodifier.String{replaceUnlessImported},
			},
			"acl": schema.SetNestedAttribute{
				MarkdownDescription: "Network ACL: who may connect, a set (order never matters) of at most 100 blocks. Empty or absent: " +
					"nothing outside the instance, and no endpoint. Changes in place.",
				Optional: true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"cidr": schema.StringAttribute{
							MarkdownDescription: "IPv4 or IPv6 block in canonical CIDR form (host bits zero; IPv6 lowercase and compressed), e.g. `203.0.113.0/24`. Anything else is refused at plan time with the canonical form.",
							Required:            true,
							Validators:          []validator.String{canonicalCIDR{}},
						},
						"description": schema.StringAttribute{
							MarkdownDescription: "Free text, at most 128 characters.",
							Optional:            true,
							Validators:          []validator.String{stringvalidator.LengthAtMost(128)},
						},
					},
				},
				Validators: []validator.Set{setvalidator.SizeAtMost(100)},
			},
			"allow_public": schema.BoolAttribute{
				MarkdownDescription: "Must be true for `0.0.0.0/0` or `::/0` in `acl`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"restore_from": schema.SingleNestedAttribute{
				MarkdownDescription: "What the new instance starts from: `backup_id`, or (PostgreSQL) `instance_id` with `point_in_time`. Used at creation only; changing it replaces the instance.",
				Optional:            true,
				PlanModifiers: []planmodifier.Object{objectplanmodifier.RequiresReplaceIf(
					func(_ context.Context, req planmodifier.ObjectRequest, resp *objectplanmodifier.RequiresReplaceIfFuncResponse) {
						resp.RequiresReplace = !req.StateValue.IsNull()
					}, "Replaces the instance, unless the prior value is unknown (after an import).", "Replaces the instance, unless the prior value is unknown (after an import).")},
				Attributes: map[string]schema.Attribute{
					"backup_id":     schema.StringAttribute{Optional: true, MarkdownDescription: "A completed backup of the project."},
					"instance_id":   schema.StringAttribute{Optional: true, MarkdownDescription: "PostgreSQL: the instance to fork."},
					"point_in_time": schema.StringAttribute{Optional: true, MarkdownDescription: "PostgreSQL: the moment to recover to (RFC 3339)."},
				},
			},
			"resources": schema.SingleNestedAttribute{
				MarkdownDescription: "Compute resources of the plan.",
				Computed:            true,
				Attributes: map[string]schema.Attribute{
					"cpu_millis": schema.Int64Attribute{Computed: true, MarkdownDescription: "CPU per replica, in millicores."},
					"memory_mib": schema.Int64Attribute{Computed: true, MarkdownDescription: "Memory per replica, in MiB."},
					"replicas":   schema.Int64Attribute{Computed: true, MarkdownDescription: "Replicas."},
				},
			},
			"endpoint": schema.SingleNestedAttribute{
				MarkdownDescription: "Where clients connect from outside, once the cluster published an address (only while `acl` is not empty); the API's `connection`, a name Terraform reserves.",
				Computed:            true,
				Attributes: map[string]schema.Attribute{
					"host": schema.StringAttribute{Computed: true, MarkdownDescription: "IP address or host name."},
					"port": schema.Int64Attribute{Computed: true, MarkdownDescription: "TCP port."},
				},
			},
			"instance_version": schema.Int64Attribute{
				MarkdownDescription: "Version of the desired state (the API's ETag); updates are sent with `If-Match` on it.",
				Computed:            true,
			},
			"status": schema.StringAttribute{
				MarkdownDescription: "`healthy`, `reconciling` or `error`, as last read.",
				Computed:            true,
			},
			"credentials_rotation": schema.StringAttribute{
				MarkdownDescription: "A rotation trigger: changing this value (a date, a counter) from one value to another asks the API to " +
					"replace the instance's generated password (`POST …/credentials/rotate`) and waits until the service " +
					"accepts only the new one. The password itself is never in the state: read it with the ephemeral " +
					"`cp_instance_credentials`. Not read back from the API: setting it where it had no value (at creation, " +
					"after an import, or added later) records it without rotating.",
				Optional: true,
			},
			"restored_from_backup_id": schema.StringAttribute{
				MarkdownDescription: "The backup the instance was last restored from (at creation through `restore_from`, or in place), as last read.",
				Computed:            true,
			},
			"created_at": schema.StringAttribute{
				MarkdownDescription: "When it was provisioned (RFC 3339).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
		Blocks: map[string]schema.Block{
			// terraform-plugin-framework-timeouts: the `timeouts { create = "…" }` block syntax of SDKv2
			// providers (resource/timeouts.Block).
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *instanceResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
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

// ValidateConfig checks what needs no API: each CIDR once in the ACL, and public blocks only with
// allow_public (the API's own rules, domain/src/instance/network.rs).
func (r *instanceResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg instanceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() || cfg.ACL.IsNull() || cfg.ACL.IsUnknown() {
		return
	}
	var entries []aclEntryModel
	resp.Diagnostics.Append(cfg.ACL.ElementsAs(ctx, &entries, false)...)
	seen := map[string]bool{}
	for _, e := range entries {
		if e.CIDR.IsUnknown() {
			continue
		}
		c := e.CIDR.ValueString()
		if seen[c] {
			resp.Diagnostics.AddAttributeError(path.Root("acl"), "Duplicate ACL block", fmt.Sprintf("%s appears more than once in acl; each block is listed once", c))
		}
		seen[c] = true
		if (c == "0.0.0.0/0" || c == "::/0") && !cfg.AllowPublic.IsUnknown() && !cfg.AllowPublic.ValueBool() {
			resp.Diagnostics.AddAttributeError(path.Root("allow_public"), "Public ACL block",
				fmt.Sprintf("%s admits every address; set allow_public to true to allow it", c))
		}
	}
}

// ModifyPlan checks the plan against the served catalog (version, upgrade path, plan, configuration)
// and fills in what the API will compute so that a plan shows only what will change. The framework marks
// every computed attribute without a configured value unknown whenever a resource has any change, and
// resource-level plan modification is where a provider refines that (framework docs, "Plan
// modification", developer.hashicorp.com/terraform/plugin/framework/resources/plan-modification).
func (r *instanceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.data == nil {
		return // destroy, or the provider is not configured yet
	}
	var plan instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	var state *instanceModel
	if !req.State.Raw.IsNull() {
		state = &instanceModel{}
		resp.Diagnostics.Append(req.State.Get(ctx, state)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	if plan.Project.IsNull() || (plan.Project.IsUnknown() && state == nil) {
		if r.data.project == "" {
			resp.Diagnostics.AddAttributeError(path.Root("project"), "No project",
				"Set project here, or in the provider (project, or the environment variable CP_PROJECT).")
			return
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("project"), r.data.project)...)
	}
	if state != nil && onlyTimeoutsDiffer(&plan, state) {
		// A change of the timeouts block alone (say, after an import, whose state has none) calls nothing
		// in the API: everything the API computes stays as it is.
		for name, v := range map[string]attr.Value{"instance_version": state.InstanceVersion, "status": state.Status,
			"endpoint": state.Connection, "resources": state.Resources, "storage_gib": state.StorageGiB,
			"restored_from_backup_id": state.RestoredFromBackup} {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(name), v)...)
		}
		return
	}
	if state != nil {
		// Storage and resources follow the plan: known from the state unless the plan changes.
		if !plan.Plan.Equal(state.Plan) {
			var cfgStorage types.Int64
			resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("storage_gib"), &cfgStorage)...)
			if cfgStorage.IsNull() {
				resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("storage_gib"), types.Int64Unknown())...)
			}
		} else if !state.Resources.IsNull() {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("resources"), state.Resources)...)
		}
		if plan.ACL.Equal(state.ACL) && !state.Connection.IsNull() {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("endpoint"), state.Connection)...)
		}
	}
	if plan.Service.IsUnknown() || plan.Version.IsUnknown() {
		return
	}
	sc, err := r.data.client.ServiceCatalog(ctx, plan.Service.ValueString())
	if err != nil {
		resp.Diagnostics.AddWarning("Catalog not read", "The plan was not checked against the catalog: "+err.Error())
		return
	}
	version := plan.Version.ValueString()
	v := sc.Version(version)
	if v == nil {
		offered := make([]string, 0, len(sc.Versions))
		for _, o := range sc.Versions {
			offered = append(offered, o.Version)
		}
		resp.Diagnostics.AddAttributeError(path.Root("version"), "Version not offered",
			fmt.Sprintf("%s %s is not in the catalog; offered: %s", sc.Service, version, strings.Join(offered, ", ")))
	} else if state != nil && state.Service.Equal(plan.Service) && !state.Version.IsNull() && state.Version.ValueString() != version {
		if from := sc.Version(state.Version.ValueString()); from != nil && !slices.Contains(from.UpgradesTo, version) {
			resp.Diagnostics.AddAttributeError(path.Root("version"), "Version change not allowed",
				fmt.Sprintf("%s %s may be upgraded to %v (upgrade path %s), not %s", sc.Service, from.Version, from.UpgradesTo, sc.UpgradePath, version))
		}
	}
	if !plan.Plan.IsUnknown() {
		names := make([]string, 0, len(sc.Plans))
		for _, p := range sc.Plans {
			names = append(names, p.Name)
		}
		if !slices.Contains(names, plan.Plan.ValueString()) {
			resp.Diagnostics.AddAttributeError(path.Root("plan"), "Plan not offered",
				fmt.Sprintf("%s has no plan %q; offered: %s", sc.Service, plan.Plan.ValueString(), strings.Join(names, ", ")))
		}
	}
	if plan.Config.IsUnknown() {
		return
	}
	cfg, d := plan.configStrings(ctx)
	resp.Diagnostics.Append(d...)
	for k, v := range cfg {
		if _, err := sc.ConfigValue(version, k, v); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("config").AtMapKey(k), "Invalid configuration", err.Error())
		}
	}
}

// onlyTimeoutsDiffer tells whether the plan changes nothing the API knows of.
func onlyTimeoutsDiffer(plan, state *instanceModel) bool {
	same := func(a, b attr.Value) bool { return a.Equal(b) }
	return same(plan.Project, state.Project) && same(plan.Name, state.Name) && same(plan.Service, state.Service) &&
		same(plan.Version, state.Version) && same(plan.Plan, state.Plan) && same(plan.StorageGiB, state.StorageGiB) &&
		same(plan.Config, state.Config) && same(plan.Description, state.Description) &&
		same(plan.DeletionProtection, state.DeletionProtection) && same(plan.Cluster, state.Cluster) &&
		plan.Region.Equal(state.Region) && same(plan.ACL, state.ACL) && same(plan.AllowPublic, state.AllowPublic) &&
		plan.RestoreFrom.Equal(state.RestoreFrom) && plan.CredentialsRotation.Equal(state.CredentialsRotation)
}

func (r *instanceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, defaultCreateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	project := plan.Project.ValueString()
	body, diags := r.provisionRequest(ctx, &plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	// One key for this create: the client's own retries of the POST answer with the first operation.
	acc, err := r.data.client.Provision(ctx, project, body, client.NewIdempotencyKey())
	if err != nil {
		resp.Diagnostics.AddError("Could not create the instance", err.Error())
		return
	}
	id := acc.Operation.InstanceID

	// The id goes into the state before waiting. Should the wait fail (a timeout, a failed operation),
	// Create returns an error with a non-null state, and Terraform core records the resource as tainted
	// (replaced at the next apply) instead of forgetting an instance that exists: see "Create resources"
	// in the framework's documentation (developer.hashicorp.com/terraform/plugin/framework/resources/create)
	// and Terraform core's apply, which marks a created object tainted when the provider returned errors.
	partial := plan
	partial.ID = types.StringValue(id)
	partial.InstanceVersion = types.Int64Value(int64(acc.ETag))
	partial.Status = types.StringValue("reconciling")
	partial.nullUnknowns()
	resp.Diagnostics.Append(resp.State.Set(ctx, &partial)...)
	if resp.Diagnostics.HasError() {
		return
	}

	inst, err := r.wait(ctx, project, id, acc)
	if err != nil {
		resp.Diagnostics.AddError("Instance not ready",
			fmt.Sprintf("Instance %s (%s/%s) was created but did not become ready: %s\n\nIt is kept in the state as tainted: the next apply replaces it (or run `terraform untaint` once it is healthy).",
				id, project, plan.Name.ValueString(), err))
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, inst)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// wait waits for an operation, then for the instance to be healthy, and returns it.
func (r *instanceResource) wait(ctx context.Context, project, id string, acc *client.Accepted) (*client.Instance, error) {
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		return nil, explainDeadline(err)
	}
	inst, err := r.data.client.WaitHealthy(ctx, project, id, acc.Sequence)
	return inst, explainDeadline(err)
}

func explainDeadline(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (the operation's timeout ran out; raise it in the resource's timeouts block)", err)
	}
	return err
}

func (r *instanceResource) provisionRequest(ctx context.Context, plan *instanceModel) (client.ProvisionRequest, diag.Diagnostics) {
	var diags diag.Diagnostics
	body := client.ProvisionRequest{
		Name:               plan.Name.ValueString(),
		Service:            plan.Service.ValueString(),
		Version:            plan.Version.ValueString(),
		Plan:               plan.Plan.ValueString(),
		Description:        plan.Description.ValueString(),
		DeletionProtection: plan.DeletionProtection.ValueBool(),
		AllowPublic:        plan.AllowPublic.ValueBool(),
		Config:             map[string]json.RawMessage{},
	}
	if !plan.StorageGiB.IsNull() && !plan.StorageGiB.IsUnknown() {
		v := plan.StorageGiB.ValueInt64()
		body.StorageGiB = &v
	}
	if !plan.Cluster.IsNull() && !plan.Cluster.IsUnknown() {
		v := plan.Cluster.ValueString()
		body.Cluster = &v
	}
	if !plan.Region.IsNull() && !plan.Region.IsUnknown() {
		v := plan.Region.ValueString()
		body.Region = &v
	}
	acl, d := plan.aclEntries(ctx)
	diags.Append(d...)
	body.ACL = acl
	cfg, d := plan.configStrings(ctx)
	diags.Append(d...)
	if len(cfg) > 0 {
		sc, err := r.data.client.ServiceCatalog(ctx, body.Service)
		if err != nil {
			diags.AddError("Could not read the catalog", err.Error())
			return body, diags
		}
		raw, bad := rawConfig(sc, body.Version, cfg)
		for k, err := range bad {
			diags.AddAttributeError(path.Root("config").AtMapKey(k), "Invalid configuration", err.Error())
		}
		body.Config = raw
	}
	if !plan.RestoreFrom.IsNull() && !plan.RestoreFrom.IsUnknown() {
		var rf restoreFromModel
		diags.Append(plan.RestoreFrom.As(ctx, &rf, basetypes.ObjectAsOptions{})...)
		body.RestoreFrom = &client.RestoreFrom{
			BackupID: stringPtr(rf.BackupID), InstanceID: stringPtr(rf.InstanceID), PointInTime: stringPtr(rf.PointInTime),
		}
	}
	return body, diags
}

func (r *instanceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	inst, err := r.data.client.GetInstance(ctx, state.Project.ValueString(), state.ID.ValueString(), 0)
	if client.IsStatus(err, http.StatusNotFound) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not read the instance", err.Error())
		return
	}
	if inst.Lifecycle == "deprovisioning" {
		// Being removed outside Terraform: gone as far as a plan is concerned.
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(state.fromAPI(ctx, inst)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *instanceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Update(ctx, defaultUpdateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	project, id := state.Project.ValueString(), state.ID.ValueString()
	c := r.data.client

	patch, diags := r.patch(ctx, &plan, &state)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Every write is conditional on the version this plan was made from.
	etag := uint64(state.InstanceVersion.ValueInt64())
	var last *client.Accepted
	if !patch.Empty() {
		acc, err := c.Update(ctx, project, id, etag, patch)
		if err != nil {
			addWriteError(&resp.Diagnostics, "Could not update the instance", etag, err)
			return
		}
		if err := c.WaitOperation(ctx, project, acc); err != nil {
			resp.Diagnostics.AddError("Update failed", explainDeadline(err).Error())
			r.saveAfterFailure(ctx, project, id, acc.Sequence, &state, resp)
			return
		}
		etag, last = acc.ETag, acc
	}
	if !plan.ACL.Equal(state.ACL) || !plan.AllowPublic.Equal(state.AllowPublic) {
		entries, d := plan.aclEntries(ctx)
		resp.Diagnostics.Append(d...)
		prior, d := state.aclEntries(ctx)
		resp.Diagnostics.Append(d...)
		if resp.Diagnostics.HasError() {
			return
		}
		if !slices.Equal(entries, prior) {
			acc, err := c.ReplaceACL(ctx, project, id, etag, entries, plan.AllowPublic.ValueBool())
			if err != nil {
				addWriteError(&resp.Diagnostics, "Could not change the ACL", etag, err)
				return
			}
			if err := c.WaitOperation(ctx, project, acc); err != nil {
				resp.Diagnostics.AddError("ACL change failed", explainDeadline(err).Error())
				r.saveAfterFailure(ctx, project, id, acc.Sequence, &state, resp)
				return
			}
			etag, last = acc.ETag, acc
		}
	}
	if !plan.CredentialsRotation.IsNull() && !plan.CredentialsRotation.IsUnknown() && !state.CredentialsRotation.IsNull() &&
		!plan.CredentialsRotation.Equal(state.CredentialsRotation) {
		acc, err := c.RotateCredentials(ctx, project, id, etag)
		if err != nil {
			addWriteError(&resp.Diagnostics, "Could not rotate the credentials", etag, err)
			r.saveAfterFailure(ctx, project, id, 0, &state, resp)
			return
		}
		if err := c.WaitOperation(ctx, project, acc); err != nil {
			resp.Diagnostics.AddError("Credentials rotation failed", explainDeadline(err).Error())
			r.saveAfterFailure(ctx, project, id, acc.Sequence, &state, resp)
			return
		}
		last = acc
	}
	var seq uint64
	if last != nil {
		seq = last.Sequence
	}
	inst, err := c.WaitHealthy(ctx, project, id, seq)
	if err != nil {
		resp.Diagnostics.AddError("Instance not healthy after the update", explainDeadline(err).Error())
		r.saveAfterFailure(ctx, project, id, seq, &state, resp)
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, inst)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// saveAfterFailure records what the instance is now, so the next plan shows what remains to be done.
func (r *instanceResource) saveAfterFailure(ctx context.Context, project, id string, seq uint64, state *instanceModel, resp *resource.UpdateResponse) {
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if inst, err := r.data.client.GetInstance(readCtx, project, id, seq); err == nil {
		resp.Diagnostics.Append(state.fromAPI(readCtx, inst)...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func addWriteError(diags *diag.Diagnostics, summary string, etag uint64, err error) {
	if client.IsStatus(err, http.StatusPreconditionFailed) {
		diags.AddError("Instance changed outside Terraform — refresh",
			fmt.Sprintf("The instance changed outside Terraform since Terraform last read it: the API refused the change "+
				"made against version %d (412 Precondition Failed on If-Match). Run `terraform apply -refresh-only` "+
				"(or `terraform plan` again), review the differences, and apply again.\n\n%s", etag, err))
		return
	}
	diags.AddError(summary, err.Error())
}

// patch is the JSON merge patch from the state to the plan (the ACL has its own route).
func (r *instanceResource) patch(ctx context.Context, plan, state *instanceModel) (client.UpdateRequest, diag.Diagnostics) {
	var diags diag.Diagnostics
	var p client.UpdateRequest
	str := func(a, b types.String) *string {
		if a.IsUnknown() || a.IsNull() || a.Equal(b) {
			return nil
		}
		v := a.ValueString()
		return &v
	}
	p.Version = str(plan.Version, state.Version)
	p.Plan = str(plan.Plan, state.Plan)
	p.Description = str(plan.Description, state.Description)
	if !plan.StorageGiB.IsUnknown() && !plan.StorageGiB.IsNull() && !plan.StorageGiB.Equal(state.StorageGiB) {
		v := plan.StorageGiB.ValueInt64()
		p.StorageGiB = &v
	}
	if !plan.DeletionProtection.IsUnknown() && !plan.DeletionProtection.Equal(state.DeletionProtection) {
		v := plan.DeletionProtection.ValueBool()
		p.DeletionProtection = &v
	}
	want, d := plan.configStrings(ctx)
	diags.Append(d...)
	have, d := state.configStrings(ctx)
	diags.Append(d...)
	changes := map[string]*json.RawMessage{}
	var sc *client.ServiceCatalog
	for k, v := range want {
		if have[k] == v {
			continue
		}
		if sc == nil {
			var err error
			if sc, err = r.data.client.ServiceCatalog(ctx, plan.Service.ValueString()); err != nil {
				diags.AddError("Could not read the catalog", err.Error())
				return p, diags
			}
		}
		raw, err := sc.ConfigValue(plan.Version.ValueString(), k, v)
		if err != nil {
			diags.AddAttributeError(path.Root("config").AtMapKey(k), "Invalid configuration", err.Error())
			continue
		}
		changes[k] = &raw
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			changes[k] = nil // null removes the key (merge patch)
		}
	}
	if len(changes) > 0 {
		p.Config = changes
	}
	return p, diags
}

func (r *instanceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, defaultDeleteTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	project, id := state.Project.ValueString(), state.ID.ValueString()
	if state.DeletionProtection.ValueBool() {
		resp.Diagnostics.AddError("Deletion protection is on",
			fmt.Sprintf("Instance %s/%s has deletion_protection = true. Set it to false and apply, then destroy.", project, state.Name.ValueString()))
		return
	}
	acc, err := r.data.client.Deprovision(ctx, project, id)
	if client.IsStatus(err, http.StatusNotFound) {
		return
	}
	if client.IsStatus(err, http.StatusConflict) {
		resp.Diagnostics.AddError("Deletion refused",
			"The API refused to remove the instance (409): deletion protection was turned on outside Terraform. Refresh, set deletion_protection = false and apply, then destroy.\n\n"+err.Error())
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not delete the instance", err.Error())
		return
	}
	if err := r.data.client.WaitOperation(ctx, project, acc); err != nil {
		resp.Diagnostics.AddError("Deletion did not finish", explainDeadline(err).Error())
	}
}

// ImportState takes `project/id` or `project/name` (a name is looked up among the project's live
// instances). It writes only what Read needs (project and id), as the framework's "Resource import",
// "Multiple Attributes" asks (developer.hashicorp.com/terraform/plugin/framework/resources/import); Read
// rebuilds everything else from `GET …/instances/{id}`, which returns the full desired spec.
func (r *instanceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	project, ref, ok := strings.Cut(req.ID, "/")
	if !ok || project == "" || ref == "" {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("expected project/id or project/name, got %q", req.ID))
		return
	}
	id := ref
	if !uuidPattern.MatchString(ref) {
		inst, err := r.data.client.FindInstanceByName(ctx, project, ref)
		if err != nil {
			resp.Diagnostics.AddError("Could not look the instance up", err.Error())
			return
		}
		if inst == nil {
			resp.Diagnostics.AddError("No such instance", fmt.Sprintf("project %s has no live instance named %q", project, ref))
			return
		}
		id = inst.ID
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project"), project)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func stringPtr(v types.String) *string {
	if v.IsNull() || v.IsUnknown() {
		return nil
	}
	s := v.ValueString()
	return &s
}
