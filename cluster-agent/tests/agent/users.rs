//! Per-application users on both backends (issue 27): a PostgreSQL user is a CloudNativePG managed role
//! whose password is in a `kubernetes.io/basic-auth` Secret the agent made; it counts as applied once the
//! Cluster's `status.managedRolesStatus` (written by the simulator, and on the real API server by the test
//! helper playing CloudNativePG v1.30) lists it as reconciled with that Secret's resource version; a
//! rotation is a new password in the Secret, applied once the status shows its new version; a deleted user
//! is `ensure: absent` and its Secret goes.

use crate::common;

use base64::Engine as _;
use common::*;
use domain::{InstanceCommand, ServiceType};
use serde_json::{Value, json};

const SECRET: &str = "pg.user.bi-reader";

fn users_applied(view: &View) -> Option<u64> {
    view.managed_instance("pg")?["status"]["applied"]["users"].as_u64()
}

fn roles(view: &View) -> Value {
    view.get("clusters.postgresql.cnpg.io", "pg")
        .map(|c| c["spec"]["managed"]["roles"].clone())
        .unwrap_or_default()
}

fn roles_status(view: &View) -> Value {
    view.get("clusters.postgresql.cnpg.io", "pg")
        .map(|c| c["status"]["managedRolesStatus"].clone())
        .unwrap_or_default()
}

/// A Secret's value (`data` on a real server, which keeps `stringData` write-only; the simulator keeps
/// what was written).
fn secret_value(view: &View, key: &str) -> Option<String> {
    let secret = view.get("secrets", SECRET)?;
    if let Some(value) = secret["stringData"][key].as_str() {
        return Some(value.to_owned());
    }
    let encoded = secret["data"][key].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()
}

fn version(view: &View) -> Option<String> {
    view.get("secrets", SECRET)?["metadata"]["resourceVersion"].as_str().map(str::to_owned)
}

async fn a_postgresql_user_is_a_managed_role_applied_rotated_and_revoked(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    cluster.converges("provisioned", |v| v.ready_at("pg", 1)).await;

    let created = world
        .command(id, InstanceCommand::CreateUser { name: "bi_reader".into(), role: "readonly".into() })
        .await;
    cluster.converges("the user applied", |v| users_applied(v) == Some(created)).await;
    let view = cluster.view().await;
    let role = &roles(&view)[0];
    assert_eq!(roles(&view).as_array().map(Vec::len), Some(1));
    for (field, expected) in [
        ("name", json!("bi_reader")),
        ("ensure", json!("present")),
        ("login", json!(true)),
        ("passwordSecret", json!({"name": SECRET})),
        ("inRoles", json!(["pg_read_all_data"])),
    ] {
        assert_eq!(role[field], expected, "{field} of {role}");
    }
    let secret = view.get("secrets", SECRET).expect("the user's Secret");
    assert_eq!(secret["type"], "kubernetes.io/basic-auth");
    assert_eq!(
        secret_value(&view, "username").as_deref(),
        Some("bi_reader"),
        "CloudNativePG wants the role's name"
    );
    let password = secret_value(&view, "password").expect("a generated password");
    assert_eq!(password.len(), 32);
    let status = roles_status(&view);
    assert!(status["byStatus"]["reconciled"].as_array().unwrap().contains(&json!("bi_reader")), "{status}");
    assert_eq!(status["passwordStatus"]["bi_reader"]["resourceVersion"].as_str(), version(&view).as_deref());
    let mi = view.managed_instance("pg").unwrap();
    assert_eq!(mi["status"]["users"], json!([{"name": "bi_reader", "generation": created}]));
    assert!(!mi.to_string().contains(&password), "no password in the ManagedInstance");
    assert!(!view.get("clusters.postgresql.cnpg.io", "pg").unwrap().to_string().contains(&password));

    let rotated = world.command(id, InstanceCommand::RotateUserPassword { name: "bi_reader".into() }).await;
    cluster.converges("the rotation applied", |v| users_applied(v) == Some(rotated)).await;
    let view = cluster.view().await;
    let new_password = secret_value(&view, "password").unwrap();
    assert_ne!(new_password, password, "a new password");
    assert_eq!(
        roles_status(&view)["passwordStatus"]["bi_reader"]["resourceVersion"].as_str(),
        version(&view).as_deref(),
        "the engine has the Secret's new version"
    );

    let deleted = world.command(id, InstanceCommand::DeleteUser { name: "bi_reader".into() }).await;
    cluster.converges("the user revoked", |v| users_applied(v) == Some(deleted)).await;
    let view = cluster.view().await;
    let role = &roles(&view)[0];
    assert_eq!(
        (&role["name"], &role["ensure"]),
        (&json!("bi_reader"), &json!("absent")),
        "revoked, not forgotten"
    );
    assert!(role["passwordSecret"].is_null(), "an absent role needs no password: {role}");
    assert!(roles_status(&view)["byStatus"]["reconciled"].as_array().unwrap().contains(&json!("bi_reader")));
    cluster.converges("the Secret gone", |v| v.get("secrets", SECRET).is_none()).await;
    assert_eq!(
        cluster.view().await.managed_instance("pg").unwrap()["status"]["users"],
        json!([]),
        "no users left"
    );
}
on_both_backends!(a_postgresql_user_is_a_managed_role_applied_rotated_and_revoked);
