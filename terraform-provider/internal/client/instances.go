package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// AclEntry is one allowed source block (wire::AclEntry).
type AclEntry struct {
	CIDR        string `json:"cidr"`
	Description string `json:"description"`
}

// RestoreFrom is what a new instance starts from (wire::RestoreFrom).
type RestoreFrom struct {
	BackupID    *string `json:"backup_id,omitempty"`
	InstanceID  *string `json:"instance_id,omitempty"`
	PointInTime *string `json:"point_in_time,omitempty"`
}

// ProvisionRequest is the body of `POST /v1/projects/{project}/instances` (wire::ProvisionRequest).
type ProvisionRequest struct {
	Name               string                     `json:"name"`
	Service            string                     `json:"service"`
	Version            string                     `json:"version"`
	Plan               string                     `json:"plan"`
	StorageGiB         *int64                     `json:"storage_gib,omitempty"`
	Config             map[string]json.RawMessage `json:"config"`
	Description        string                     `json:"description"`
	DeletionProtection bool                       `json:"deletion_protection"`
	Cluster            *string                    `json:"cluster,omitempty"`
	ACL                []AclEntry                 `json:"acl"`
	AllowPublic        bool                       `json:"allow_public"`
	Region             *string                    `json:"region,omitempty"`
	RestoreFrom        *RestoreFrom               `json:"restore_from,omitempty"`
}

// UpdateRequest is the JSON merge patch of `PATCH …/instances/{id}` (wire::UpdateRequest); a nil value
// inside Config removes the key.
type UpdateRequest struct {
	Version            *string                     `json:"version,omitempty"`
	Plan               *string                     `json:"plan,omitempty"`
	StorageGiB         *int64                      `json:"storage_gib,omitempty"`
	Config             map[string]*json.RawMessage `json:"config,omitempty"`
	Description        *string                     `json:"description,omitempty"`
	DeletionProtection *bool                       `json:"deletion_protection,omitempty"`
}

// Empty tells whether the patch changes nothing.
func (u UpdateRequest) Empty() bool {
	return u.Version == nil && u.Plan == nil && u.StorageGiB == nil && len(u.Config) == 0 &&
		u.Description == nil && u.DeletionProtection == nil
}

// Resources are an instance's compute resources per replica.
type Resources struct {
	CPUMillis int64 `json:"cpu_millis"`
	MemoryMiB int64 `json:"memory_mib"`
	Replicas  int64 `json:"replicas"`
}

// Connection is where clients connect from outside.
type Connection struct {
	Host string `json:"host"`
	Port int64  `json:"port"`
}

// Status is an instance's desired state compared with what its cluster observed (wire::InstanceStatus).
type Status struct {
	State          string            `json:"state"`
	Aspects        map[string]string `json:"aspects"`
	Reason         *string           `json:"reason,omitempty"`
	PendingRestart []string          `json:"pending_restart,omitempty"`
}

// Instance is what `GET …/instances/{id}` answers (wire::Instance).
type Instance struct {
	ID                 string                     `json:"id"`
	Project            string                     `json:"project"`
	Name               string                     `json:"name"`
	Service            string                     `json:"service"`
	Version            string                     `json:"version"`
	Plan               string                     `json:"plan"`
	Resources          Resources                  `json:"resources"`
	StorageGiB         int64                      `json:"storage_gib"`
	Config             map[string]json.RawMessage `json:"config"`
	Description        string                     `json:"description"`
	DeletionProtection bool                       `json:"deletion_protection"`
	Cluster            string                     `json:"cluster"`
	ACL                []AclEntry                 `json:"acl"`
	Connection         *Connection                `json:"connection,omitempty"`
	RestoredFrom       *struct {
		BackupID string `json:"backup_id"`
	} `json:"restored_from,omitempty"`
	Lifecycle       string `json:"lifecycle"`
	InstanceVersion uint64 `json:"instance_version"`
	Status          Status `json:"status"`
	CreatedAt       string `json:"created_at"`
	UpdatedAt       string `json:"updated_at"`
}

// OperationError is why an operation failed, with the reason the cluster's agent reported.
type OperationError struct {
	Code             string `json:"code"`
	Detail           string `json:"detail"`
	Reason           string `json:"reason"`
	InstanceUsable   bool   `json:"instance_usable"`
	UpdateRepeatable bool   `json:"update_repeatable"`
}

// Operation is the asynchronous result of a write (wire::Operation).
type Operation struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	State           string          `json:"state"`
	InstanceID      string          `json:"instance_id"`
	InstanceVersion uint64          `json:"instance_version"`
	Error           *OperationError `json:"error,omitempty"`
}

// Accepted is a 202: the operation, and how far into the stream the write went.
type Accepted struct {
	Operation Operation
	Sequence  uint64
	ETag      uint64
}

// Credentials are what a client connects with (wire::Credentials); never stored.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Host     string `json:"host"`
	Port     int64  `json:"port"`
}

func instancesPath(project string) string {
	return "/v1/projects/" + url.PathEscape(project) + "/instances"
}

func instancePath(project, id string) string {
	return instancesPath(project) + "/" + url.PathEscape(id)
}

func (c *Client) accepted(ctx context.Context, r Request) (*Accepted, error) {
	var op Operation
	resp, err := c.JSON(ctx, r, &op)
	if err != nil {
		return nil, err
	}
	etag, _ := resp.ETag()
	return &Accepted{Operation: op, Sequence: resp.StreamSequence(), ETag: etag}, nil
}

// Provision asks for a new instance.
func (c *Client) Provision(ctx context.Context, project string, req ProvisionRequest, idempotencyKey string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPost, Path: instancesPath(project), Body: req, IdempotencyKey: idempotencyKey})
}

// Update sends a merge patch conditional on ifMatch.
func (c *Client) Update(ctx context.Context, project, id string, ifMatch uint64, req UpdateRequest) (*Accepted, error) {
	return c.accepted(ctx, Request{
		Method: http.MethodPatch, Path: instancePath(project, id), Body: req,
		ContentType: "application/merge-patch+json", IfMatch: ifMatch, IdempotencyKey: NewIdempotencyKey(),
	})
}

// ReplaceACL replaces an instance's ACL (`PUT …/acl`), conditional on ifMatch.
func (c *Client) ReplaceACL(ctx context.Context, project, id string, ifMatch uint64, entries []AclEntry, allowPublic bool) (*Accepted, error) {
	if entries == nil {
		entries = []AclEntry{}
	}
	body := map[string]any{"entries": entries, "allow_public": allowPublic}
	return c.accepted(ctx, Request{
		Method: http.MethodPut, Path: instancePath(project, id) + "/acl", Body: body,
		IfMatch: ifMatch, IdempotencyKey: NewIdempotencyKey(),
	})
}

// Deprovision removes an instance; a repeated call answers with the first operation.
func (c *Client) Deprovision(ctx context.Context, project, id string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodDelete, Path: instancePath(project, id), IdempotencyKey: NewIdempotencyKey()})
}

// GetInstance reads one instance and its ETag; minSequence makes it read at least that far.
func (c *Client) GetInstance(ctx context.Context, project, id string, minSequence uint64) (*Instance, error) {
	var inst Instance
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: instancePath(project, id), MinSequence: minSequence}, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// FindInstanceByName returns the live instance of that name in the project, or nil.
func (c *Client) FindInstanceByName(ctx context.Context, project, name string) (*Instance, error) {
	var list struct {
		Items []Instance `json:"items"`
	}
	q := url.Values{"name": {name}, "limit": {"10"}}
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: instancesPath(project), Query: q}, &list); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Name == name && list.Items[i].Lifecycle == "active" {
			// The list is eventually consistent; the instance itself is read from the stream.
			return c.GetInstance(ctx, project, list.Items[i].ID, 0)
		}
	}
	return nil, nil
}

// GetOperation reads an operation.
func (c *Client) GetOperation(ctx context.Context, project, id string, minSequence uint64) (*Operation, error) {
	var op Operation
	path := "/v1/projects/" + url.PathEscape(project) + "/operations/" + url.PathEscape(id)
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: path, MinSequence: minSequence}, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// GetCredentials reads the credentials the cluster holds now (never stored by the control plane).
func (c *Client) GetCredentials(ctx context.Context, project, id string) (*Credentials, error) {
	var cr Credentials
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: instancePath(project, id) + "/credentials"}, &cr); err != nil {
		return nil, err
	}
	return &cr, nil
}

// OperationFailed is an operation that ended in `failed`.
type OperationFailed struct{ Operation Operation }

func (e *OperationFailed) Error() string {
	op := e.Operation
	if op.Error == nil {
		return fmt.Sprintf("operation %s (%s) failed", op.ID, op.Type)
	}
	return fmt.Sprintf("operation %s (%s) failed: %s (reason reported by the cluster's agent: %s; instance usable: %t, repeating may succeed: %t)",
		op.ID, op.Type, op.Error.Detail, op.Error.Reason, op.Error.InstanceUsable, op.Error.UpdateRepeatable)
}

// PollInterval is how often an operation or instance is read while waiting.
var PollInterval = 500 * time.Millisecond

// WaitOperation polls an operation until it succeeded (nil) or failed (*OperationFailed), or ctx ends.
func (c *Client) WaitOperation(ctx context.Context, project string, acc *Accepted) error {
	op := acc.Operation
	for {
		switch op.State {
		case "succeeded":
			return nil
		case "failed":
			return &OperationFailed{Operation: op}
		}
		if err := sleep(ctx, PollInterval); err != nil {
			return fmt.Errorf("operation %s (%s) still %s: %w", op.ID, op.Type, op.State, err)
		}
		next, err := c.GetOperation(ctx, project, op.ID, acc.Sequence)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("operation %s (%s) still %s: %w", op.ID, op.Type, op.State, ctx.Err())
			}
			return err
		}
		op = *next
	}
}

// ErrUnhealthy is an instance whose cluster reports a failure.
var ErrUnhealthy = errors.New("the instance's cluster reports a failure")

// WaitHealthy polls an instance until its status is healthy, or it reports an error, or ctx ends.
func (c *Client) WaitHealthy(ctx context.Context, project, id string, minSequence uint64) (*Instance, error) {
	for {
		inst, err := c.GetInstance(ctx, project, id, minSequence)
		if err != nil {
			return nil, err
		}
		switch inst.Status.State {
		case "healthy":
			return inst, nil
		case "error":
			reason := ""
			if inst.Status.Reason != nil {
				reason = *inst.Status.Reason
			}
			return inst, fmt.Errorf("%w: %s", ErrUnhealthy, reason)
		}
		if err := sleep(ctx, PollInterval); err != nil {
			return inst, fmt.Errorf("instance %s still %s (aspects %v): %w", id, inst.Status.State, inst.Status.Aspects, err)
		}
	}
}

// RotateCredentials asks the cluster to replace the instance's generated password, conditional on ifMatch;
// the operation succeeds once the service accepts only the new one.
func (c *Client) RotateCredentials(ctx context.Context, project, id string, ifMatch uint64) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPost, Path: instancePath(project, id) + "/credentials/rotate",
		IfMatch: ifMatch, IdempotencyKey: NewIdempotencyKey()})
}
