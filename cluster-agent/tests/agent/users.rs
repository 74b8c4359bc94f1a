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
    assert_eq!(secret["metadata"]["labels"]["cnpg.io/reload"], "true", "a new password applies at once");
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

/// MongoDB: the agent makes each user's Secret, then a Job that runs mongosh's user commands with the
/// passwords from those Secrets (never in the Job itself); the users are applied once it completed, and
/// a deletion is another Job, after which the Secret goes.
async fn mongodb_users_are_applied_by_a_job_reading_their_secrets(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let applied = |v: &View| v.managed_instance("mongo")?["status"]["applied"]["users"].as_u64();

    let created = world
        .command(id, InstanceCommand::CreateUser { name: "orders_app".into(), role: "readWrite".into() })
        .await;
    let job_name = format!("mongo-users-{created}");
    cluster.converges("the users Job", |v| v.get("jobs.batch", &job_name).is_some()).await;
    let view = cluster.view().await;
    let job = view.get("jobs.batch", &job_name).unwrap();
    let secret = view.get("secrets", "mongo.user.orders-app").expect("the user's Secret");
    let encoded = secret["data"]["password"].as_str().map(str::to_owned);
    let password = match encoded {
        Some(data) => {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
        }
        None => secret["stringData"]["password"].as_str().unwrap().to_owned(),
    };
    assert!(!job.to_string().contains(&password), "no password in the Job");
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    let users: Value = serde_json::from_str(
        env.as_array().unwrap().iter().find(|e| e["name"] == "USERS").unwrap()["value"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        users,
        json!([{"name": "orders_app", "env": "USER_PASSWORD_0",
                "roles": [{"role": "readWriteAnyDatabase", "db": "admin"}]}])
    );
    let reference = env.as_array().unwrap().iter().find(|e| e["name"] == "USER_PASSWORD_0").unwrap();
    assert_eq!(
        reference["valueFrom"]["secretKeyRef"],
        json!({"name": "mongo.user.orders-app", "key": "password"})
    );
    cluster.converges("the user applied", |v| applied(v) == Some(created)).await;
    cluster.converges("the Job pruned", |v| v.get("jobs.batch", &job_name).is_none()).await;

    let deleted = world.command(id, InstanceCommand::DeleteUser { name: "orders_app".into() }).await;
    cluster.converges("the user dropped", |v| applied(v) == Some(deleted)).await;
    cluster.converges("the Secret gone", |v| v.get("secrets", "mongo.user.orders-app").is_none()).await;
}
on_both_backends!(mongodb_users_are_applied_by_a_job_reading_their_secrets);

/// The mongosh program of the MongoDB users Job, run by node (the JavaScript engine mongosh embeds) with
/// a fake `admin` database that answers as MongoDB's user commands are documented: it creates the users
/// the set lacks, updates the ones it has (password and role), drops the control plane's users no longer
/// asked, and touches nobody else.
#[tokio::test]
async fn the_mongodb_users_program_creates_updates_and_drops_only_the_control_plane_s_users() {
    use cluster_agent::crd::UserTarget;
    let mut mi = crate::fixture::instance("mongodb", "7.0", json!({}));
    mi.spec.users = vec![
        UserTarget { name: "fresh".into(), role: "readWrite".into(), generation: 6 },
        UserTarget { name: "kept".into(), role: "read".into(), generation: 5 },
    ];
    let job = cluster_agent::render::users::mongodb_job(&mi, 6).object;
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let script = container["command"][2].as_str().unwrap();
    let check = tokio::process::Command::new("sh").args(["-n", "-c", script]).status().await.unwrap();
    assert!(check.success(), "the shell script parses");
    let start = script.find("--eval '").expect("mongosh --eval") + "--eval '".len();
    let program = &script[start..script.rfind('\'').unwrap()];
    assert!(!program.contains('\''), "the program is one single-quoted shell word");
    let harness = format!(
        r#"
const calls = [];
const existing = [
  {{user: "kept", customData: {{cp: true}}}},
  {{user: "gone", customData: {{cp: true}}}},
  {{user: "root"}},
];
const matches = (u, filter) => JSON.stringify(filter) === '{{"customData.cp":true}}' ? !!(u.customData && u.customData.cp) : true;
const fakeAdmin = {{
  auth: (user, pwd) => {{ if (user !== "root" || pwd !== "admin-secret") throw new Error("Authentication failed"); calls.push(["auth", user]); return {{ok: 1}}; }},
  runCommand: (command) => {{ if (command.usersInfo !== 1) throw new Error("unexpected command"); return {{users: existing.filter(u => matches(u, command.filter)), ok: 1}}; }},
  createUser: (doc) => calls.push(["createUser", doc.user, doc.pwd, doc.roles, doc.customData]),
  updateUser: (name, update) => calls.push(["updateUser", name, update.pwd, update.roles]),
  dropUser: (name) => calls.push(["dropUser", name]),
}};
const db = {{getSiblingDB: (name) => {{ if (name !== "admin") throw new Error(name); return fakeAdmin; }}}};
{program}
console.log(JSON.stringify(calls));
"#
    );
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match e["value"].as_str() {
                Some(value) => value.to_owned(),
                // Each password as its Secret would give it: the Secret's name stands in.
                None if name == "ADMIN_PASSWORD" => "admin-secret".to_owned(),
                None => format!("pw-of-{}", e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap()),
            };
            (name, value)
        })
        .collect();
    let output = tokio::process::Command::new("node")
        .args(["-e", &harness])
        .envs(env)
        .output()
        .await
        .expect("node runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let calls: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        calls,
        json!([
            ["auth", "root"],
            ["createUser", "fresh", "pw-of-orders.user.fresh",
             [{"role": "readWriteAnyDatabase", "db": "admin"}], {"cp": true}],
            ["updateUser", "kept", "pw-of-orders.user.kept", [{"role": "readAnyDatabase", "db": "admin"}]],
            ["dropUser", "gone"],
        ])
    );
}
