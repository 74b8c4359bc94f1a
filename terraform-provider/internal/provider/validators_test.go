package provider

import (
	"strings"
	"testing"
)

func TestCheckCIDRMatchesTheAPI(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"203.0.113.0/24", ""},
		{"2001:db8::/32", ""},
		{"198.51.100.7/32", ""},
		{"0.0.0.0/0", ""},
		{"203.0.113.5/24", "has host bits set; the block is 203.0.113.0/24"},
		{"2001:DB8::/32", "not in canonical form; write it as 2001:db8::/32"},
		{"2001:db8:0:0::/64", "not in canonical form; write it as 2001:db8::/64"},
		{"10.0.0.1", "is not a CIDR block"},
		{"nonsense", "is not a CIDR block"},
	} {
		got := checkCIDR(c.in)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("checkCIDR(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
