//! The agent's RBAC holds nothing it does not use: on a real API server, as the `cp-cluster-agent`
//! ServiceAccount bound to the ClusterRole of `deploy/rbac/` (`cluster_agent::rbac`), the agent runs its
//! whole repertoire, and every verb the role grants must be one the API server authorized for one of its
//! requests. `assert_permitted` (every scenario) is the other direction: every request it made is granted.

use crate::common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use domain::{InstanceCommand, ServiceType, UpdateInstance, instance::AclEntry};
use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, DynamicObject, PostParams},
    runtime::wait::{await_condition, conditions},
};
use serde_json::json;
use streams::{
    CommandMetadata,
    credentials::{CredentialsReply, CredentialsRequest, SealedReply, request_subject},
};
use uuid::Uuid;

/// `verb resource` as [`Requests`] keys it (`patch statefulsets.apps`, `patch
/// managedinstances.cp.example.com/status`) for a verb the rules grant.
fn request_key(verb: &str, group: &str, resource: &str) -> String {
    let (plural, subresource) = match resource.split_once('/') {
        Some((plural, sub)) => (plural, Some(sub)),
        None => (resource, None),
    };
    let mut key = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
    if let Some(sub) = subresource {
        key = format!("{key}/{sub}");
    }
    format!("{verb} {key}")
}

/// The granted verbs no request used, by `verb resource`.
fn unused(authorized: &BTreeSet<String>) -> Vec<String> {
    cluster_agent::rbac::granted()
        .iter()
        .map(|(verb, group, resource)| request_key(verb, group, resource))
        .filter(|key| !authorized.contains(key))
        .collect()
}

/// Asks the agent for an instance's credentials as the API does (`api/src/routes/credentials.rs`).
async fn credentials(world: &World, id: Uuid, name: &str, service: &str) -> CredentialsReply {
    let key = nkeys::XKey::new();
    let request = CredentialsRequest {
        project: "acme".into(),
        instance_id: id,
        name: name.into(),
        service: service.into(),
        reply_key: key.public_key(),
        user: None,
    };
    let answer = tokio::time::timeout(
        CONVERGE,
        world.nats.request(request_subject("c1"), serde_json::to_vec(&request).unwrap().into()),
    )
    .await
    .expect("an answer in time")
    .expect("an answer");
    let sealed: SealedReply = serde_json::from_slice(&answer.payload).expect("a sealed reply");
    sealed.open(&key).expect("sealed to our key")
}

#[test]
fn the_only_crd_the_agent_may_write_is_its_own() {
    use kube::CustomResourceExt as _;
    assert_eq!(cluster_agent::crd::ManagedInstance::crd().name_any(), cluster_agent::rbac::CRD_NAME);
}

#[test]
fn a_granted_verb_nothing_used_is_named() {
    let mut authorized: BTreeSet<String> = cluster_agent::rbac::granted()
        .iter()
        .map(|(verb, group, resource)| request_key(verb, group, resource))
        .collect();
    assert_eq!(unused(&authorized), Vec::<String>::new());
    authorized.remove("patch managedinstances.cp.example.com/status");
    authorized.remove("watch pods");
    assert_eq!(unused(&authorized), ["patch managedinstances.cp.example.com/status", "watch pods"]);
}

/// Provision each service, an ACL change, storage growth, a credentials rotation, credentials requests,
/// a backup of each kind (a Job; a CloudNativePG `Backup`) and its deletion, deprovisioning: every verb
/// the role grants is used. A restore is left out: it applies the same kinds (a Job, the backup store's
/// Secret, a StatefulSet, a Cluster and its `-origin` ObjectStore) with the same verbs as the above.
#[tokio::test]
async fn every_verb_the_agent_s_role_grants_is_used_on_a_real_api_server() {
    let s3 = testkit::S3Server::start();
    let mut world = World::without_agents(Backend::Real, &["c1"], Duration::from_millis(50)).await;
    world.send_backups_to(&s3).await;
    // `--install-crd` on a cluster without the CRD: the apply creates it (`create`, by name).
    let Kube::Real { admin, .. } = &world.clusters[0].kube else { unreachable!("the real backend") };
    let admin = admin.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = crds.get(cluster_agent::rbac::CRD_NAME).await.expect("installed from deploy/crds/");
    crds.delete(cluster_agent::rbac::CRD_NAME, &DeleteParams::default()).await.expect("CRD deleted");
    tokio::time::timeout(
        CONVERGE,
        await_condition(
            crds.clone(),
            cluster_agent::rbac::CRD_NAME,
            conditions::is_deleted(&crd.uid().unwrap()),
        ),
    )
    .await
    .expect("the CRD gone in time")
    .expect("watching the CRD");
    // As one of several replicas: the Lease is made, read and renewed.
    world.election = Some(cluster_agent::leader::Election {
        retry_period: Duration::from_millis(500),
        ..cluster_agent::leader::Election::new("default", "agent-0")
    });
    world.start_agent_installing_crd(0).await;
    tokio::time::timeout(
        CONVERGE,
        await_condition(crds, cluster_agent::rbac::CRD_NAME, conditions::is_crd_established()),
    )
    .await
    .expect("the agent's CRD established in time")
    .expect("watching the CRD");

    let services = [
        ("pg", ServiceType::Postgresql, "16"),
        ("mongo", ServiceType::Mongodb, "7.0"),
        ("influx", ServiceType::Influxdb, "2.7"),
        ("grafana", ServiceType::Grafana, "11.6"),
    ];
    let mut ids = Vec::new();
    for (name, service, version) in services {
        ids.push(world.provision("c1", name, service, version).await);
    }
    let (pg, mongo) = (ids[0], ids[1]);
    let cluster = &world.clusters[0];
    cluster.converges("all ready", |v| services.iter().all(|(name, _, _)| v.ready_at(name, 1))).await;

    // An ACL: the NetworkPolicy patched, the endpoint Service made.
    let acl = world
        .command(
            mongo,
            InstanceCommand::ReplaceAcl {
                entries: vec![AclEntry::new("1.2.3.4/32", "")],
                allow_public: false,
            },
        )
        .await;
    cluster.converges("the ACL applied", |v| v.network_applied_at("mongo", acl)).await;
    // Storage growth: each claim patched.
    let grown = world.update(mongo, UpdateInstance { storage_gib: Some(120), ..Default::default() }).await;
    cluster.converges("storage grown", |v| v.ready_at("mongo", grown)).await;
    // A rotation: a Job, the Secret read and patched.
    let rotated = world.command(mongo, InstanceCommand::RotateCredentials).await;
    cluster
        .converges("rotated", |v| {
            v.managed_instance("mongo")
                .is_some_and(|mi| mi["status"]["applied"]["credentials"].as_u64() == Some(rotated))
        })
        .await;

    // An InfluxDB user: its Job's ServiceAccount, Role and RoleBinding applied, then deleted once it is done.
    let influx = ids[2];
    let user = world
        .command(influx, InstanceCommand::CreateUser { name: "ingest".into(), role: "write".into() })
        .await;
    cluster
        .converges("the InfluxDB user applied", |v| {
            v.managed_instance("influx")
                .is_some_and(|mi| mi["status"]["applied"]["users"].as_u64() == Some(user))
        })
        .await;

    // Credentials requests: the Secret read by name; for PostgreSQL, CloudNativePG's Secret (made here as
    // CloudNativePG would, owned by the Cluster) and the Cluster it must belong to.
    assert!(matches!(credentials(&world, mongo, "mongo", "mongodb").await, CredentialsReply::Found { .. }));
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), NAMESPACE, &kubeenv::helpers::cnpg_cluster_resource());
    let pg_cluster = clusters.get("pg").await.expect("pg's Cluster");
    let app: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "pg-app",
            "ownerReferences": [{
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "pg",
                "uid": pg_cluster.uid().unwrap(),
            }],
        },
        "stringData": {"username": "app", "password": "secret"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), NAMESPACE).create(&PostParams::default(), &app).await.unwrap();
    assert!(matches!(credentials(&world, pg, "pg", "postgresql").await, CredentialsReply::Found { .. }));

    // Backups, a Job's and CloudNativePG's, each reported (the Job, or the Backup, annotated), then their
    // deletion asked for.
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let job_backup = request_backup(&backups, mongo, "mongo", ServiceType::Mongodb, "7.0").await;
    let pg_backup = request_backup(&backups, pg, "pg", ServiceType::Postgresql, "16").await;
    let job = cluster_agent::render::backup::job_name(job_backup);
    let pg_backup_name = cluster_agent::render::barman::backup_name(pg_backup);
    let reported = |object: Option<&serde_json::Value>| {
        object.is_some_and(|o| {
            o["metadata"]["annotations"][cluster_agent::render::backup::REPORTED_ANNOTATION].is_string()
        })
    };
    cluster
        .converges("both backups reported", |v| {
            reported(v.get("jobs.batch", &job))
                && reported(v.get("backups.postgresql.cnpg.io", &pg_backup_name))
        })
        .await;
    for (id, backup_id) in [(mongo, job_backup), (pg, pg_backup)] {
        let metadata = CommandMetadata::new(domain::OperationKind::DeleteBackup, "test");
        backups
            .execute("acme", id, backup_id, domain::BackupCommand::Delete { ended: true }, metadata)
            .await
            .expect("deletion asked for");
    }
    cluster
        .converges("the backups' objects removed", |v| {
            v.get("jobs.batch", &job).is_none()
                && v.get("backups.postgresql.cnpg.io", &pg_backup_name).is_none()
        })
        .await;

    for id in &ids {
        world.deprovision(*id).await;
    }
    cluster
        .converges("everything removed", |v| {
            v.names("managedinstances.cp.example.com").is_empty()
                && ids.iter().all(|id| v.owned(*id).is_empty())
        })
        .await;

    cluster.assert_permitted();
    let authorized = cluster.requests.authorized();
    let unused = unused(&authorized);
    assert!(
        unused.is_empty(),
        "the agent's role (cluster_agent::rbac) grants what no request used: {unused:?}\nused: {authorized:#?}"
    );
}
