//! How the platform's names map onto the control plane's: its instance ids onto instance ids, its
//! `context` onto a project, the catalog's services and plans onto stable OSB ids, and service versions
//! onto `maintenance_info` versions. Every mapping is a pure function, so it is durable by construction:
//! nothing is stored beside the instance to remember it.

use domain::{
    ServiceType,
    instance::{MAX_PROJECT_LEN, check_project},
};
use serde_json::Value;
use uuid::Uuid;

use super::error::OsbError;

/// Name of the UUIDv5 namespace of platform instance ids (RFC 9562 section 5.5, under the URL namespace).
const INSTANCE_NAMESPACE_NAME: &str = "urn:cp:osb:instance";

/// The instance id a platform's `:instance_id` maps to. The spec places no rule on the string (OSB v2.17
/// *URL Properties*); platforms send GUIDs. A canonical (lowercase, hyphenated) UUID *is* the instance id,
/// so the instance is the same under `/v1` and `/v2`; any other string maps to
/// `UUIDv5(UUIDv5(NAMESPACE_URL, "urn:cp:osb:instance"), <the string's bytes>)`. Only the canonical form is
/// taken as is: `ABC…` and `abc…` are two platform ids, and must be two instances.
pub fn instance_id(platform_id: &str) -> Uuid {
    match Uuid::try_parse(platform_id) {
        Ok(id) if id.hyphenated().to_string() == platform_id => id,
        _ => Uuid::new_v5(&namespace(INSTANCE_NAMESPACE_NAME), platform_id.as_bytes()),
    }
}

fn namespace(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// The OSB id of a service: `UUIDv5(NAMESPACE_URL, "urn:cp:osb:service:<service>")` (spec *Service
/// Offering Object*: "MUST be globally unique", never changed across queries).
pub fn service_id(service: ServiceType) -> String {
    namespace(&format!("urn:cp:osb:service:{service}")).to_string()
}

/// The OSB id of a plan of a service: `UUIDv5(NAMESPACE_URL, "urn:cp:osb:plan:<service>:<plan>")`.
pub fn plan_id(service: ServiceType, plan: &str) -> String {
    namespace(&format!("urn:cp:osb:plan:{service}:{plan}")).to_string()
}

/// Name of the UUIDv5 namespace of platform binding ids.
const BINDING_NAMESPACE_NAME: &str = "urn:cp:osb:binding";

/// The user a platform's `:binding_id` is: `osb_` and the 32 hex digits of
/// `UUIDv5(UUIDv5(NAMESPACE_URL, "urn:cp:osb:binding"), <the binding id's bytes>)`, a user name every engine
/// takes (`domain::instance::users::check_name`), the same for the same binding id, whatever it is.
pub fn binding_user(binding_id: &str) -> String {
    format!("osb_{}", Uuid::new_v5(&namespace(BINDING_NAMESPACE_NAME), binding_id.as_bytes()).simple())
}

/// The name an instance provisioned through the broker gets: `osb-` and its id's 32 hex digits (a
/// DNS-1123 label, unique in its project because the id is).
pub fn instance_name(id: Uuid) -> String {
    format!("osb-{}", id.simple())
}

/// A service version as a semantic version 2.0 string, as `maintenance_info.version` must be (spec
/// *Maintenance Info Object*): `17` is `17.0.0`, `7.0` is `7.0.0`.
pub fn maintenance_version(version: &str) -> String {
    let mut parts: Vec<&str> = version.split('.').collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    parts.join(".")
}

/// The project a provision's `context` (and the deprecated top-level `space_guid`) maps to:
///
/// - `"platform": "cloudfoundry"`: `cf-<space_guid>` (a space is where Cloud Foundry keeps service
///   instances; OSB profile *Cloud Foundry Context Object*). Without a `context`, the top-level
///   `space_guid` the spec still requires (spec *Provisioning*, *Body*) is used the same way.
/// - `"platform": "kubernetes"`: `k8s-<namespace>` (profile *Kubernetes Context Object*); the
///   `clusterid` is not part of it: namespaces of the same name on two clusters behind one broker token
///   share a project.
///
/// The result must be a project name (`domain::instance::check_project`: a DNS-1123 label of at most 60
/// characters); a value that does not make one, or another platform, is refused with 400 naming the field.
pub fn project(context: Option<&Value>, space_guid: Option<&str>) -> Result<String, OsbError> {
    let field = |name: &str| context.and_then(|c| c.get(name));
    let text = |name: &str| -> Result<Option<&str>, OsbError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str())),
            Some(_) => Err(OsbError::bad_request(format!("context.{name} must be a non-empty string"))),
        }
    };
    let platform = match context {
        None => "cloudfoundry",
        Some(Value::Object(_)) => text("platform")?.ok_or_else(|| {
            OsbError::bad_request("context.platform is required (OSB profile, Context Object)")
        })?,
        Some(_) => return Err(OsbError::bad_request("context must be an object")),
    };
    let (project, from) = match platform {
        "cloudfoundry" => {
            let space = text("space_guid")?.or(space_guid).ok_or_else(|| {
                OsbError::bad_request("context.space_guid (or space_guid) is required for cloudfoundry")
            })?;
            (format!("cf-{space}"), "context.space_guid")
        }
        "kubernetes" => {
            let namespace = text("namespace")?
                .ok_or_else(|| OsbError::bad_request("context.namespace is required for kubernetes"))?;
            (format!("k8s-{namespace}"), "context.namespace")
        }
        other => {
            return Err(OsbError::bad_request(format!(
                "context.platform {other:?} is not mapped to a project: only cloudfoundry (cf-<space_guid>) \
                 and kubernetes (k8s-<namespace>) are"
            )));
        }
    };
    check_project(&project).map_err(|_| {
        OsbError::bad_request(format!(
            "{from} must make {project:?} a project name: a DNS-1123 label of at most {MAX_PROJECT_LEN} \
             lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    })?;
    Ok(project)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_canonical_uuid_is_the_instance_id_and_any_other_string_is_hashed() {
        let id = "4c3a9c1e-2f0b-4a57-9a7e-0d4e2b6c8f10";
        assert_eq!(instance_id(id).to_string(), id);
        let upper = instance_id(&id.to_uppercase());
        assert_ne!(upper.to_string(), id, "another platform id is another instance");
        assert_eq!(upper.get_version_num(), 5);
        assert_eq!(instance_id("my-db"), instance_id("my-db"), "stable");
        assert_ne!(instance_id("my-db"), instance_id("my-db2"));
    }

    #[test]
    fn a_binding_is_a_user_named_after_its_id() {
        let user = binding_user("b-1");
        assert_eq!(user, binding_user("b-1"));
        assert_ne!(user, binding_user("b-2"));
        domain::instance::users::check_name("/name", &user).expect("a valid user name");
    }

    #[test]
    fn ids_of_services_and_plans_are_stable_and_distinct() {
        assert_eq!(service_id(ServiceType::Postgresql), service_id(ServiceType::Postgresql));
        assert_ne!(service_id(ServiceType::Postgresql), service_id(ServiceType::Mongodb));
        assert_ne!(plan_id(ServiceType::Postgresql, "starter"), plan_id(ServiceType::Mongodb, "starter"));
    }

    #[test]
    fn versions_become_semantic_versions() {
        assert_eq!(maintenance_version("17"), "17.0.0");
        assert_eq!(maintenance_version("7.0"), "7.0.0");
        assert_eq!(maintenance_version("2.7.1"), "2.7.1");
    }

    #[test]
    fn the_context_names_the_project() {
        let cf = json!({"platform": "cloudfoundry", "organization_guid": "o", "space_guid": "1a2b"});
        assert_eq!(project(Some(&cf), None).unwrap(), "cf-1a2b");
        assert_eq!(project(None, Some("1a2b")).unwrap(), "cf-1a2b");
        let k8s = json!({"platform": "kubernetes", "namespace": "shop", "clusterid": "c"});
        assert_eq!(project(Some(&k8s), None).unwrap(), "k8s-shop");
        assert!(project(Some(&json!({"platform": "kubernetes", "namespace": "Shop"})), None).is_err());
        assert!(project(Some(&json!({"platform": "other"})), None).is_err());
        assert!(project(Some(&json!({"namespace": "shop"})), None).is_err());
        assert!(project(None, None).is_err());
    }
}
