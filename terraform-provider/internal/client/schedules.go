package client

import (
	"context"
	"net/http"
	"net/url"
	"path"
)

// Retention is how long a schedule's backups are kept (wire::Retention).
type Retention struct {
	KeepLast   *int64 `json:"keep_last,omitempty"`
	MaxAgeDays *int64 `json:"max_age_days,omitempty"`
}

// BackupScheduleRequest is the body of `POST …/backup-schedules` and `PUT …/backup-schedules/{id}`.
type BackupScheduleRequest struct {
	Name      string    `json:"name"`
	Cron      string    `json:"cron"`
	TimeZone  string    `json:"time_zone"`
	Enabled   bool      `json:"enabled"`
	Retention Retention `json:"retention"`
}

// BackupSchedule is a schedule as read (wire::BackupSchedule).
type BackupSchedule struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Cron      string    `json:"cron"`
	TimeZone  string    `json:"time_zone"`
	Enabled   bool      `json:"enabled"`
	Retention Retention `json:"retention"`
	NextRunAt *string   `json:"next_run_at,omitempty"`
}

func schedulesPath(project, instance string) string {
	return instancePath(project, instance) + "/backup-schedules"
}

// CreateSchedule adds a schedule to an instance (an instance command: it moves the instance's ETag) and
// returns the operation and the new schedule's id (from `Cp-Schedule-Location`).
func (c *Client) CreateSchedule(ctx context.Context, project, instance string, ifMatch uint64, req BackupScheduleRequest) (*Accepted, string, error) {
	var op Operation
	resp, err := c.JSON(ctx, Request{Method: http.MethodPost, Path: schedulesPath(project, instance), Body: req,
		IfMatch: ifMatch, IdempotencyKey: NewIdempotencyKey()}, &op)
	if err != nil {
		return nil, "", err
	}
	etag, _ := resp.ETag()
	return &Accepted{Operation: op, Sequence: resp.StreamSequence(), ETag: etag}, path.Base(resp.Header.Get("Cp-Schedule-Location")), nil
}

// ReplaceSchedule replaces a schedule, conditional on the instance's version.
func (c *Client) ReplaceSchedule(ctx context.Context, project, instance, id string, ifMatch uint64, req BackupScheduleRequest) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPut, Path: schedulesPath(project, instance) + "/" + url.PathEscape(id),
		Body: req, IfMatch: ifMatch, IdempotencyKey: NewIdempotencyKey()})
}

// DeleteSchedule removes a schedule (its backups stay).
func (c *Client) DeleteSchedule(ctx context.Context, project, instance, id string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodDelete, Path: schedulesPath(project, instance) + "/" + url.PathEscape(id),
		IdempotencyKey: NewIdempotencyKey()})
}

// GetSchedule reads a schedule and the instance version it belongs to (its ETag).
func (c *Client) GetSchedule(ctx context.Context, project, instance, id string, minSequence uint64) (*BackupSchedule, uint64, error) {
	var s BackupSchedule
	resp, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: schedulesPath(project, instance) + "/" + url.PathEscape(id),
		MinSequence: minSequence}, &s)
	if err != nil {
		return nil, 0, err
	}
	etag, _ := resp.ETag()
	return &s, etag, nil
}
