//! The control plane's hands on the backup store: it checks every completed backup's object against what
//! the cluster reported (size, SHA-256; a PostgreSQL base backup against Barman's own catalogue, its
//! `backup.info` and the WAL it needs, then the total size: `backup_store::barman`) and deletes the object of every backup whose deletion was asked
//! for, and reports each as a fact (`BackupVerified`, `BackupDeleted`) on the control plane's own observed
//! subject of the instance (`streams::observed::CONTROL_PLANE_SOURCE`), which no agent can publish on.
//!
//! Level-triggered over the read models (it follows them as an API replica does): what is still to do is
//! derived from the records, so a worker that died mid-way does the rest after a restart. Both actions
//! are idempotent; a fact reported twice changes nothing when folded.

use std::{collections::HashSet, time::Duration};

use backup_store::{BackupStore, Verification};
use domain::observed::ObservedEvent;
use streams::observed::ObservedMessage;
use uuid::Uuid;

use crate::{
    ReadModel, ReadModels,
    backups::{BackupState, BackupView},
};

/// How long to wait for new work before looking again anyway (a failed action is retried then).
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Verify,
    Delete,
}

fn action(view: &BackupView) -> Option<Action> {
    match view.state {
        BackupState::Completed if view.verified.is_none() => Some(Action::Verify),
        BackupState::Deleting => Some(Action::Delete),
        _ => None,
    }
}

fn pending(model: &ReadModel, done: &HashSet<(Uuid, Action)>) -> Vec<(BackupView, Action)> {
    model
        .backups()
        .all()
        .filter_map(|view| action(view).map(|a| (view.clone(), a)))
        .filter(|(view, a)| !done.contains(&(view.id, *a)))
        .collect()
}

/// Runs until cancelled.
pub async fn run(models: ReadModels, store: BackupStore, jetstream: async_nats::jetstream::Context) {
    // Done by this process; the fact saying so may not be folded yet.
    let mut done: HashSet<(Uuid, Action)> = HashSet::new();
    loop {
        models.wait_until(RESYNC, |m| !pending(m, &done).is_empty()).await;
        let work = pending(&models.read(), &done);
        for (view, action) in work {
            let event = match act(&store, &view, action).await {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(backup = %view.id, ?action, error = %e, "backup store action failed; retrying later");
                    continue;
                }
            };
            // Stated on the control plane's own source, which no agent can publish on (`crate::facts`).
            let message =
                ObservedMessage::from_control_plane(&view.source.project, view.source.instance_id, event);
            let published = message.publish(&jetstream).await;
            match published {
                Ok(()) => {
                    done.insert((view.id, action));
                }
                Err(e) => {
                    tracing::warn!(backup = %view.id, error = %e, "reporting a backup fact failed; retrying later")
                }
            }
        }
    }
}

async fn act(
    store: &BackupStore,
    view: &BackupView,
    action: Action,
) -> Result<ObservedEvent, backup_store::StoreError> {
    let backup_id = view.id;
    let location = own_location(view);
    match action {
        Action::Verify => {
            let (Some(location), Some(size)) = (location, view.size_bytes) else {
                return Ok(ObservedEvent::BackupVerified {
                    backup_id,
                    matches: false,
                    detail: Some("the cluster reported no location of its own or no size".into()),
                });
            };
            // One object with its checksum, or (a PostgreSQL base backup) many under a prefix, by size.
            let sha256 = view.sha256.as_deref().unwrap_or_default();
            let found = match &view.sha256 {
                Some(sha256) => store.verify(location, size, sha256).await?,
                // A PostgreSQL base backup: against Barman's own catalogue, then the reported total.
                None => store.verify_base_backup(location, size).await?,
            };
            let detail = match found {
                Verification::Matches => None,
                Verification::Missing => Some(format!("no object at {location}")),
                Verification::SizeDiffers { found } => {
                    Some(format!("{found} bytes, not the {size} reported"))
                }
                Verification::ChecksumDiffers { found } => {
                    Some(format!("SHA-256 {found}, not the {sha256} reported"))
                }
                Verification::CatalogueDiffers { why } => Some(why),
            };
            if let Some(detail) = &detail {
                tracing::warn!(backup = %backup_id, %detail, "a backup's object is not as its cluster reported");
            }
            Ok(ObservedEvent::BackupVerified { backup_id, matches: detail.is_none(), detail })
        }
        Action::Delete => {
            match (location, &view.sha256) {
                (Some(location), Some(_)) => store.delete(location).await?,
                (Some(prefix), None) => {
                    store.delete_prefix(prefix).await?;
                    // A PostgreSQL base backup: and the WAL no base backup left needs.
                    if let Some((server, _)) = prefix.rsplit_once("/base/") {
                        let pruned = store.prune_wal(server).await?;
                        tracing::info!(backup = %backup_id, wal_segments = pruned.len(), "pruned WAL no kept base backup needs");
                    }
                }
                (None, _) => {}
            }
            Ok(ObservedEvent::BackupDeleted { backup_id })
        }
    }
}

/// The backup's reported location when it lies under the backup's own instance. The location is a
/// cluster's claim and the store's keys reach every tenant's backups, so nothing else is checked or
/// deleted (the projector refuses any other location; this holds even for records folded before it did).
fn own_location(view: &BackupView) -> Option<&str> {
    view.location.as_deref().filter(|location| {
        let own = domain::backup::check_location(&view.source, view.id, location);
        if let Err(e) = &own {
            tracing::error!(backup = %view.id, error = %e, "a backup location outside its instance is left alone");
        }
        own.is_ok()
    })
}
