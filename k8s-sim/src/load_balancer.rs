//! A cloud provider's load-balancer controller, stood in for: every Service of type `LoadBalancer` gets an
//! address from a pool in `status.loadBalancer.ingress`, as Kubernetes' service controller
//! (kubernetes `staging/src/k8s.io/cloud-provider/controllers/service/controller.go`, `syncLoadBalancerIfNeeded`)
//! writes what the cloud's `EnsureLoadBalancer` returned, and the address is withdrawn when the Service
//! stops being of that type. Addresses are handed out as MetalLB's layer-2 mode does for bare metal (one
//! per Service from a configured range, kept for the Service's life; metallb `internal/allocator`).
//!
//! Off unless [`crate::SimulatorOptions::load_balancer_pool`] names a pool: tests that play the cloud
//! themselves publish the address when they choose. The local demo (`./dev up`) turns it on with
//! documentation ranges (RFC 5737), so a user sees where a cloud would put the endpoint; nothing answers
//! there.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::server::Simulator;

/// Kubernetes' key of Services in the simulator's store.
pub(crate) const SERVICES: &str = "services";

/// Publishes or withdraws the address of the Service `name` in `namespace` after a change to it.
pub(crate) fn sync(sim: &Simulator, namespace: &str, name: &str) {
    let Some(pool) = sim.inner.options.load_balancer_pool else { return };
    let mut store = sim.store();
    let Some(ty) = store.types().iter().find(|t| t.key() == SERVICES).cloned() else { return };
    let Some(service) = store.get(&ty, namespace, name) else { return };
    let published = service["status"]["loadBalancer"]["ingress"].as_array().is_some_and(|i| !i.is_empty());
    let wanted =
        service["spec"]["type"] == "LoadBalancer" && service["metadata"]["deletionTimestamp"].is_null();
    let status = match (wanted, published) {
        (true, false) => {
            let taken: Vec<Ipv4Addr> = store.list(&ty, None, None).iter().filter_map(address_of).collect();
            let Some(ip) = pool.hosts().find(|ip| !taken.contains(ip)) else {
                tracing::warn!(%pool, namespace, name, "load-balancer pool exhausted");
                return;
            };
            // core/v1 LoadBalancerIngress: `ip`, and `ipMode: VIP` (traffic arrives with the Service's
            // address as its destination, the default when unset; Kubernetes 1.30+).
            json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}})
        }
        (false, true) => json!({"loadBalancer": {"ingress": null}}),
        _ => return,
    };
    let _ = store.merge_patch(&ty, namespace, name, &json!({"status": status}), true);
}

fn address_of(service: &Value) -> Option<Ipv4Addr> {
    service["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()?.parse().ok()
}

/// Parses a pool such as `198.51.100.0/24`.
pub fn parse_pool(pool: &str) -> Result<Ipv4Net, String> {
    pool.parse::<Ipv4Net>()
        .map(|net| net.trunc())
        .map_err(|e| format!("{pool:?} is not an IPv4 CIDR block: {e}"))
}
