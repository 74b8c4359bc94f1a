//! What every route needs, in one table. A test fails when a route is served without an entry here, so
//! a new route cannot be added open by mistake.

use axum::http::Method;

use super::Role;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// nothing: health, metrics and the API's own documentation
    Public,
    /// any valid token
    Authenticated,
    /// at least this role in the route's `{project}`
    Project(Role),
    /// the platform-admin role
    PlatformAdmin,
    /// what the OSB facade's own guard asks (`crate::osb::auth`: HTTP Basic with an API token as password,
    /// then the role in the project of the instance addressed)
    Broker,
}

use Requirement::{Authenticated, Broker, PlatformAdmin, Project, Public};

/// Every route with its method and requirement. Documentation routes (`/openapi.json`, `/docs…`) are
/// public too; see [`requirement`].
pub const ROUTES: &[(&str, &str, Requirement)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/openapi.json", Public),
    // The dashboard's page and assets hold no data; what they fetch is authorized as usual.
    ("GET", "/", Public),
    ("GET", "/ui", Public),
    ("GET", "/ui/", Public),
    ("GET", "/ui/{asset}", Public),
    ("GET", "/v1/catalog", Authenticated),
    ("GET", "/v1/catalog/{service}", Authenticated),
    ("GET", "/v1/admin/clusters", PlatformAdmin),
    ("PUT", "/v1/admin/clusters/{name}", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/cordon", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/uncordon", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/drain", PlatformAdmin),
    // Where an instance runs is the platform's to decide, not the project's.
    ("POST", "/v1/projects/{project}/instances/{id}/migrate", PlatformAdmin),
    ("DELETE", "/v1/projects/{project}/instances/{id}/migration", PlatformAdmin),
    ("GET", "/v1/admin/dead-letters", PlatformAdmin),
    ("POST", "/v1/admin/rollouts", PlatformAdmin),
    ("GET", "/v1/admin/rollouts", PlatformAdmin),
    ("GET", "/v1/admin/rollouts/{id}", PlatformAdmin),
    ("GET", "/v1/projects/{project}/instances", Project(Role::Viewer)),
    ("POST", "/v1/projects/{project}/instances", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}", Project(Role::Viewer)),
    ("PATCH", "/v1/projects/{project}/instances/{id}", Project(Role::Editor)),
    ("DELETE", "/v1/projects/{project}/instances/{id}", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}/acl", Project(Role::Viewer)),
    ("PUT", "/v1/projects/{project}/instances/{id}/acl", Project(Role::Editor)),
    ("POST", "/v1/projects/{project}/instances/{id}/acl", Project(Role::Editor)),
    ("DELETE", "/v1/projects/{project}/instances/{id}/acl/{cidr}", Project(Role::Editor)),
    // Credentials let their holder into the database: more than a viewer may see.
    ("GET", "/v1/projects/{project}/instances/{id}/credentials", Project(Role::Editor)),
    ("POST", "/v1/projects/{project}/instances/{id}/credentials/rotate", Project(Role::Editor)),
    ("POST", "/v1/projects/{project}/instances/{id}/maintenance/apply", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}/users", Project(Role::Viewer)),
    ("POST", "/v1/projects/{project}/instances/{id}/users", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}/users/{name}", Project(Role::Viewer)),
    ("DELETE", "/v1/projects/{project}/instances/{id}/users/{name}", Project(Role::Editor)),
    ("POST", "/v1/projects/{project}/instances/{id}/users/{name}/password/rotate", Project(Role::Editor)),
    // A user's password lets its holder into the database, like the instance's credentials.
    ("GET", "/v1/projects/{project}/instances/{id}/users/{name}/credentials", Project(Role::Editor)),
    ("POST", "/v1/projects/{project}/instances/{id}/backups", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}/backups", Project(Role::Viewer)),
    ("GET", "/v1/projects/{project}/instances/{id}/backups/{backup_id}", Project(Role::Viewer)),
    // Destroys data, or replaces live data with a backup's: admin (ARCHITECTURE.md, *Roles*). A PATCH
    // turning deletion protection off needs admin too, checked in its handler (it depends on the body).
    ("DELETE", "/v1/projects/{project}/instances/{id}/backups/{backup_id}", Project(Role::Admin)),
    ("POST", "/v1/projects/{project}/instances/{id}/restore", Project(Role::Admin)),
    ("GET", "/v1/projects/{project}/instances/{id}/history", Project(Role::Viewer)),
    ("GET", "/v1/projects/{project}/instances/{id}/diff", Project(Role::Viewer)),
    ("GET", "/v1/projects/{project}/instances/{id}/history/verify", Project(Role::Viewer)),
    ("GET", "/v1/projects/{project}/instances/{id}/backup-schedules", Project(Role::Viewer)),
    ("POST", "/v1/projects/{project}/instances/{id}/backup-schedules", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Project(Role::Viewer)),
    ("PUT", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Project(Role::Editor)),
    ("DELETE", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Project(Role::Editor)),
    ("GET", "/v1/projects/{project}/operations/{operation_id}", Project(Role::Viewer)),
    ("GET", "/v1/projects/{project}/events", Project(Role::Viewer)),
    // The Open Service Broker API (`crate::osb`): its routes carry no project; its guard authenticates.
    ("GET", "/v2/catalog", Broker),
    ("GET", "/v2/service_instances/{instance_id}", Broker),
    ("PUT", "/v2/service_instances/{instance_id}", Broker),
    ("PATCH", "/v2/service_instances/{instance_id}", Broker),
    ("DELETE", "/v2/service_instances/{instance_id}", Broker),
    ("GET", "/v2/service_instances/{instance_id}/last_operation", Broker),
    ("GET", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", Broker),
    ("PUT", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", Broker),
    ("DELETE", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", Broker),
    ("GET", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation", Broker),
];

/// What `method` on the route template `route` needs: `None` when the table has the route but not the
/// method (nothing serves it: 405). A route missing from [`ROUTES`] needs the platform-admin role: closed,
/// not open, until someone decides.
pub fn requirement(method: &Method, route: &str) -> Option<Requirement> {
    if route == "/docs" || route.starts_with("/docs/") {
        return Some(Public);
    }
    let mut listed = false;
    for (m, _, requirement) in ROUTES.iter().filter(|(_, r, _)| *r == route) {
        if *m == method.as_str() {
            return Some(*requirement);
        }
        listed = true;
    }
    if listed { None } else { Some(PlatformAdmin) }
}

/// The methods the table lists for `route`, for an `Allow` header.
pub fn allowed_methods(route: &str) -> String {
    ROUTES.iter().filter(|(_, r, _)| *r == route).map(|(m, _, _)| *m).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves (its OpenAPI paths, which `utoipa-axum` builds from the same
    /// handlers) has its own entry: none falls to the closed default unnoticed.
    #[test]
    fn every_served_route_has_an_entry_in_the_table() {
        let (_, document) = crate::routes::router();
        let mut missing = Vec::new();
        for (path, item) in &document.paths.paths {
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (method, served) in methods {
                if served && !ROUTES.iter().any(|(m, r, _)| *m == method && r == path) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        assert!(missing.is_empty(), "routes without an entry in auth::ROUTES: {missing:?}");
    }

    #[test]
    fn a_route_missing_from_the_table_is_closed() {
        assert_eq!(requirement(&Method::GET, "/v1/something-new"), Some(Requirement::PlatformAdmin));
        assert_eq!(requirement(&Method::GET, "/docs/swagger-ui.css"), Some(Requirement::Public));
        assert_eq!(requirement(&Method::TRACE, "/healthz"), None);
    }
}
