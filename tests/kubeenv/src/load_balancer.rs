//! A cloud provider's load-balancer controller, stood in for on the real API server: every Service of
//! type `LoadBalancer` gets an address from [`POOL`] in `status.loadBalancer.ingress`, as Kubernetes'
//! service controller writes what the cloud's `EnsureLoadBalancer` returned (kubernetes v1.36
//! `staging/src/k8s.io/cloud-provider/controllers/service/controller.go`, `syncLoadBalancerIfNeeded`,
//! which also clears the status once the Service is no load balancer any more), one address per Service
//! as MetalLB hands them out on bare metal. The simulator's twin is `k8s_sim::load_balancer`.

use std::net::Ipv4Addr;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

/// The addresses handed out: TEST-NET-3 (RFC 5737), a documentation range where nothing answers.
pub const POOL: &str = "203.0.113.0/24";

fn address_of(service: &Service) -> Option<Ipv4Addr> {
    let ingress = service.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
    ingress.first()?.ip.as_deref()?.parse().ok()
}

pub(crate) async fn publish_load_balancers(admin: Client) {
    let pool: ipnet::Ipv4Net = POOL.parse().expect("a CIDR block");
    let services: Api<Service> = Api::all(admin.clone());
    let mut events =
        watcher(services.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    // A watch error is retried with backoff by the stream itself; only its end stops the helper.
    while let Some(service) = events.next().await {
        let Ok(service) = service else { continue };
        let wanted = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
            && service.metadata.deletion_timestamp.is_none();
        let status = match (wanted, address_of(&service).is_some()) {
            (true, false) => {
                let Ok(all) = services.list(&ListParams::default()).await else { continue };
                let taken: Vec<Ipv4Addr> = all.items.iter().filter_map(address_of).collect();
                let Some(ip) = pool.hosts().find(|ip| !taken.contains(ip)) else {
                    tracing::warn!(name = %service.name_any(), "load-balancer pool exhausted");
                    continue;
                };
                json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}})
            }
            (false, true) => json!({"loadBalancer": {"ingress": null}}),
            _ => continue,
        };
        let namespaced: Api<Service> =
            Api::namespaced(admin.clone(), &service.namespace().unwrap_or_default());
        let patch = Patch::Merge(json!({"status": status}));
        if let Err(e) = namespaced.patch_status(&service.name_any(), &PatchParams::default(), &patch).await {
            tracing::warn!(name = %service.name_any(), error = %e, "could not publish the load balancer's address");
        }
    }
}
