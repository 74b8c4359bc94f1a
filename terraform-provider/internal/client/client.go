// Package client speaks the control plane's HTTP API (README "Using the API", ARCHITECTURE.md `api`):
// bearer tokens, 202 + operation for every write, ETags and If-Match, Idempotency-Key, Cp-Stream-Sequence /
// Cp-Min-Sequence for reading one's own writes, and RFC 9457 problem+json errors.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client calls one control plane with one token.
type Client struct {
	Endpoint  string
	Token     string
	UserAgent string
	HTTP      *http.Client
	// MaxRetries bounds retries of a 429 or 503 (each waits the answer's Retry-After).
	MaxRetries int
	// MaxRetryWait caps one wait, whatever Retry-After says.
	MaxRetryWait time.Duration

	mu       sync.Mutex
	catalogs map[string]*ServiceCatalog
}

// New makes a client.
func New(endpoint, token, userAgent string) *Client {
	return &Client{
		Endpoint:     strings.TrimRight(endpoint, "/"),
		Token:        token,
		UserAgent:    userAgent,
		HTTP:         &http.Client{Timeout: 60 * time.Second},
		MaxRetries:   10,
		MaxRetryWait: 30 * time.Second,
	}
}

// Problem is the API's error body (wire::Problem).
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Code   string       `json:"code"`
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError names one field at fault (a JSON pointer) and the rule it broke.
type FieldError struct {
	Field  string `json:"field"`
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// APIError is a non-2xx answer.
type APIError struct {
	Method, Path string
	StatusCode   int
	Problem      *Problem
	Body         string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.StatusCode)
	if e.Problem == nil {
		if e.Body != "" {
			fmt.Fprintf(&b, ": %s", strings.TrimSpace(e.Body))
		}
		return b.String()
	}
	fmt.Fprintf(&b, " %s (%s): %s", e.Problem.Title, e.Problem.Code, e.Problem.Detail)
	for _, f := range e.Problem.Errors {
		fmt.Fprintf(&b, "\n  %s: %s (%s)", f.Field, f.Detail, f.Rule)
	}
	return b.String()
}

// IsStatus tells whether err is an API answer with that status.
func IsStatus(err error, status int) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == status
}

// Response is a 2xx answer's body and the headers a client acts on.
type Response struct {
	StatusCode int
	Body       []byte
	Header     http.Header
}

// ETag is the answer's ETag as a version number (the API's ETags are `"<instance_version>"`).
func (r *Response) ETag() (uint64, bool) {
	v, err := strconv.ParseUint(strings.Trim(r.Header.Get("ETag"), `"W/`), 10, 64)
	return v, err == nil
}

// StreamSequence is the answer's Cp-Stream-Sequence (0 when absent).
func (r *Response) StreamSequence() uint64 {
	v, _ := strconv.ParseUint(r.Header.Get("Cp-Stream-Sequence"), 10, 64)
	return v
}

// Request is one call.
type Request struct {
	Method      string
	Path        string
	Query       url.Values
	Body        any
	ContentType string
	IfMatch     uint64 // 0: none
	// IdempotencyKey makes a retried write answer with its first operation; set for every POST, PATCH,
	// PUT and DELETE so the client's own retries are safe.
	IdempotencyKey string
	MinSequence    uint64 // Cp-Min-Sequence: read at least this far into the stream
}

// NewIdempotencyKey returns a random key.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("tf-%x", b)
}

// Do sends a request, retrying a 429 or 503 after its Retry-After (at most MaxRetries times, never past
// ctx's deadline), and a transport error on an idempotent request the same way.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = json.Marshal(r.Body); err != nil {
			return nil, err
		}
	}
	target := c.Endpoint + r.Path
	if len(r.Query) > 0 {
		target += "?" + r.Query.Encode()
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json, application/problem+json")
		if c.UserAgent != "" {
			req.Header.Set("User-Agent", c.UserAgent)
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		if body != nil {
			ct := r.ContentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
		}
		if r.IfMatch != 0 {
			req.Header.Set("If-Match", fmt.Sprintf(`"%d"`, r.IfMatch))
		}
		if r.IdempotencyKey != "" {
			req.Header.Set("Idempotency-Key", r.IdempotencyKey)
		}
		if r.MinSequence != 0 {
			req.Header.Set("Cp-Min-Sequence", strconv.FormatUint(r.MinSequence, 10))
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			// A request that never got an answer is repeated only when repeating it is safe.
			if attempt < c.MaxRetries && ctx.Err() == nil && (r.Method == http.MethodGet || r.IdempotencyKey != "") {
				if werr := sleep(ctx, time.Second); werr != nil {
					return nil, err
				}
				continue
			}
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && attempt < c.MaxRetries {
			wait := RetryAfter(resp.Header.Get("Retry-After"), time.Now())
			if wait > c.MaxRetryWait {
				wait = c.MaxRetryWait
			}
			if werr := sleep(ctx, wait); werr == nil {
				continue
			}
		}
		if resp.StatusCode >= 300 {
			apiErr := &APIError{Method: r.Method, Path: r.Path, StatusCode: resp.StatusCode, Body: string(data)}
			var p Problem
			if json.Unmarshal(data, &p) == nil && (p.Title != "" || p.Code != "") {
				apiErr.Problem = &p
			}
			return nil, apiErr
		}
		return &Response{StatusCode: resp.StatusCode, Body: data, Header: resp.Header}, nil
	}
}

// RetryAfter reads a Retry-After header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date); one second
// when absent or unreadable.
func RetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return time.Second
	}
	if s, err := strconv.Atoi(value); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(value); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
		return 0
	}
	return time.Second
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// JSON sends a request and decodes a 2xx body into out (when out is not nil).
func (c *Client) JSON(ctx context.Context, r Request, out any) (*Response, error) {
	resp, err := c.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	if out != nil && len(resp.Body) > 0 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp, fmt.Errorf("%s %s: reading the answer: %w", r.Method, r.Path, err)
		}
	}
	return resp, nil
}
