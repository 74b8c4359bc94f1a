//! Per-application users through the HTTP API on the simulator (issue 27): a PostgreSQL user is a
//! CloudNativePG managed role whose password the engine takes from a Secret the agent made; an editor
//! reads it, a viewer cannot; deletion revokes the role (`ensure: absent`) and removes the Secret; bad
//! names and roles are refused naming the field and rule.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use projections::Health;
use serde_json::{Value, json};
use system_tests::{ACME_EDITOR_TOKEN, ACME_VIEWER_TOKEN, OTHER_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn cluster_of(sim: &k8s_sim::Simulator, name: &str) -> Value {
    let store = sim.store();
    let clusters = store.resource_type("postgresql.cnpg.io", "v1", "clusters").expect("clusters");
    store.get(&clusters, "cp-acme", name).unwrap_or_else(|| panic!("no Cluster {name}"))
}

fn secret(sim: &k8s_sim::Simulator, name: &str) -> Option<Value> {
    let store = sim.store();
    let secrets = store.resource_type("", "v1", "secrets").expect("secrets");
    store.get(&secrets, "cp-acme", name)
}

fn decoded(secret: &Value, key: &str) -> String {
    let data = secret["data"][key].as_str().unwrap_or_else(|| panic!("no {key} in {secret}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
}

async fn call(
    api: &TestApi,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: &str,
) -> system_tests::Reply {
    api.call(method, path, body, &[("authorization", &bearer(token))]).await
}

async fn provision(api: &TestApi, name: &str, service: &str, version: &str) -> Uuid {
    let body =
        json!({"name": name, "service": service, "version": version, "plan": "starter", "cluster": "eu-1"});
    let created =
        call(api, Method::POST, "/v1/projects/acme/instances", Some(&body), ACME_EDITOR_TOKEN).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, Duration::from_secs(90)).await, "{name} never healthy");
    id
}

#[tokio::test]
async fn a_readonly_user_is_applied_its_password_is_the_engine_s_and_deletion_revokes_it() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let id = provision(&api, "orders", "postgresql", "16").await;
    let users = format!("/v1/projects/acme/instances/{id}/users");

    let viewer_create =
        call(&api, Method::POST, &users, Some(&json!({"name": "bi", "role": "readonly"})), ACME_VIEWER_TOKEN)
            .await;
    assert_eq!(viewer_create.status, StatusCode::FORBIDDEN, "a viewer may not create users");
    let created =
        call(&api, Method::POST, &users, Some(&json!({"name": "bi", "role": "readonly"})), ACME_EDITOR_TOKEN)
            .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert_eq!(created.body["type"], "create_user", "{}", created.body);
    assert!(created.header("etag").is_some(), "the instance's new version");
    assert!(
        api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await,
        "the user was never applied"
    );

    let listed = call(&api, Method::GET, &users, None, ACME_VIEWER_TOKEN).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["users"], json!([{"name": "bi", "role": "readonly", "state": "applied"}]));
    let one = call(&api, Method::GET, &format!("{users}/bi"), None, ACME_VIEWER_TOKEN).await;
    assert_eq!(one.body, json!({"name": "bi", "role": "readonly", "state": "applied"}));

    // What the engine was told: a login role in `pg_read_all_data` only, its password from the Secret
    // whose version CloudNativePG reports as applied.
    let cluster = cluster_of(&sim, "orders");
    let roles = &cluster["spec"]["managed"]["roles"];
    assert_eq!(
        roles,
        &json!([{"name": "bi", "ensure": "present", "login": true,
                 "passwordSecret": {"name": "orders.user.bi"}, "inRoles": ["pg_read_all_data"]}])
    );
    let held = secret(&sim, "orders.user.bi").expect("the user's Secret");
    let status = &cluster["status"]["managedRolesStatus"];
    assert!(status["byStatus"]["reconciled"].as_array().unwrap().contains(&json!("bi")), "{status}");
    assert_eq!(status["passwordStatus"]["bi"]["resourceVersion"], held["metadata"]["resourceVersion"]);

    let path = format!("{users}/bi/credentials");
    let read = call(&api, Method::GET, &path, None, ACME_EDITOR_TOKEN).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(read.body["username"], "bi");
    assert_eq!(read.body["password"], decoded(&held, "password").as_str(), "the password the engine has");
    assert_eq!(read.body["host"], "orders-rw.cp-acme.svc");
    assert_eq!(read.body["port"], 5432);
    let password = read.body["password"].as_str().unwrap().to_owned();
    let viewer = call(&api, Method::GET, &path, None, ACME_VIEWER_TOKEN).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN, "a viewer may not read a user's credentials");
    let other = call(&api, Method::GET, &path, None, OTHER_EDITOR_TOKEN).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "another project's token finds nothing");
    let nobody =
        call(&api, Method::GET, &format!("{users}/nobody/credentials"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);

    // A rotation: a new password in the Secret, applied once the engine reports its version.
    let rotated =
        call(&api, Method::POST, &format!("{users}/bi/password/rotate"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    assert_eq!(rotated.body["type"], "rotate_user_password");
    assert!(api.wait_for_operation(rotated.operation_id(), "succeeded", Duration::from_secs(30)).await);
    let after = call(&api, Method::GET, &path, None, ACME_EDITOR_TOKEN).await;
    let held = secret(&sim, "orders.user.bi").unwrap();
    assert_ne!(after.body["password"], password.as_str(), "a new password");
    assert_eq!(after.body["password"], decoded(&held, "password").as_str());
    assert_eq!(
        cluster_of(&sim, "orders")["status"]["managedRolesStatus"]["passwordStatus"]["bi"]["resourceVersion"],
        held["metadata"]["resourceVersion"]
    );

    let duplicate = call(
        &api,
        Method::POST,
        &users,
        Some(&json!({"name": "bi", "role": "readwrite"})),
        ACME_EDITOR_TOKEN,
    )
    .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{}", duplicate.body);
    assert_eq!(duplicate.body["code"], "user_exists");

    let deleted = call(&api, Method::DELETE, &format!("{users}/bi"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert_eq!(deleted.body["type"], "delete_user");
    assert!(api.wait_for_operation(deleted.operation_id(), "succeeded", Duration::from_secs(30)).await);
    let cluster = cluster_of(&sim, "orders");
    assert_eq!(cluster["spec"]["managed"]["roles"], json!([{"name": "bi", "ensure": "absent"}]));
    assert!(
        cluster["status"]["managedRolesStatus"]["byStatus"]["reconciled"]
            .as_array()
            .unwrap()
            .contains(&json!("bi")),
        "the engine reports the role gone"
    );
    // Awaits the simulator's changes (subscribed before the first look, so none is missed).
    let mut changes = sim.changes();
    let deleted = tokio::time::timeout(Duration::from_secs(30), async {
        while secret(&sim, "orders.user.bi").is_some() {
            let _ = changes.recv().await;
        }
    })
    .await;
    assert!(deleted.is_ok(), "the user's Secret is never deleted");
    let listed = call(&api, Method::GET, &users, None, ACME_VIEWER_TOKEN).await;
    assert_eq!(listed.body["users"], json!([]));
    let gone = call(&api, Method::GET, &path, None, ACME_EDITOR_TOKEN).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = call(&api, Method::DELETE, &format!("{users}/bi"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_names_and_roles_are_refused_naming_the_field() {
    let api = TestApi::start().await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let pg = provision(&api, "ledger", "postgresql", "16").await;
    let users = format!("/v1/projects/acme/instances/{pg}/users");
    for (body, field, rule) in [
        (json!({"name": "Bad-Name", "role": "readonly"}), "/name", "user_name"),
        (json!({"name": "postgres", "role": "readonly"}), "/name", "user_name_reserved"),
        (json!({"name": "streaming_replica", "role": "readonly"}), "/name", "user_name_reserved"),
        (json!({"name": "admin", "role": "readonly"}), "/name", "user_name_reserved"),
        (json!({"name": "app", "role": "readonly"}), "/name", "user_name_reserved"),
        (json!({"name": "etl", "role": "superuser"}), "/role", "offered_role"),
        (json!({"name": "etl", "role": "readWrite"}), "/role", "offered_role"),
    ] {
        let refused = call(&api, Method::POST, &users, Some(&body), ACME_EDITOR_TOKEN).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", refused.body);
        assert_eq!(refused.body["errors"][0]["field"], field, "{body}: {}", refused.body);
        assert_eq!(refused.body["errors"][0]["rule"], rule, "{body}: {}", refused.body);
    }
    let unknown_field = call(
        &api,
        Method::POST,
        &users,
        Some(&json!({"name": "etl", "role": "readonly", "password": "mine"})),
        ACME_EDITOR_TOKEN,
    )
    .await;
    assert!(unknown_field.status.is_client_error(), "a password cannot be chosen: {}", unknown_field.body);
}

/// Grafana: a service account's token, made by Grafana (on the simulator, by the simulator playing the
/// users Job) and handed to the user's Secret; the credentials read serves it, and deletion revokes it.
#[tokio::test]
async fn a_grafana_user_s_token_is_the_one_its_job_handed_to_its_secret() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let dash = provision(&api, "dash", "grafana", "11.6").await;
    let users = format!("/v1/projects/acme/instances/{dash}/users");
    let body = json!({"name": "viewer_app", "role": "Viewer"});
    let created = call(&api, Method::POST, &users, Some(&body), ACME_EDITOR_TOKEN).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert!(api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await);
    let read =
        call(&api, Method::GET, &format!("{users}/viewer_app/credentials"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let held = secret(&sim, "dash.user.viewer-app").expect("the user's Secret");
    assert_eq!(read.body["username"], "viewer_app");
    assert_eq!(read.body["password"], decoded(&held, "password"), "the token the Job handed over");
    let deleted = call(&api, Method::DELETE, &format!("{users}/viewer_app"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert!(api.wait_for_operation(deleted.operation_id(), "succeeded", Duration::from_secs(30)).await);
}

#[tokio::test]
async fn a_mongodb_user_is_made_by_a_job_and_its_password_is_the_secret_the_job_read() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let id = provision(&api, "catalogue", "mongodb", "7.0").await;
    let users = format!("/v1/projects/acme/instances/{id}/users");
    let created = call(
        &api,
        Method::POST,
        &users,
        Some(&json!({"name": "shop", "role": "readWrite"})),
        ACME_EDITOR_TOKEN,
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert!(api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await);
    let listed = call(&api, Method::GET, &users, None, ACME_VIEWER_TOKEN).await;
    assert_eq!(listed.body["users"], json!([{"name": "shop", "role": "readWrite", "state": "applied"}]));
    let read = call(&api, Method::GET, &format!("{users}/shop/credentials"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["username"], "shop");
    assert_eq!(read.body["port"], 27017);
    let held = secret(&sim, "catalogue.user.shop").expect("the user's Secret");
    assert_eq!(
        read.body["password"],
        decoded(&held, "password").as_str(),
        "the password in the Secret the Job reads"
    );
    let deleted = call(&api, Method::DELETE, &format!("{users}/shop"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert!(api.wait_for_operation(deleted.operation_id(), "succeeded", Duration::from_secs(30)).await);

    // Deprovisioning removes every user: each by its own event, and its Secret with the instance.
    let again =
        call(&api, Method::POST, &users, Some(&json!({"name": "audit", "role": "read"})), ACME_EDITOR_TOKEN)
            .await;
    assert!(api.wait_for_operation(again.operation_id(), "succeeded", Duration::from_secs(30)).await);
    assert!(secret(&sim, "catalogue.user.audit").is_some());
    let path = format!("/v1/projects/acme/instances/{id}");
    let gone = call(&api, Method::DELETE, &path, None, ACME_EDITOR_TOKEN).await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{}", gone.body);
    assert!(api.wait_for_operation(gone.operation_id(), "succeeded", Duration::from_secs(30)).await);
    assert!(secret(&sim, "catalogue.user.audit").is_none(), "the user's Secret went with the instance");
    let history = call(&api, Method::GET, &format!("{path}/history"), None, ACME_VIEWER_TOKEN).await;
    assert!(history.body.to_string().contains("UserDeleted"), "{}", history.body);
}

#[tokio::test]
async fn a_user_the_engine_cannot_reconcile_is_in_error_with_its_reason_and_its_operation_fails() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let id = provision(&api, "orders", "postgresql", "16").await;
    let users = format!("/v1/projects/acme/instances/{id}/users");
    let created =
        call(&api, Method::POST, &users, Some(&json!({"name": "bi", "role": "readonly"})), ACME_EDITOR_TOKEN)
            .await;
    assert!(api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await);
    // Someone edits the user's Secret to name another user: CloudNativePG refuses to use it
    // (`getPassword`: "the username in secret … does not match role …") and says so in cannotReconcile.
    {
        let mut store = sim.store();
        let secrets = store.resource_type("", "v1", "secrets").expect("secrets");
        let other = base64::engine::general_purpose::STANDARD.encode("someone");
        store
            .merge_patch(&secrets, "cp-acme", "orders.user.bi", &json!({"data": {"username": other}}), false)
            .expect("the Secret edited");
    }
    let rotated =
        call(&api, Method::POST, &format!("{users}/bi/password/rotate"), None, ACME_EDITOR_TOKEN).await;
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    assert!(
        api.wait_for_operation(rotated.operation_id(), "failed", Duration::from_secs(30)).await,
        "a rotation the engine cannot apply fails"
    );
    let operation = call(
        &api,
        Method::GET,
        &format!("/v1/projects/acme/operations/{}", rotated.operation_id()),
        None,
        ACME_VIEWER_TOKEN,
    )
    .await;
    let expected = "UserNotApplied: bi: the username in secret \"orders.user.bi\" does not match role \"bi\"";
    assert!(operation.body.to_string().contains(&expected.replace('"', "\\\"")), "{}", operation.body);
    let one = call(&api, Method::GET, &format!("{users}/bi"), None, ACME_VIEWER_TOKEN).await;
    assert_eq!(one.body["state"], "error", "{}", one.body);
    assert_eq!(one.body["reason"], "the username in secret \"orders.user.bi\" does not match role \"bi\"");
}
