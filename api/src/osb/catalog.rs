//! `GET /v2/catalog` (spec *Catalog Management*) from the catalog the API serves at `/v1/catalog`: one
//! Service Offering per service, one Service Plan per plan, each plan's `maintenance_info` the newest
//! offered version of its service (what a provision gets, and what an update carrying it upgrades to),
//! and the parameters' JSON schemas made from the catalog's parameters.

use axum::{Json, extract::State};
use domain::catalog::{ApplyMode, ConfigKind, ServiceOffering};
use serde_json::{Map, Value, json};

use super::ids;
use crate::AppState;

/// Whether a service's plans are bindable: bindings are the instance's users (issue 27), which the cluster
/// agent makes for `domain::instance::users::USER_SERVICES` only; the others say so rather than accept
/// binds they cannot honour.
pub fn bindable(service: domain::ServiceType) -> bool {
    domain::instance::users::USER_SERVICES.contains(&service)
}

/// The newest offered version of a service: what a provision without a `version` parameter gets.
pub fn newest_version(offering: &ServiceOffering) -> &str {
    offering.versions.last().map(String::as_str).unwrap_or_default()
}

/// The catalog (spec *Catalog Management*, *Body*).
pub async fn get_catalog(State(state): State<AppState>) -> Json<Value> {
    Json(catalog(state.catalog()))
}

/// The catalog document for `catalog`.
pub fn catalog(catalog: &domain::Catalog) -> Value {
    let services: Vec<Value> = catalog.offerings().iter().map(service).collect();
    json!({ "services": services })
}

fn service(offering: &ServiceOffering) -> Value {
    let service = offering.service;
    let newest = newest_version(offering);
    let bindable = bindable(service);
    let plans: Vec<Value> = offering
        .plans
        .iter()
        .map(|plan| {
            let r = plan.resources;
            json!({
                "id": ids::plan_id(service, &plan.name),
                "name": plan.name,
                "description": format!(
                    "{} mCPU, {} MiB memory, {} replica(s), {} GiB storage to start with",
                    r.cpu_millis, r.memory_mib, r.replicas, plan.storage_gib
                ),
                "bindable": bindable,
                "binding_rotatable": bindable,
                "plan_updateable": true,
                "maintenance_info": {
                    "version": ids::maintenance_version(newest),
                    "description": format!("{service} {newest}"),
                },
                "schemas": schemas(offering, plan.storage_gib, bindable),
            })
        })
        .collect();
    json!({
        "id": ids::service_id(service),
        "name": service.as_str(),
        "description": format!("{service}, managed: provisioned, upgraded and backed up by the control plane"),
        "tags": [service.as_str()],
        "bindable": bindable,
        "instances_retrievable": true,
        "bindings_retrievable": bindable,
        "allow_context_updates": false,
        "plan_updateable": true,
        "metadata": {"displayName": display_name(service)},
        "plans": plans,
    })
}

fn schemas(offering: &ServiceOffering, plan_storage_gib: u32, bindable: bool) -> Value {
    let mut schemas = json!({
        "service_instance": {
            "create": {"parameters": parameters(offering, plan_storage_gib, true)},
            "update": {"parameters": parameters(offering, plan_storage_gib, false)},
        },
    });
    if bindable {
        let roles = domain::instance::users::user_roles(offering.service);
        schemas["service_binding"] = json!({"create": {"parameters": {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {"role": {"type": "string", "enum": roles,
                "description": format!("the binding user's role; {} when absent", roles[0])}},
        }}});
    }
    schemas
}

fn display_name(service: domain::ServiceType) -> &'static str {
    match service {
        domain::ServiceType::Postgresql => "PostgreSQL",
        domain::ServiceType::Mongodb => "MongoDB",
        domain::ServiceType::Influxdb => "InfluxDB",
        domain::ServiceType::Grafana => "Grafana",
    }
}

/// The `parameters` a provision (`create`) or an update accepts: the service's configuration parameters
/// (an update leaves out those set at provision only), `storage_gib` (at least the plan's), and on
/// provision the `version` (the newest when absent). JSON Schema draft-04 with `$schema`, as the spec asks
/// (*Input Parameters Schema Object*).
pub fn parameters(offering: &ServiceOffering, plan_storage_gib: u32, create: bool) -> Value {
    let mut properties = Map::new();
    if create {
        properties.insert(
            "version".into(),
            json!({"type": "string", "enum": offering.versions,
                   "description": format!("{} version; the newest offered when absent", offering.service)}),
        );
    }
    properties.insert(
        "storage_gib".into(),
        json!({"type": "integer", "minimum": plan_storage_gib, "maximum": domain::instance::MAX_STORAGE_GIB,
               "description": "storage in GiB; the plan's when absent; it only grows"}),
    );
    for key in &offering.config_keys {
        if !create && key.apply == ApplyMode::Immutable {
            continue;
        }
        let mut schema = match &key.kind {
            ConfigKind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
            ConfigKind::Boolean => json!({"type": "boolean"}),
            ConfigKind::OneOf { values } => json!({"type": "string", "enum": values}),
        };
        schema["description"] = Value::String(key.description.clone());
        properties.insert(key.name.clone(), schema);
    }
    json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_is_offered_with_its_plans_and_the_newest_version_as_maintenance_info() {
        let document = catalog(domain::Catalog::builtin());
        let services = document["services"].as_array().unwrap();
        assert_eq!(services.len(), domain::Catalog::builtin().offerings().len());
        let postgresql = services.iter().find(|s| s["name"] == "postgresql").unwrap();
        let starter =
            postgresql["plans"].as_array().unwrap().iter().find(|p| p["name"] == "starter").unwrap();
        assert_eq!(starter["maintenance_info"]["version"], "18.0.0");
        let create = &starter["schemas"]["service_instance"]["create"]["parameters"];
        assert_eq!(create["$schema"], "http://json-schema.org/draft-04/schema#");
        assert_eq!(create["properties"]["max_connections"]["maximum"], 5000);
        assert!(create["properties"]["data_checksums"].is_object(), "set at provision");
        let update = &starter["schemas"]["service_instance"]["update"]["parameters"];
        assert!(update["properties"]["data_checksums"].is_null(), "immutable: not in an update");
        assert!(update["properties"]["version"].is_null(), "a version changes through maintenance_info");
        assert_eq!(starter["bindable"], true, "PostgreSQL users are made");
        let roles =
            &starter["schemas"]["service_binding"]["create"]["parameters"]["properties"]["role"]["enum"];
        assert_eq!(roles, &serde_json::json!(["readwrite", "readonly"]));
        let grafana = services.iter().find(|s| s["name"] == "grafana").unwrap();
        assert_eq!(grafana["bindable"], true, "Grafana's users (service accounts) are made");
        let plan = &grafana["plans"][0];
        let roles = &plan["schemas"]["service_binding"]["create"]["parameters"]["properties"]["role"]["enum"];
        assert_eq!(roles, &serde_json::json!(["Editor", "Viewer"]));
    }
}
