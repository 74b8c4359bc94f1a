package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// Catalog is what `GET /v1/catalog` answers (wire::Catalog).
type Catalog struct {
	Services []ServiceCatalog `json:"services"`
}

// ServiceCatalog is one service's offering.
type ServiceCatalog struct {
	Service     string             `json:"service"`
	UpgradePath string             `json:"upgrade_path"`
	Versions    []CatalogVersion   `json:"versions"`
	Plans       []CatalogPlan      `json:"plans"`
	Parameters  []CatalogParameter `json:"parameters"`
	UserRoles   []string           `json:"user_roles"`
}

// CatalogVersion is an offered version.
type CatalogVersion struct {
	Version    string   `json:"version"`
	UpgradesTo []string `json:"upgrades_to"`
	Parameters []string `json:"parameters"`
}

// CatalogPlan is an offered plan.
type CatalogPlan struct {
	Name       string    `json:"name"`
	Resources  Resources `json:"resources"`
	StorageGiB int64     `json:"storage_gib"`
}

// CatalogParameter is a configuration parameter.
type CatalogParameter struct {
	Name        string          `json:"name"`
	Type        string          `json:"type"` // integer | boolean | enum
	Minimum     *int64          `json:"minimum,omitempty"`
	Maximum     *int64          `json:"maximum,omitempty"`
	Values      []string        `json:"values,omitempty"`
	Apply       string          `json:"apply"`
	Description string          `json:"description"`
	Default     json.RawMessage `json:"default,omitempty"`
	Since       *string         `json:"since,omitempty"`
}

// GetCatalog reads the whole served catalog.
func (c *Client) GetCatalog(ctx context.Context) (*Catalog, error) {
	var cat Catalog
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: "/v1/catalog"}, &cat); err != nil {
		return nil, err
	}
	return &cat, nil
}

// ServiceCatalog reads (once per provider process) one service's catalog.
func (c *Client) ServiceCatalog(ctx context.Context, service string) (*ServiceCatalog, error) {
	c.mu.Lock()
	cached := c.catalogs[service]
	c.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	var sc ServiceCatalog
	if _, err := c.JSON(ctx, Request{Method: http.MethodGet, Path: "/v1/catalog/" + url.PathEscape(service)}, &sc); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.catalogs == nil {
		c.catalogs = map[string]*ServiceCatalog{}
	}
	c.catalogs[service] = &sc
	c.mu.Unlock()
	return &sc, nil
}

// Parameter finds a parameter by name.
func (s *ServiceCatalog) Parameter(name string) *CatalogParameter {
	for i := range s.Parameters {
		if s.Parameters[i].Name == name {
			return &s.Parameters[i]
		}
	}
	return nil
}

// Version finds a version.
func (s *ServiceCatalog) Version(v string) *CatalogVersion {
	for i := range s.Versions {
		if s.Versions[i].Version == v {
			return &s.Versions[i]
		}
	}
	return nil
}

// ConfigValue turns a configuration value written as a string (Terraform's `map(string)`) into the JSON
// the API takes for that parameter, checking it against the catalog: integers within their bounds,
// booleans, and enums among their values. version, when not empty, must offer the parameter.
func (s *ServiceCatalog) ConfigValue(version, key, value string) (json.RawMessage, error) {
	p := s.Parameter(key)
	if p == nil {
		names := make([]string, 0, len(s.Parameters))
		for _, q := range s.Parameters {
			names = append(names, q.Name)
		}
		return nil, fmt.Errorf("%s has no configuration parameter %q; it has %v", s.Service, key, names)
	}
	if version != "" {
		if v := s.Version(version); v != nil && !slices.Contains(v.Parameters, key) {
			return nil, fmt.Errorf("%s %s does not offer %q (it arrives in %s)", s.Service, version, key, deref(p.Since))
		}
	}
	switch p.Type {
	case "integer":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s is an integer, not %q", key, value)
		}
		if canonical := strconv.FormatInt(n, 10); canonical != value {
			// The API answers the number, so anything but its plain form would read back as a change.
			return nil, fmt.Errorf("%s: write %q as %s", key, value, canonical)
		}
		if p.Minimum != nil && n < *p.Minimum || p.Maximum != nil && n > *p.Maximum {
			return nil, fmt.Errorf("%s must be from %d to %d, not %d", key, deref64(p.Minimum), deref64(p.Maximum), n)
		}
		return json.RawMessage(strconv.FormatInt(n, 10)), nil
	case "boolean":
		b, err := strconv.ParseBool(value)
		if err != nil || (value != "true" && value != "false") {
			return nil, fmt.Errorf("%s is true or false, not %q", key, value)
		}
		return json.RawMessage(strconv.FormatBool(b)), nil
	default:
		if len(p.Values) > 0 && !slices.Contains(p.Values, value) {
			return nil, fmt.Errorf("%s is one of %v, not %q", key, p.Values, value)
		}
		return json.Marshal(value)
	}
}

// ConfigString is the string form of a configuration value as the API returns it.
func ConfigString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func deref(s *string) string {
	if s == nil {
		return "a later version"
	}
	return *s
}

func deref64(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}
