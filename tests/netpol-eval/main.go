// Command netpol-eval answers "may this peer reach that one on this port" for a set of Kubernetes
// NetworkPolicies, with the policy engine of github.com/mattfenwick/cyclonus (pkg/matcher), an upstream
// reading of networking.k8s.io/v1 independent of the agent's own (cluster-agent/tests/netpol_cyclonus.rs
// runs it on the policies the agent made on the real API server).
//
// Input on stdin, one JSON document:
//
//	{"policies":   [networking.k8s.io/v1 NetworkPolicy objects, as the API server returns them],
//	 "namespaces": [{"name": "cp-acme", "labels": {...}}],
//	 "pods":       [{"namespace": "cp-acme", "name": "mongo-0", "labels": {...}, "ip": "10.244.0.5"}],
//	 "queries":    [{"from": {"pod": "cp-acme/mongo-0"} | {"ip": "203.0.113.7"},
//	                 "to":   {"pod": "ns/name"} | {"ip": "169.254.169.254"},
//	                 "port": 27017, "portName": "", "protocol": "TCP"}]}
//
// Output on stdout: {"results": [{"allowed": bool, "ingress": bool, "egress": bool, "why": "..."}]}, one
// per query in order. "ingress" is whether the destination's ingress policies admit the traffic, "egress"
// whether the source's egress policies let it out; "allowed" is both (cyclonus pkg/matcher/policy.go,
// AllowedResult.IsAllowed). An address that is no listed pod is outside the cluster, which no policy
// isolates (policy.go, IsIngressOrEgressAllowed: "if target is external to cluster -> allow").
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

type namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

type pod struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels"`
	IP        string            `json:"ip"`
}

type peer struct {
	Pod string `json:"pod"`
	IP  string `json:"ip"`
}

type query struct {
	From     peer   `json:"from"`
	To       peer   `json:"to"`
	Port     int    `json:"port"`
	PortName string `json:"portName"`
	Protocol string `json:"protocol"`
}

type input struct {
	Policies   []*networkingv1.NetworkPolicy `json:"policies"`
	Namespaces []namespace                   `json:"namespaces"`
	Pods       []pod                         `json:"pods"`
	Queries    []query                       `json:"queries"`
}

type result struct {
	Allowed bool   `json:"allowed"`
	Ingress bool   `json:"ingress"`
	Egress  bool   `json:"egress"`
	Why     string `json:"why"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "netpol-eval:", err)
		os.Exit(1)
	}
}

func run() error {
	var in input
	decoder := json.NewDecoder(os.Stdin)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&in); err != nil {
		return fmt.Errorf("reading the input: %w", err)
	}
	for _, p := range in.Policies {
		// cyclonus pkg/matcher/builder.go BuildTarget panics on a policy without policyTypes; the API
		// server always fills them in (k8s.io/api networking/v1 types.go, NetworkPolicySpec.PolicyTypes).
		if len(p.Spec.PolicyTypes) == 0 {
			return fmt.Errorf("policy %s/%s has no policyTypes: pass policies as the API server returns them", p.Namespace, p.Name)
		}
	}
	// Not simplified: the policies are evaluated as written (builder.go, BuildNetworkPolicies).
	policy := matcher.BuildNetworkPolicies(false, in.Policies)

	namespaceLabels := map[string]map[string]string{}
	for _, ns := range in.Namespaces {
		namespaceLabels[ns.Name] = ns.Labels
	}
	pods := map[string]pod{}
	for _, p := range in.Pods {
		if _, ok := namespaceLabels[p.Namespace]; !ok {
			return fmt.Errorf("pod %s/%s: namespace %s is not listed", p.Namespace, p.Name, p.Namespace)
		}
		if p.IP == "" {
			return fmt.Errorf("pod %s/%s has no ip", p.Namespace, p.Name)
		}
		pods[p.Namespace+"/"+p.Name] = p
	}
	trafficPeer := func(q peer) (*matcher.TrafficPeer, error) {
		switch {
		case q.Pod != "" && q.IP == "":
			p, ok := pods[q.Pod]
			if !ok {
				return nil, fmt.Errorf("pod %s is not listed", q.Pod)
			}
			return &matcher.TrafficPeer{
				Internal: &matcher.InternalPeer{
					PodLabels:       p.Labels,
					NamespaceLabels: namespaceLabels[p.Namespace],
					Namespace:       p.Namespace,
				},
				IP: p.IP,
			}, nil
		case q.IP != "" && q.Pod == "":
			return &matcher.TrafficPeer{IP: q.IP}, nil
		default:
			return nil, fmt.Errorf("a peer is either a pod or an ip: %+v", q)
		}
	}

	results := make([]result, 0, len(in.Queries))
	for i, q := range in.Queries {
		from, err := trafficPeer(q.From)
		if err != nil {
			return fmt.Errorf("query %d: from: %w", i, err)
		}
		to, err := trafficPeer(q.To)
		if err != nil {
			return fmt.Errorf("query %d: to: %w", i, err)
		}
		protocol := v1.Protocol(strings.ToUpper(q.Protocol))
		if protocol == "" {
			protocol = v1.ProtocolTCP
		}
		verdict := policy.IsTrafficAllowed(&matcher.Traffic{
			Source:           from,
			Destination:      to,
			ResolvedPort:     q.Port,
			ResolvedPortName: q.PortName,
			Protocol:         protocol,
		})
		results = append(results, result{
			Allowed: verdict.IsAllowed(),
			Ingress: verdict.Ingress.IsAllowed(),
			Egress:  verdict.Egress.IsAllowed(),
			Why:     why(verdict),
		})
	}
	out := json.NewEncoder(os.Stdout)
	return out.Encode(map[string][]result{"results": results})
}

// why names the policies that allowed or denied each direction.
func why(verdict *matcher.AllowedResult) string {
	names := func(targets []*matcher.Target) string {
		var all []string
		for _, t := range targets {
			for _, rule := range t.SourceRules {
				all = append(all, rule.Namespace+"/"+rule.Name)
			}
		}
		sort.Strings(all)
		return strings.Join(all, ",")
	}
	direction := func(d *matcher.DirectionResult) string {
		if len(d.AllowingTargets) == 0 && len(d.DenyingTargets) == 0 {
			return "not isolated"
		}
		return fmt.Sprintf("allowed by [%s], not by [%s]", names(d.AllowingTargets), names(d.DenyingTargets))
	}
	return fmt.Sprintf("ingress: %s; egress: %s", direction(verdict.Ingress), direction(verdict.Egress))
}
