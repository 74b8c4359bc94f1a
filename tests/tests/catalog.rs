//! The served catalog: what a client may provision, and how each configuration change applies.

use axum::http::{Method, StatusCode};
use serde_json::Value;
use system_tests::TestApi;

fn parameter<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("parameter {name} in {service}"))
}

#[tokio::test]
async fn the_catalog_lists_versions_upgrade_paths_plans_and_each_parameter_s_apply_mode() {
    let api = TestApi::start().await;
    let catalog = api.call(Method::GET, "/v1/catalog", None, &[]).await;
    assert_eq!(catalog.status, StatusCode::OK);
    let services: Vec<&str> =
        catalog.body["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(services, ["postgresql", "mongodb", "influxdb", "grafana"]);

    let postgres = &catalog.body["services"][0];
    // PostgreSQL's postmaster-context parameters restart (CloudNativePG rolls the pods); the rest reload.
    assert_eq!(parameter(postgres, "max_connections")["apply"], "restart");
    assert_eq!(parameter(postgres, "wal_level")["apply"], "restart");
    assert_eq!(parameter(postgres, "work_mem_kib")["apply"], "dynamic");
    assert_eq!(parameter(postgres, "data_checksums")["apply"], "immutable");
    assert_eq!(parameter(postgres, "max_connections")["type"], "integer");
    assert_eq!(parameter(postgres, "max_connections")["minimum"], 10);
    assert_eq!(parameter(postgres, "wal_level")["values"], serde_json::json!(["replica", "logical"]));
    assert_eq!(postgres["versions"][1]["version"], "15");
    assert_eq!(postgres["versions"][1]["upgrades_to"], serde_json::json!(["16", "17"]));

    let mongo = api.call(Method::GET, "/v1/catalog/mongodb", None, &[]).await;
    assert_eq!(mongo.status, StatusCode::OK);
    assert_eq!(mongo.body["upgrade_path"], "one_major_at_a_time");
    assert_eq!(mongo.body["versions"][0]["upgrades_to"], serde_json::json!(["7.0"]));
    assert!(
        mongo.body["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "ha" && p["resources"]["replicas"] == 3)
    );

    let unknown = api.call(Method::GET, "/v1/catalog/oracle", None, &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.header("content-type"), Some("application/problem+json"));
}

/// What the catalog says is what provisioning accepts: every parameter at its bounds is accepted, one past
/// them refused, and the OpenAPI document's provision schema lists the same parameters.
#[tokio::test]
async fn provisioning_accepts_exactly_what_the_catalog_serves() {
    let api = TestApi::start().await;
    let catalog = api.call(Method::GET, "/v1/catalog/postgresql", None, &[]).await.body;
    let document = api.call(Method::GET, "/openapi.json", None, &[]).await.body;
    let variant = &document["components"]["schemas"]["ProvisionRequest"]["oneOf"][0];
    for p in catalog["parameters"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        assert!(variant["properties"]["config"]["properties"].get(name).is_some(), "{name} in the document");
        if p["type"] != "integer" {
            continue;
        }
        for (n, (value, accepted)) in
            [(p["maximum"].clone(), true), (Value::from(p["maximum"].as_i64().unwrap() + 1), false)]
                .into_iter()
                .enumerate()
        {
            let body = serde_json::json!({"name": format!("{}-{n}", name.replace('_', "-")), "service": "postgresql",
                "version": "16", "plan": "starter", "config": {name: value}});
            let reply = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
            let want = if accepted { StatusCode::ACCEPTED } else { StatusCode::UNPROCESSABLE_ENTITY };
            assert_eq!(reply.status, want, "{name} = {value}: {}", reply.body);
        }
    }
}
