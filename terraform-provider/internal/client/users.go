package client

import (
	"context"
	"net/http"
	"net/url"
)

// User is one user of an instance (wire::User): a per-application database user with a role from the
// service's catalog. Its password is never part of it: read it with GetUserCredentials.
type User struct {
	Name   string  `json:"name"`
	Role   string  `json:"role"`
	State  string  `json:"state"` // applied, pending, error
	Reason *string `json:"reason,omitempty"`
}

// UserRequest is the body of `POST …/users` (wire::UserRequest).
type UserRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func usersPath(project, instance string) string {
	return instancePath(project, instance) + "/users"
}

func userPath(project, instance, name string) string {
	return usersPath(project, instance) + "/" + url.PathEscape(name)
}

// CreateUser asks for a new user; the operation succeeds once the engine reports it applied.
func (c *Client) CreateUser(ctx context.Context, project, instance string, req UserRequest, idempotencyKey string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPost, Path: usersPath(project, instance), Body: req, IdempotencyKey: idempotencyKey})
}

// GetUser reads one user of an instance (404 when the instance or the user is unknown).
func (c *Client) GetUser(ctx context.Context, project, instance, name string) (*User, error) {
	var u User
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: userPath(project, instance, name)}, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// DeleteUser asks for a user to go; the operation succeeds once the engine revoked it.
func (c *Client) DeleteUser(ctx context.Context, project, instance, name string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodDelete, Path: userPath(project, instance, name), IdempotencyKey: NewIdempotencyKey()})
}

// RotateUserPassword asks the cluster for a new password of the user; the operation succeeds once the
// engine accepts only the new one.
func (c *Client) RotateUserPassword(ctx context.Context, project, instance, name string) (*Accepted, error) {
	return c.accepted(ctx, Request{Method: http.MethodPost, Path: userPath(project, instance, name) + "/password/rotate", IdempotencyKey: NewIdempotencyKey()})
}

// GetUserCredentials reads the user's credentials from the instance's cluster now (never stored by the
// control plane).
func (c *Client) GetUserCredentials(ctx context.Context, project, instance, name string) (*Credentials, error) {
	var cr Credentials
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: userPath(project, instance, name) + "/credentials"}, &cr); err != nil {
		return nil, err
	}
	return &cr, nil
}
