//! The Jobs that make MongoDB, InfluxDB and Grafana backups, on both backends: kept as the record of a
//! made and reported backup for as long as the backup is, and removed once its deletion is asked for.

use crate::common;

use std::time::Duration;

use common::*;
use domain::ServiceType;
use streams::CommandMetadata;

/// A finished backup Job is the cluster's record that the backup was made and reported (a restarted agent
/// reads it), so Kubernetes must not remove it on its own (no `ttlSecondsAfterFinished`); the agent
/// removes it, with its pod, when the control plane asks for the backup's deletion. Without that every
/// backup left a Job and a pod behind for ever.
async fn a_backup_s_job_is_removed_once_the_backup_s_deletion_is_asked_for(backend: Backend) {
    let s3 = testkit::S3Server::start();
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(50)).await;
    world.send_backups_to(&s3).await;
    world.start_agent(0).await;
    let id = world.provision("c1", "orders", ServiceType::Mongodb, "7.0").await;
    let cluster = &world.clusters[0];
    cluster.converges("the instance ready", |v| v.ready_at("orders", 1)).await;
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let backup_id = request_backup(&backups, id, "orders", ServiceType::Mongodb, "7.0").await;
    let job = cluster_agent::render::backup::job_name(backup_id);
    // Its outcome reported, whichever it is (the real API server's pods upload nothing, so there it
    // fails): the Job then carries the annotation that records it.
    let reported = |v: &View| {
        v.get("jobs.batch", &job).is_some_and(|j| {
            j["metadata"]["annotations"][cluster_agent::render::backup::REPORTED_ANNOTATION].is_string()
        })
    };
    cluster.converges("the backup reported", reported).await;

    let metadata = CommandMetadata::new(domain::OperationKind::DeleteBackup, "test");
    backups
        .execute("acme", id, backup_id, domain::BackupCommand::Delete { ended: true }, metadata)
        .await
        .expect("deletion asked for");
    cluster.converges("the backup's Job removed", |v| v.get("jobs.batch", &job).is_none()).await;
    cluster.assert_permitted();
}
on_both_backends!(a_backup_s_job_is_removed_once_the_backup_s_deletion_is_asked_for);
