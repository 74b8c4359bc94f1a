//! Every route × every role × own or other project, from a table of its own: a route whose requirement
//! changes in `api::auth::ROUTES` fails here, and so does a route added without a line in this table.
//!
//! Viewer reads; editor operates; what destroys data or replaces it (deleting a backup, restoring in place)
//! needs admin; platform routes need the platform admin. A project the caller has no role in answers 404,
//! as if it did not exist.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use system_tests::{
    ACME_ADMIN_TOKEN, ACME_EDITOR_TOKEN, ACME_VIEWER_TOKEN, ADMIN_TOKEN, OTHER_EDITOR_TOKEN, TestApi,
};
use tower::ServiceExt as _;

/// What a route needs, as this test expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Public,
    AnyToken,
    Viewer,
    Editor,
    Admin,
    PlatformAdmin,
}

use Needs::{Admin, AnyToken, Editor, PlatformAdmin, Public, Viewer};

const TABLE: &[(&str, &str, Needs)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/openapi.json", Public),
    ("GET", "/", Public),
    ("GET", "/ui", Public),
    ("GET", "/ui/", Public),
    ("GET", "/ui/{asset}", Public),
    ("GET", "/v1/catalog", AnyToken),
    ("GET", "/v1/catalog/{service}", AnyToken),
    ("GET", "/v1/admin/clusters", PlatformAdmin),
    ("PUT", "/v1/admin/clusters/{name}", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/cordon", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/uncordon", PlatformAdmin),
    ("POST", "/v1/admin/clusters/{name}/drain", PlatformAdmin),
    ("POST", "/v1/projects/{project}/instances/{id}/migrate", PlatformAdmin),
    ("DELETE", "/v1/projects/{project}/instances/{id}/migration", PlatformAdmin),
    ("POST", "/v1/admin/rollouts", PlatformAdmin),
    ("GET", "/v1/admin/rollouts", PlatformAdmin),
    ("GET", "/v1/admin/rollouts/{id}", PlatformAdmin),
    ("GET", "/v1/admin/dead-letters", PlatformAdmin),
    ("GET", "/v1/projects/{project}/instances", Viewer),
    ("POST", "/v1/projects/{project}/instances", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}", Viewer),
    ("PATCH", "/v1/projects/{project}/instances/{id}", Editor),
    ("DELETE", "/v1/projects/{project}/instances/{id}", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/acl", Viewer),
    ("PUT", "/v1/projects/{project}/instances/{id}/acl", Editor),
    ("POST", "/v1/projects/{project}/instances/{id}/acl", Editor),
    ("DELETE", "/v1/projects/{project}/instances/{id}/acl/{cidr}", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/credentials", Editor),
    ("POST", "/v1/projects/{project}/instances/{id}/credentials/rotate", Editor),
    ("POST", "/v1/projects/{project}/instances/{id}/maintenance/apply", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/users", Viewer),
    ("POST", "/v1/projects/{project}/instances/{id}/users", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/users/{name}", Viewer),
    ("DELETE", "/v1/projects/{project}/instances/{id}/users/{name}", Editor),
    ("POST", "/v1/projects/{project}/instances/{id}/users/{name}/password/rotate", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/users/{name}/credentials", Editor),
    ("POST", "/v1/projects/{project}/instances/{id}/backups", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/backups", Viewer),
    ("GET", "/v1/projects/{project}/instances/{id}/backups/{backup_id}", Viewer),
    ("DELETE", "/v1/projects/{project}/instances/{id}/backups/{backup_id}", Admin),
    ("POST", "/v1/projects/{project}/instances/{id}/restore", Admin),
    ("GET", "/v1/projects/{project}/instances/{id}/history", Viewer),
    ("GET", "/v1/projects/{project}/instances/{id}/diff", Viewer),
    ("GET", "/v1/projects/{project}/instances/{id}/history/verify", Viewer),
    ("GET", "/v1/projects/{project}/instances/{id}/backup-schedules", Viewer),
    ("POST", "/v1/projects/{project}/instances/{id}/backup-schedules", Editor),
    ("GET", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Viewer),
    ("PUT", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Editor),
    ("DELETE", "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}", Editor),
    ("GET", "/v1/projects/{project}/operations/{operation_id}", Viewer),
    ("GET", "/v1/projects/{project}/events", Viewer),
    // The Open Service Broker API carries no project in its paths: its guard authenticates (401 without a
    // token), and each handler checks the role in the project of the instance it finds
    // (`tests/tests/system/osb.rs`, `a_token_acts_only_in_its_projects`).
    ("GET", "/v2/catalog", AnyToken),
    ("GET", "/v2/service_instances/{instance_id}", AnyToken),
    ("PUT", "/v2/service_instances/{instance_id}", AnyToken),
    ("PATCH", "/v2/service_instances/{instance_id}", AnyToken),
    ("DELETE", "/v2/service_instances/{instance_id}", AnyToken),
    ("GET", "/v2/service_instances/{instance_id}/last_operation", AnyToken),
    ("GET", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", AnyToken),
    ("PUT", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", AnyToken),
    ("DELETE", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", AnyToken),
    ("GET", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation", AnyToken),
];

/// The callers: no token, then (token, role in acme, platform admin).
const CALLERS: &[(&str, Option<Needs>, bool)] = &[
    (ACME_VIEWER_TOKEN, Some(Viewer), false),
    (ACME_EDITOR_TOKEN, Some(Editor), false),
    (ACME_ADMIN_TOKEN, Some(Admin), false),
    // Editor of project other only: acme does not exist for it.
    (OTHER_EDITOR_TOKEN, None, false),
    (ADMIN_TOKEN, Some(Admin), true),
];

fn concrete(template: &str) -> String {
    let id = "0193c0de-0000-7000-8000-000000000001";
    [
        ("{project}", "acme"),
        ("{id}", id),
        ("{backup_id}", id),
        ("{schedule_id}", id),
        ("{operation_id}", id),
        ("{cidr}", "10.0.0.0%2F8"),
        ("{service}", "postgresql"),
        ("{name}", "zz-9"),
        ("{asset}", "app.js"),
        ("{instance_id}", id),
        ("{binding_id}", "b-1"),
    ]
    .iter()
    .fold(template.to_owned(), |path, (name, value)| path.replace(name, value))
}

/// The status only: the body of a feed never ends.
async fn status(api: &TestApi, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(path);
    // The harness sends the platform admin's token when a request names none: send an empty one instead.
    request = request.header("authorization", token.map(|t| format!("Bearer {t}")).unwrap_or_default());
    let response = api.router().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    response.status()
}

#[tokio::test]
async fn every_route_answers_each_role_of_each_project_as_the_table_says() {
    let listed: BTreeSet<(&str, &str)> = TABLE.iter().map(|(m, r, _)| (*m, *r)).collect();
    let served: BTreeSet<(&str, &str)> = api::auth::ROUTES.iter().map(|(m, r, _)| (*m, *r)).collect();
    assert_eq!(listed, served, "this table and api::auth::ROUTES list different routes");

    let api = TestApi::start().await;
    let mut wrong = Vec::new();
    for (method, template, needs) in TABLE {
        let path = concrete(template);
        let anonymous = status(&api, method, &path, None).await;
        let expected_anonymous = if *needs == Public { "served" } else { "401" };
        let seen = match anonymous {
            StatusCode::UNAUTHORIZED => "401",
            StatusCode::FORBIDDEN => "403",
            _ => "served",
        };
        if seen != expected_anonymous {
            wrong.push(format!("{method} {template} without a token: {anonymous}"));
        }
        for (token, role, platform_admin) in CALLERS {
            let got = status(&api, method, &path, Some(token)).await;
            let expected = match needs {
                Public | AnyToken => "served",
                PlatformAdmin if *platform_admin => "served",
                // A project's route for platform admins: another project's token learns nothing there.
                PlatformAdmin if role.is_none() && template.contains("{project}") => "404",
                PlatformAdmin => "403",
                _ if role.is_none() => "404",
                required if role.is_some_and(|held| held >= *required) => "served",
                _ => "403",
            };
            let seen = match got {
                StatusCode::UNAUTHORIZED => "401",
                StatusCode::FORBIDDEN => "403",
                // Another project's route answers 404 before its handler could; a handler answers 404 too
                // for an id that does not exist, so 404 counts as served for a caller of the project.
                StatusCode::NOT_FOUND
                    if role.is_none()
                        && (!matches!(needs, Public | AnyToken | PlatformAdmin)
                            || (*needs == PlatformAdmin && template.contains("{project}"))) =>
                {
                    "404"
                }
                _ => "served",
            };
            if seen != expected {
                wrong.push(format!("{method} {template} as {token}: {got}, expected {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} mismatches:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test]
async fn turning_deletion_protection_off_needs_an_admin_of_the_project() {
    let api = TestApi::start().await;
    let body = serde_json::json!({"name": "guarded", "service": "postgresql", "version": "16", "plan": "starter", "deletion_protection": true});
    let auth = |token: &str| [("authorization", format!("Bearer {token}"))];
    let headers = |token: &str| auth(token).map(|(k, v)| (k, v));
    let editor = headers(ACME_EDITOR_TOKEN);
    let editor: Vec<(&str, &str)> = editor.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &editor).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let off = serde_json::json!({"deletion_protection": false});
    let refused = api.call(Method::PATCH, &path, Some(&off), &editor).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("admin"), "{}", refused.body);
    // An editor may still turn it on, and change anything else.
    let on = serde_json::json!({"deletion_protection": true, "description": "kept"});
    assert_eq!(api.call(Method::PATCH, &path, Some(&on), &editor).await.status, StatusCode::ACCEPTED);
    let admin = headers(ACME_ADMIN_TOKEN);
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let allowed = api.call(Method::PATCH, &path, Some(&off), &admin).await;
    assert_eq!(allowed.status, StatusCode::ACCEPTED, "{}", allowed.body);
}
