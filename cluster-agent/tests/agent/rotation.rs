//! Credentials rotation on both backends: the agent runs the service's own password change as a Job (on
//! the real API server the Job controller runs it, and kwok completes its pod), then swaps the Secret.

use crate::common;

use base64::Engine as _;
use common::*;
use domain::{InstanceCommand, ServiceType};
use serde_json::Value;

fn secret_key(view: &View, key: &str) -> Option<String> {
    let secret = view.get("secrets", "mongo-credentials")?;
    let data = secret["data"][key].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).ok()?).ok()
}

fn credentials_applied(view: &View, name: &str) -> Option<u64> {
    view.managed_instance(name)?["status"]["applied"]["credentials"].as_u64()
}

async fn a_rotation_runs_the_password_change_as_a_job_then_swaps_the_secret(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let before = secret_key(&cluster.view().await, "password").expect("the generated password");

    let generation = world.command(id, InstanceCommand::RotateCredentials).await;
    // The Job the rotation runs: it reads the current and the new password from the Secret, never from
    // its own definition.
    cluster
        .converges("the rotation Job", |v| {
            v.get("jobs.batch", &format!("mongo-rotate-{generation}")).is_some()
        })
        .await;
    let view = cluster.view().await;
    let job = view.get("jobs.batch", &format!("mongo-rotate-{generation}")).unwrap();
    let next = secret_key(&view, "next-password").expect("the new password waits beside the old one");
    assert_ne!(next, before);
    assert!(!job.to_string().contains(&before) && !job.to_string().contains(&next), "no password in the Job");
    let env: Vec<&Value> =
        job["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().iter().collect();
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["key"], "password");
    assert_eq!(env[1]["valueFrom"]["secretKeyRef"]["key"], "next-password");

    cluster.converges("rotated", |v| credentials_applied(v, "mongo") == Some(generation)).await;
    let view = cluster.view().await;
    assert_eq!(
        secret_key(&view, "password").as_deref(),
        Some(next.as_str()),
        "the new password is the one held"
    );
    assert_eq!(secret_key(&view, "next-password"), None, "nothing pending");
    assert!(
        view.get("jobs.batch", &format!("mongo-rotate-{generation}")).is_none(),
        "the Job goes once the rotation is applied"
    );
    assert!(
        view.ready_at("mongo", generation),
        "the workload was not touched: ready at the rotation's generation"
    );
}
on_both_backends!(a_rotation_runs_the_password_change_as_a_job_then_swaps_the_secret);
