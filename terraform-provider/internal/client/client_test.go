package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetriesA429AfterItsRetryAfterAndSendsTheUserAgent(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ua := r.Header.Get("User-Agent"); ua != "terraform-provider-cp/1.2.3" {
			t.Errorf("User-Agent %q", ua)
		}
		if r.Header.Get("Authorization") != "Bearer secret" {
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		if calls.Add(1) < 3 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = w.Write([]byte(`{"services":[]}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "secret", "terraform-provider-cp/1.2.3")
	start := time.Now()
	if _, err := c.GetCatalog(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", calls.Load())
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("retried after %s; Retry-After asked for 1 s each", waited)
	}
}

func TestA503IsRetriedAndThenReported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"NATS is unreachable","code":"unavailable"}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "", "")
	c.MaxRetries = 2
	_, err := c.GetCatalog(context.Background())
	if !IsStatus(err, 503) || !strings.Contains(err.Error(), "NATS is unreachable") {
		t.Fatalf("got %v", err)
	}
}

func TestRetryAfterReadsSecondsAndDates(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if d := RetryAfter("7", now); d != 7*time.Second {
		t.Errorf("seconds: %s", d)
	}
	if d := RetryAfter(now.Add(3*time.Second).Format(http.TimeFormat), now); d != 3*time.Second {
		t.Errorf("date: %s", d)
	}
	if d := RetryAfter("", now); d != time.Second {
		t.Errorf("absent: %s", d)
	}
}

func TestAFailedOperationCarriesTheAgentsReason(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"id":"op","type":"update","state":"failed","instance_id":"i","instance_version":3,
			"error":{"code":"update_failed","detail":"the new version does not start","reason":"CrashLoopBackOff","instance_usable":true,"update_repeatable":false}}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "", "")
	err := c.WaitOperation(context.Background(), "acme", &Accepted{Operation: Operation{ID: "op", State: "in_progress"}})
	if err == nil || !strings.Contains(err.Error(), "CrashLoopBackOff") || !strings.Contains(err.Error(), "does not start") {
		t.Fatalf("got %v", err)
	}
}

func TestConfigValuesAreCheckedAgainstTheCatalog(t *testing.T) {
	min, max := int64(10), int64(5000)
	sc := &ServiceCatalog{Service: "postgresql",
		Versions: []CatalogVersion{{Version: "16", Parameters: []string{"max_connections", "track_io_timing"}}},
		Parameters: []CatalogParameter{
			{Name: "max_connections", Type: "integer", Minimum: &min, Maximum: &max},
			{Name: "track_io_timing", Type: "boolean"},
			{Name: "mode", Type: "enum", Values: []string{"a", "b"}},
		}}
	for _, c := range []struct{ key, value, want, err string }{
		{"max_connections", "200", "200", ""},
		{"max_connections", "5001", "", "from 10 to 5000"},
		{"max_connections", "0200", "", `write "0200" as 200`},
		{"track_io_timing", "true", "true", ""},
		{"track_io_timing", "yes", "", "true or false"},
		{"mode", "a", `"a"`, ""},
		{"mode", "c", "", "one of"},
		{"nope", "1", "", "no configuration parameter"},
	} {
		raw, err := sc.ConfigValue("", c.key, c.value)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s=%s: err %v, want %q", c.key, c.value, err, c.err)
			}
			continue
		}
		if err != nil || string(raw) != c.want {
			t.Errorf("%s=%s: %s %v, want %s", c.key, c.value, raw, err, c.want)
		}
	}
	if _, err := sc.ConfigValue("16", "mode", "a"); err == nil {
		t.Error("a parameter the version does not offer was accepted")
	}
}
