//! The control plane's answer to an agent asking for an instance's backup store keys
//! (`streams::store_access`): keys of the instance's own store identity (`backup_store::access`), whose
//! policy reaches `<project>/<instance-id>/` and, read only, the prefix of the instance its restore or
//! fork reads from. Asked by the cluster the subject names; answered only for an active instance placed
//! on that cluster, as the event stream says now (`InstanceCommands::read_current`), never as the asker
//! says. Identities of instances being deprovisioned are removed ([`revoke_inactive`]).
//!
//! Runs on the leading projector (it holds the store's admin keys); while no projector leads, requests
//! go unanswered and agents ask again.

use std::{collections::HashSet, time::Duration};

use async_nats::Client;
use backup_store::access::{AccessAdmin, Grant};
use domain::instance::Lifecycle;
use futures::StreamExt as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use streams::{
    credentials::SealedReply,
    instances::InstanceCommands,
    store_access::{REQUESTS_FILTER, RESPONDERS, StoreAccessReply, StoreAccessRequest, cluster_of},
};
use uuid::Uuid;

use crate::ReadModels;

/// How often identities of instances no longer active are looked for.
const REVOKE_PERIOD: Duration = Duration::from_secs(60);
/// Requests answered at once (each may wait for a new key to be accepted by the store).
const CONCURRENT_REQUESTS: usize = 8;

/// The label of a refusal: why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `not_placed_there`, `not_active`, `unreadable`, `store_failed`
    pub reason: String,
}

/// What the responder did.
#[derive(Debug, Clone, Default)]
pub struct StoreAccessMetrics {
    /// keys given
    pub granted: Counter,
    /// requests refused, by reason
    pub refused: Family<RefusalLabels, Counter>,
    /// identities removed
    pub revoked: Counter,
}

impl StoreAccessMetrics {
    /// Registers every metric under the `cp_store_access` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("cp_store_access");
        r.register(
            "granted",
            "Backup store keys given to a cluster's agent for one instance",
            self.granted.clone(),
        );
        r.register("refused", "Requests for backup store keys refused, by reason", self.refused.clone());
        r.register(
            "revoked",
            "Store identities of instances no longer active, removed",
            self.revoked.clone(),
        );
        self
    }

    fn refuse(&self, reason: &str) {
        self.refused.get_or_create(&RefusalLabels { reason: reason.to_owned() }).inc();
    }
}

/// Why a request is refused: a metric label and a reason for the agent.
struct Refusal {
    label: &'static str,
    reason: String,
}

/// What the instance's identity may reach, if the instance is `cluster`'s and active.
async fn grant_for(
    instances: &InstanceCommands,
    cluster: &str,
    request: &StoreAccessRequest,
) -> Result<Grant, Refusal> {
    let (project, id) = (&request.project, request.instance_id);
    let current = instances.read_current(project, id).await.map_err(|e| Refusal {
        label: "unreadable",
        reason: format!("reading instance {project}/{id}: {e}"),
    })?;
    let not_here = || Refusal {
        label: "not_placed_there",
        reason: format!("instance {project}/{id} is not placed on {cluster}"),
    };
    let Some(current) = current else { return Err(not_here()) };
    // Where it serves, or where a migration placed its copy (`Instance::on_cluster`).
    let Some(instance) = current.aggregate.on_cluster(cluster) else { return Err(not_here()) };
    let Some(spec) = instance.spec() else { return Err(not_here()) };
    if instance.lifecycle() != Lifecycle::Active {
        return Err(Refusal {
            label: "not_active",
            reason: format!("instance {project}/{id} is being deprovisioned"),
        });
    }
    // A restore or fork reads its source's prefix: an instance of the same project (the API resolves the
    // backup within the project), named by the restore, not by the location's text alone.
    let read = spec
        .restore
        .as_ref()
        .map(|restore| format!("{project}/{}", restore.source_instance_id))
        .filter(|prefix| *prefix != format!("{project}/{id}"))
        .into_iter()
        .collect();
    Ok(Grant { own: format!("{project}/{id}"), read })
}

async fn answer(
    admin: &AccessAdmin,
    instances: &InstanceCommands,
    metrics: &StoreAccessMetrics,
    subject: &str,
    payload: &[u8],
) -> Option<(StoreAccessReply, Option<String>)> {
    let cluster = cluster_of(subject)?;
    let request: StoreAccessRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(e) => {
            metrics.refuse("unreadable");
            return Some((StoreAccessReply::Refused { reason: format!("unreadable request: {e}") }, None));
        }
    };
    let grant = match grant_for(instances, cluster, &request).await {
        Ok(grant) => grant,
        Err(refusal) => {
            tracing::warn!(%cluster, project = %request.project, instance = %request.instance_id,
                reason = %refusal.reason, "backup store keys refused");
            metrics.refuse(refusal.label);
            return Some((StoreAccessReply::Refused { reason: refusal.reason }, None));
        }
    };
    let keys = match admin.grant(request.instance_id, &grant).await {
        Ok(()) => admin.issue_keys(request.instance_id, &grant).await,
        Err(e) => Err(e),
    };
    match keys {
        Ok(keys) => {
            metrics.granted.inc();
            tracing::info!(%cluster, project = %request.project, instance = %request.instance_id,
                access_key_id = %keys.access_key_id, read = ?grant.read, "backup store keys given");
            let reply = StoreAccessReply::Granted {
                access_key_id: keys.access_key_id,
                secret_access_key: keys.secret_access_key,
                read: grant.read,
            };
            Some((reply, Some(request.reply_key)))
        }
        Err(e) => {
            tracing::warn!(%cluster, instance = %request.instance_id, error = %e, "making backup store keys failed");
            metrics.refuse("store_failed");
            Some((StoreAccessReply::Refused { reason: format!("the backup store failed: {e}") }, None))
        }
    }
}

/// The control plane's responder to agents' key requests, subscribed.
pub struct Responder {
    client: Client,
    requests: async_nats::Subscriber,
    instances: InstanceCommands,
    admin: AccessAdmin,
    metrics: StoreAccessMetrics,
}

impl Responder {
    /// Subscribes (in the responders' queue group) and flushes, so a request made after this returns
    /// finds a responder.
    pub async fn subscribe(
        client: Client,
        instances: InstanceCommands,
        admin: AccessAdmin,
        metrics: StoreAccessMetrics,
    ) -> Result<Self, async_nats::Error> {
        let requests = client.queue_subscribe(REQUESTS_FILTER, RESPONDERS.to_owned()).await?;
        client.flush().await?;
        Ok(Self { client, requests, instances, admin, metrics })
    }

    /// Answers requests until the subscription ends.
    pub async fn run(self) {
        let Self { client, requests, instances, admin, metrics } = self;
        requests
            .for_each_concurrent(CONCURRENT_REQUESTS, |message| {
                let (client, instances, admin, metrics) = (&client, &instances, &admin, &metrics);
                async move {
                    let Some(reply_to) = message.reply.clone() else { return };
                    let Some((reply, seal_to)) =
                        answer(admin, instances, metrics, &message.subject, &message.payload).await
                    else {
                        return;
                    };
                    // Keys travel sealed to the asker's one-time key; a refusal in clear.
                    let body = match seal_to {
                        Some(recipient) => match SealedReply::seal(&reply, &recipient) {
                            Ok(sealed) => serde_json::to_vec(&sealed),
                            Err(e) => {
                                serde_json::to_vec(&StoreAccessReply::Refused { reason: e.to_string() })
                            }
                        },
                        None => serde_json::to_vec(&reply),
                    };
                    let Ok(body) = body else { return };
                    if let Err(e) = client.publish(reply_to, body.into()).await {
                        tracing::warn!(error = %e, "answering a backup store keys request failed");
                    }
                }
            })
            .await;
    }
}

/// Subscribes and answers requests until the subscription ends.
pub async fn serve(
    client: Client,
    instances: InstanceCommands,
    admin: AccessAdmin,
    metrics: StoreAccessMetrics,
) -> Result<(), async_nats::Error> {
    Responder::subscribe(client, instances, admin, metrics).await?.run().await;
    Ok(())
}

/// Removes the store identities of instances whose deprovisioning began, every [`REVOKE_PERIOD`].
pub async fn revoke_inactive(models: ReadModels, admin: AccessAdmin, metrics: StoreAccessMetrics) {
    loop {
        if let Err(e) = revoke_once(&models, &admin, &metrics).await {
            tracing::warn!(error = %e, "removing store identities of inactive instances failed; retrying later");
        }
        tokio::time::sleep(REVOKE_PERIOD).await;
    }
}

/// One pass of [`revoke_inactive`]; returns the instances whose identity it removed. An identity whose
/// instance the read models do not show (yet) is kept: deprovisioning is what ends one, and it is
/// folded in order after the provisioning.
pub async fn revoke_once(
    models: &ReadModels,
    admin: &AccessAdmin,
    metrics: &StoreAccessMetrics,
) -> Result<Vec<Uuid>, backup_store::StoreError> {
    let ending: HashSet<Uuid> = models
        .read()
        .all_instances()
        .filter(|view| view.deprovisioning.is_some())
        .map(|view| view.spec().id)
        .collect();
    let mut revoked = Vec::new();
    for id in admin.instances_with_access().await? {
        if ending.contains(&id) {
            admin.revoke(id).await?;
            metrics.revoked.inc();
            tracing::info!(instance = %id, "store identity of a deprovisioned instance removed");
            revoked.push(id);
        }
    }
    Ok(revoked)
}
