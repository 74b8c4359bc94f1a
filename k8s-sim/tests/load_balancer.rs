//! The stand-in cloud load-balancer controller: Services of type LoadBalancer get an address of their
//! own from the pool, others none, and a Service that stops being a load balancer loses its address.

use std::time::Duration;

use k8s_sim::{Simulator, SimulatorOptions, load_balancer::parse_pool, store::Store};
use serde_json::{Value, json};

fn service(name: &str, ty: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"type": ty, "ports": [{"port": 5432}]}})
}

fn address(store: &Store, name: &str) -> Option<String> {
    let services = store.resource_type("", "v1", "services").unwrap();
    let service = store.get(&services, "cp-acme", name)?;
    service["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn load_balancer_services_get_distinct_addresses_from_the_pool_and_others_none() {
    let pool = parse_pool("198.51.100.0/30").unwrap();
    let sim =
        Simulator::new(SimulatorOptions { load_balancer_pool: Some(pool), ..SimulatorOptions::default() });
    {
        let mut store = sim.store();
        let namespaces = store.resource_type("", "v1", "namespaces").unwrap();
        store.create(&namespaces, "", json!({"metadata": {"name": "cp-acme"}})).unwrap();
        let services = store.resource_type("", "v1", "services").unwrap();
        for (name, ty) in [("a-endpoint", "LoadBalancer"), ("b-endpoint", "LoadBalancer"), ("c", "ClusterIP")]
        {
            store.create(&services, "cp-acme", service(name, ty)).unwrap();
        }
    }
    let published = sim
        .wait_until(Duration::from_secs(5), |store| {
            address(store, "a-endpoint").is_some() && address(store, "b-endpoint").is_some()
        })
        .await;
    assert!(published, "no address published");
    let (a, b) = {
        let store = sim.store();
        (address(&store, "a-endpoint").unwrap(), address(&store, "b-endpoint").unwrap())
    };
    assert_ne!(a, b, "each load balancer has an address of its own");
    for ip in [&a, &b] {
        assert!(pool.contains(&ip.parse::<std::net::Ipv4Addr>().unwrap()), "{ip} is from the pool");
    }
    assert_eq!(address(&sim.store(), "c"), None, "a ClusterIP Service has no load balancer");

    // The pool (/30: two hosts) is exhausted: a third load balancer waits without an address.
    {
        let mut store = sim.store();
        let services = store.resource_type("", "v1", "services").unwrap();
        store.create(&services, "cp-acme", service("d-endpoint", "LoadBalancer")).unwrap();
        store
            .merge_patch(&services, "cp-acme", "a-endpoint", &json!({"spec": {"type": "ClusterIP"}}), false)
            .unwrap();
    }
    assert!(
        sim.wait_until(Duration::from_secs(5), |store| address(store, "a-endpoint").is_none()).await,
        "the address stayed on a Service that is no load balancer any more"
    );
    // Freed, the address goes to the next Service that asks (here when it is next changed, as a
    // controller's resync would).
    {
        let mut store = sim.store();
        let services = store.resource_type("", "v1", "services").unwrap();
        store
            .merge_patch(
                &services,
                "cp-acme",
                "d-endpoint",
                &json!({"metadata": {"labels": {"x": "y"}}}),
                false,
            )
            .unwrap();
    }
    assert!(
        sim.wait_until(Duration::from_secs(5), |store| address(store, "d-endpoint").as_deref()
            == Some(a.as_str()))
            .await,
        "the freed address was not given to the waiting Service"
    );
}
