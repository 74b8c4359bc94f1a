package client

import (
	"context"
	"net/http"
	"net/url"
)

// Backup is an on-demand or scheduled backup (wire::Backup).
type Backup struct {
	ID          string  `json:"id"`
	InstanceID  string  `json:"instance_id"`
	Service     string  `json:"service"`
	Version     string  `json:"version"`
	Trigger     string  `json:"trigger"`
	State       string  `json:"state"` // requested, running, completed, failed, deleting, deleted
	RequestedAt string  `json:"requested_at"`
	CompletedAt *string `json:"completed_at,omitempty"`
	SizeBytes   *int64  `json:"size_bytes,omitempty"`
	SHA256      *string `json:"sha256,omitempty"`
	Location    *string `json:"location,omitempty"`
	Error       *string `json:"error,omitempty"`
}

func backupsPath(project, instance string) string {
	return instancePath(project, instance) + "/backups"
}

// CreateBackup asks for a backup now; the operation's id is the backup's.
func (c *Client) CreateBackup(ctx context.Context, project, instance, idempotencyKey string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPost, Path: backupsPath(project, instance), IdempotencyKey: idempotencyKey})
}

// GetBackup reads a backup.
func (c *Client) GetBackup(ctx context.Context, project, instance, id string, minSequence uint64) (*Backup, error) {
	var b Backup
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: backupsPath(project, instance) + "/" + url.PathEscape(id), MinSequence: minSequence}, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// DeleteBackup deletes a backup's object (the record stays, marked deleted).
func (c *Client) DeleteBackup(ctx context.Context, project, instance, id string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodDelete, Path: backupsPath(project, instance) + "/" + url.PathEscape(id), IdempotencyKey: NewIdempotencyKey()})
}
