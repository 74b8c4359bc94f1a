//! The rules a schema can express, written into the generated document: what each route can answer
//! (every route that reads a body can answer 400, 413, 415 and 422; every route on NATS 503), bounds of
//! numeric headers, DNS-1123 names, and the request bodies' catalog rules (`ProvisionRequest` is one
//! variant per service and plan, with that service's versions, the plan's storage floor and the service's
//! configuration parameters, and the clusters and regions registered when the document is served).

use domain::{
    Catalog,
    catalog::{ConfigKind, ServiceOffering},
    instance::{MAX_ACL_ENTRIES, MAX_DESCRIPTION_CHARS, MAX_STORAGE_GIB},
};
use serde_json::{Map, Value, json};

use crate::extract::MAX_SEQUENCE;

/// A DNS-1123 label, as `domain::instance::check_dns_label` checks it.
fn dns_label() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"})
}

/// Free text as `check_description` accepts it: at most 256 characters, none of them control characters.
fn description() -> Value {
    json!({"type": "string", "maxLength": MAX_DESCRIPTION_CHARS,
           "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

fn sequence() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_SEQUENCE})
}

/// Documents a problem+json answer `status`, unless the operation already documents one.
fn add_problem(responses: &mut Value, status: &str, description: &str) {
    if responses.get(status).is_none() {
        let mut response = problem();
        response["description"] = Value::String(description.to_owned());
        responses[status] = response;
    }
}

fn problem() -> Value {
    json!({"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn config_value(kind: &ConfigKind) -> Value {
    match kind {
        ConfigKind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        ConfigKind::Boolean => json!({"type": "boolean"}),
        ConfigKind::OneOf { values } => json!({"type": "string", "enum": values}),
    }
}

fn config(offering: &ServiceOffering) -> Value {
    let properties: Map<String, Value> =
        offering.config_keys.iter().map(|key| (key.name.clone(), config_value(&key.kind))).collect();
    json!({"type": "object", "additionalProperties": false, "properties": properties,
           "description": format!("{} configuration parameters", offering.service)})
}

/// `enum` of the registered names, or only `null` when none is registered.
fn registered(names: Vec<String>) -> Value {
    let mut values: Vec<Value> = names.into_iter().map(Value::String).collect();
    values.dedup();
    values.push(Value::Null);
    json!({"type": ["string", "null"], "enum": values})
}

/// `ProvisionRequest`: one variant per service and plan.
fn provision_request(original: &Value, clusters: &[domain::Cluster], catalog: &Catalog) -> Value {
    let described = |name: &str, mut schema: Value| {
        if let Some(text) = original["properties"][name]["description"].as_str() {
            schema["description"] = Value::String(text.to_owned());
        }
        schema
    };
    let mut regions: Vec<String> = clusters.iter().map(|c| c.region.clone()).collect();
    regions.sort();
    let cluster_names: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();
    let mut variants = Vec::new();
    for offering in catalog.offerings() {
        for plan in &offering.plans {
            let properties = json!({
                "name": described("name", dns_label()),
                "service": described("service", json!({"type": "string", "const": offering.service.as_str()})),
                "version": described("version", json!({"type": "string", "enum": offering.versions})),
                "plan": described("plan", json!({"type": "string", "const": plan.name})),
                "storage_gib": described("storage_gib", json!({"type": ["integer", "null"],
                    "minimum": plan.storage_gib, "maximum": MAX_STORAGE_GIB})),
                "config": described("config", config(offering)),
                "description": described("description", description()),
                "deletion_protection": described("deletion_protection", json!({"type": "boolean"})),
                "cluster": described("cluster", registered(cluster_names.clone())),
                "region": described("region", registered(regions.clone())),
                "acl": described("acl", json!({"type": "array", "maxItems": MAX_ACL_ENTRIES,
                    "items": {"$ref": "#/components/schemas/AclEntry"}})),
                "allow_public": described("allow_public", json!({"type": "boolean"})),
                "maintenance_window": described("maintenance_window", json!({"oneOf": [
                    {"$ref": "#/components/schemas/MaintenanceWindow"}, {"type": "null"}]})),
            });
            variants.push(json!({
                "title": format!("{} on plan {}", offering.service, plan.name),
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "service", "version", "plan"],
                "properties": properties,
            }));
        }
    }
    json!({"description": original["description"], "oneOf": variants})
}

/// Writes the rules into `document` (the generated OpenAPI document as JSON).
pub(super) fn apply(document: &mut Value, clusters: &[domain::Cluster], catalog: &Catalog) {
    if let Some(paths) = document["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                    operation_rules(path, operation);
                    security_rules(method, path, operation);
                }
            }
        }
    }
    document["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer",
        "description": "an API token (`cp-api --new-token`) or, where configured, a JWT from the OIDC issuer"}});
    document["security"] = json!([{"bearer": []}]);
    let schemas = &mut document["components"]["schemas"];
    if schemas["ProvisionRequest"].is_object() {
        schemas["ProvisionRequest"] = provision_request(&schemas["ProvisionRequest"], clusters, catalog);
    }
    if schemas["MaintenanceWindow"].is_object() {
        // Every name the domain takes, so that a window the schema admits is one the API accepts.
        let zones: Vec<&str> = domain::instance::maintenance::time_zone_names().collect();
        schemas["MaintenanceWindow"]["properties"]["time_zone"]["enum"] = json!(zones);
    }
    if schemas["ClusterRequest"].is_object() {
        schemas["ClusterRequest"]["properties"]["region"] = dns_label();
    }
    let scalar_or_null = json!({"type": ["boolean", "integer", "string", "null"]});
    if schemas["CatalogParameter"]["properties"]["default"].is_object() {
        let description = schemas["CatalogParameter"]["properties"]["default"]["description"].clone();
        schemas["CatalogParameter"]["properties"]["default"] = scalar_or_null.clone();
        schemas["CatalogParameter"]["properties"]["default"]["description"] = description;
    }
    if schemas["Observed"]["properties"]["config"].is_object() {
        schemas["Observed"]["properties"]["config"]["additionalProperties"] =
            json!({"type": ["boolean", "integer", "string"]});
    }
    if schemas["Instance"]["properties"]["config"].is_object() {
        schemas["Instance"]["properties"]["config"]["additionalProperties"] =
            json!({"type": ["boolean", "integer", "string"]});
    }
    let update = &mut schemas["UpdateRequest"]["properties"];
    if update.is_object() {
        update["storage_gib"] =
            json!({"type": ["integer", "null"], "minimum": 1, "maximum": MAX_STORAGE_GIB});
        update["description"] = json!({"anyOf": [description(), {"type": "null"}]});
        update["config"] = json!({"type": ["object", "null"], "additionalProperties":
            {"type": ["boolean", "integer", "string", "null"]}});
    }
}

/// Who may call the operation, from the route table (`crate::auth::ROUTES`), and the answers for those
/// who may not.
fn security_rules(method: &str, path: &str, operation: &mut Value) {
    use crate::auth::Requirement;
    let method = axum::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or_default();
    let requirement = crate::auth::requirement(&method, path).unwrap_or(Requirement::PlatformAdmin);
    if requirement == Requirement::Public {
        operation["security"] = json!([]);
        return;
    }
    let responses = &mut operation["responses"];
    let mut add = |status: &str, description: &str| add_problem(responses, status, description);
    add("401", "no bearer token, or one that is not valid (see `WWW-Authenticate`)");
    match requirement {
        Requirement::Project(role) => {
            add("403", &format!("the token's role in the project is below {}", role.as_str()));
            add("404", "not found, or in a project the token has no role in");
        }
        Requirement::PlatformAdmin => add("403", "the token is not a platform admin's"),
        Requirement::Public | Requirement::Broker | Requirement::Authenticated => {}
    }
}

fn operation_rules(path: &str, operation: &mut Value) {
    let mut bad_request = operation.get("requestBody").is_some();
    let mut invalid_path = false;
    if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for parameter in parameters {
            let name = parameter["name"].as_str().unwrap_or_default().to_ascii_lowercase();
            match (parameter["in"].as_str(), name.as_str()) {
                (Some("path"), "project" | "name") => {
                    parameter["schema"] = dns_label();
                    invalid_path = true;
                }
                (Some("header"), "cp-min-sequence" | "last-event-id") => {
                    parameter["schema"] = sequence();
                    bad_request = true;
                }
                (Some("query"), "after") => {
                    parameter["schema"] = json!({"type": "integer", "format": "int64",
                        "minimum": 0, "maximum": MAX_SEQUENCE});
                    bad_request = true;
                }
                (Some("header"), "if-match") => {
                    parameter["schema"] =
                        json!({"type": "string", "pattern": "^(|\\*|(W/)?\"[0-9]{1,19}\")$"});
                    bad_request = true;
                }
                (Some("header"), "idempotency-key") => {
                    parameter["schema"] =
                        json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"});
                    bad_request = true;
                }
                (Some("query"), _) => bad_request = true,
                _ => {}
            }
        }
    }
    let has_body = operation.get("requestBody").is_some();
    let reads_after_a_write =
        operation.get("parameters").and_then(Value::as_array).is_some_and(|parameters| {
            parameters
                .iter()
                .any(|p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("cp-min-sequence")))
        });
    let responses = &mut operation["responses"];
    let mut add = |status: &str, description: &str| add_problem(responses, status, description);
    if bad_request {
        add("400", "a malformed body, header or query parameter");
    }
    if invalid_path {
        add("422", "a path parameter is not a DNS-1123 label");
    }
    if has_body {
        add("413", "the body is larger than the API accepts");
        add(
            "415",
            "the body is not JSON (`Content-Type: application/json` or `application/merge-patch+json`)",
        );
        add("422", "the body breaks a rule; `errors` names each field and rule");
    }
    if reads_after_a_write {
        add("409", "`Cp-Min-Sequence` is beyond the end of the event stream: no write returned it here");
    }
    // The catalog is served from memory; everything else under /v1 needs NATS or the read models.
    if path.starts_with("/v1/") && !path.starts_with("/v1/catalog") {
        add("503", "NATS or the read models are unavailable; retry (see `Retry-After`)");
    }
}
