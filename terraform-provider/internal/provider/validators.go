package provider

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// canonicalCIDR checks at plan time what the API checks (domain/src/instance/network.rs, check_entry):
// a CIDR block, host bits zero, written in canonical form (IPv6 lowercase and compressed), refused with the
// same messages naming the canonical form, so what is planned is what is read back and never a diff.
type canonicalCIDR struct{}

func (canonicalCIDR) Description(context.Context) string {
	return "an IPv4 or IPv6 block in canonical CIDR form"
}

func (v canonicalCIDR) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (canonicalCIDR) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if msg := checkCIDR(req.ConfigValue.ValueString()); msg != "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid CIDR block", msg)
	}
}

// checkCIDR returns the API's message for a block it would refuse, or "".
func checkCIDR(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return fmt.Sprintf("%q is not a CIDR block such as 203.0.113.0/24 or 2001:db8::/32", s)
	}
	if masked := p.Masked(); masked != p {
		return fmt.Sprintf("%s has host bits set; the block is %s", s, masked)
	}
	if p.String() != s {
		return fmt.Sprintf("%q is not in canonical form; write it as %s", s, p)
	}
	return ""
}
