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
    assert_eq!(postgres["versions"][1]["upgrades_to"], serde_json::json!(["16", "17", "18"]));
    // The roles a user may have, which the dashboard's and the provider's forms offer.
    assert_eq!(postgres["user_roles"], serde_json::json!(["readwrite", "readonly"]));

    let mongo = api.call(Method::GET, "/v1/catalog/mongodb", None, &[]).await;
    assert_eq!(mongo.status, StatusCode::OK);
    assert_eq!(mongo.body["upgrade_path"], "one_major_at_a_time");
    assert_eq!(mongo.body["user_roles"], serde_json::json!(["readWrite", "read"]));
    assert_eq!(mongo.body["versions"][0]["upgrades_to"], serde_json::json!(["7.0"]));
    assert!(
        mongo.body["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "ha" && p["resources"]["replicas"] == 3),
        "MongoDB's ha plan is a replica set of three members (cluster-agent render/replset.rs)"
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

/// An operator's catalog file offers a newer version, a bigger plan and another parameter without a new
/// build: the catalog routes, the validation and the OpenAPI document all follow it.
#[tokio::test]
async fn an_operator_s_catalog_file_extends_what_is_offered() {
    let mut catalog: Value = serde_json::to_value(domain::Catalog::builtin()).unwrap();
    let postgres = &mut catalog["services"][0];
    postgres["versions"].as_array_mut().unwrap().push("19".into());
    postgres["plans"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "xl", "cpu_millis": 16000, "memory_mib": 65536, "replicas": 3, "storage_gib": 1000}));
    postgres["parameters"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "random_page_cost", "kind": {"type": "integer", "min": 1, "max": 100}, "apply": "dynamic",
         "description": "planner's cost of a non-sequential page fetch", "default": 4}));
    postgres["parameters"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "summarize_wal", "kind": {"type": "boolean"}, "apply": "dynamic",
         "description": "WAL summaries for incremental backups", "since": "17"}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&catalog).unwrap()).unwrap();
    let loaded = api::catalog_file::load(&path).expect("a valid catalog file");
    let api = TestApi::start_with_catalog(loaded).await;

    let served = api.call(Method::GET, "/v1/catalog/postgresql", None, &[]).await;
    assert_eq!(served.body["versions"].as_array().unwrap().last().unwrap()["version"], "19");
    assert_eq!(parameter(&served.body, "random_page_cost")["default"], 4);
    assert_eq!(parameter(&served.body, "summarize_wal")["since"], "17");
    let version = |v: &str| {
        served.body["versions"].as_array().unwrap().iter().find(|x| x["version"] == v).unwrap().clone()
    };
    assert!(!version("16")["parameters"].as_array().unwrap().contains(&"summarize_wal".into()));
    assert!(version("17")["parameters"].as_array().unwrap().contains(&"summarize_wal".into()));
    let too_early = serde_json::json!({"name": "early", "service": "postgresql", "version": "16", "plan": "starter",
        "config": {"summarize_wal": true}});
    let refused = api.call(Method::POST, "/v1/projects/acme/instances", Some(&too_early), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["rule"], "parameter_version", "{}", refused.body);
    let body = serde_json::json!({"name": "big", "service": "postgresql", "version": "19", "plan": "xl",
        "config": {"random_page_cost": 2}});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let document = api.call(Method::GET, "/openapi.json", None, &[]).await;
    let variants = document.body["components"]["schemas"]["ProvisionRequest"]["oneOf"].as_array().unwrap();
    assert!(
        variants.iter().any(|v| v["properties"]["plan"]["const"] == "xl"
            && v["properties"]["version"]["enum"].as_array().unwrap().contains(&"19".into())),
        "the document offers what the catalog does"
    );

    // The built-in catalog knows none of it.
    let builtin = TestApi::start().await;
    let refused = builtin.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
}

#[test]
fn a_catalog_file_that_breaks_rules_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.yaml");
    let mut catalog: Value = serde_json::to_value(domain::Catalog::builtin()).unwrap();
    catalog["services"][1]["versions"] = serde_json::json!(["7.0", "6.0"]);
    catalog["services"][2]["plans"][0]["replicas"] = 0.into();
    std::fs::write(&path, serde_saphyr::to_string(&catalog).unwrap()).unwrap();
    let error = api::catalog_file::load(&path).expect_err("refused").to_string();
    assert!(error.contains("services[1].versions[1]: 6.0 is not newer than the one before"), "{error}");
    assert!(error.contains("services[2].plans[0].replicas: must be from 1 to 9"), "{error}");
}
