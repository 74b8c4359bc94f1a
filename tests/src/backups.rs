//! A real S3 backup store for end-to-end tests: the server, where agents send backups, and the control
//! plane's client of it.

use backup_store::{BackupStore, StoreConfig};
use cluster_agent::render::backup::StoreTarget;
use testkit::{S3Server, s3::BACKUP_BUCKET};

/// A SeaweedFS S3 server with the backup bucket, stopped on drop.
#[derive(Debug)]
pub struct BackupStoreRig {
    /// the server
    pub s3: S3Server,
}

impl BackupStoreRig {
    /// Starts the server.
    pub fn start() -> Self {
        Self { s3: S3Server::start() }
    }

    /// Where a cluster's agent sends backups.
    pub fn target(&self) -> StoreTarget {
        StoreTarget { endpoint: self.s3.endpoint(), bucket: BACKUP_BUCKET.to_owned() }
    }

    /// The control plane's view of the store: its admin keys.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            endpoint: self.s3.endpoint(),
            bucket: BACKUP_BUCKET.to_owned(),
            region: "us-east-1".into(),
            access_key_id: self.s3.access_key().to_owned(),
            secret_access_key: self.s3.secret_key().to_owned(),
        }
    }

    /// The control plane's client of the bucket.
    pub fn store(&self) -> BackupStore {
        BackupStore::new(&self.config()).expect("a client of the test store")
    }

    /// The control plane answering agents' requests for instances' keys, as the leading projector does
    /// (`projections::store_access`); stopped on drop.
    pub async fn serve_keys(&self, api: &crate::TestApi) -> tokio_util::task::AbortOnDropHandle<()> {
        self.serve_keys_counted(api, projections::store_access::StoreAccessMetrics::default()).await
    }

    /// The same, counting into `metrics`.
    pub async fn serve_keys_counted(
        &self,
        api: &crate::TestApi,
        metrics: projections::store_access::StoreAccessMetrics,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let admin =
            backup_store::access::AccessAdmin::new(&self.config()).expect("an admin of the test store");
        // Subscribed before an agent asks: a request without responders fails at once.
        let responder = projections::store_access::Responder::subscribe(
            api.nats_server.connect().await,
            api.state.commands.clone(),
            admin,
            metrics,
        )
        .await
        .expect("subscribe to store key requests");
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(responder.run()))
    }
}

/// The whole backup path: the API, a real S3 store, a simulated cluster eu-1 whose workloads and Jobs take
/// `ready_delay`, its agent sending backups to the store, and the control plane's backup worker.
pub struct BackupStack {
    /// the API
    pub api: crate::TestApi,
    /// the store
    pub s3: BackupStoreRig,
    /// the cluster
    pub sim: k8s_sim::Simulator,
    /// its agent (abort to stop it)
    pub agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    _worker: tokio_util::task::AbortOnDropHandle<()>,
    _keys: tokio_util::task::AbortOnDropHandle<()>,
}

impl BackupStack {
    /// Starts it all.
    pub async fn start(ready_delay: std::time::Duration) -> Self {
        let api = crate::TestApi::start().await;
        let s3 = BackupStoreRig::start();
        let _keys = s3.serve_keys(&api).await;
        let (sim, address) = crate::cluster::simulator(ready_delay).await;
        let agent = crate::cluster::agent_with_backups(&api, "eu-1", address, Some(s3.target())).await;
        let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
        let worker = projections::backup_worker::run(api.state.read_models.clone(), s3.store(), jetstream);
        let _worker = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(worker));
        Self { api, s3, sim, agent, _worker, _keys }
    }
}

/// Every backup fact a cluster's agent publishes, counted as the agent publishes it: a core NATS
/// subscription, in the control plane's account, on the cluster's intake subjects (where the agent's
/// `cp.obs.<cluster>.…` lands, `streams::intake`). It sees each publish before JetStream's duplicate
/// window can drop a repeat: backup facts carry a fixed `Nats-Msg-Id` (`obs-<backup>-<type>`), so a
/// count taken from the streams says nothing about the agent's own guards, and one taken here does.
pub struct AgentPublishes {
    subscriber: async_nats::Subscriber,
    seen: Vec<(String, uuid::Uuid)>,
}

impl AgentPublishes {
    /// Subscribes to what `cluster`'s agent publishes (before the agent starts, to miss nothing).
    pub async fn subscribe(api: &crate::TestApi, cluster: &str) -> Self {
        let client = api.nats_server.connect().await;
        let subscriber = client
            .subscribe(streams::intake::cluster_filter(cluster))
            .await
            .expect("subscribe to the intake");
        // The subscription is in place on the server once a round trip has been made after it.
        client.flush().await.expect("flush");
        Self { subscriber, seen: Vec::new() }
    }

    /// Reads publishes until `done` holds for the backup facts seen so far, or `timeout` passes;
    /// whether it held.
    pub async fn wait_until(
        &mut self,
        timeout: std::time::Duration,
        done: impl Fn(&[(String, uuid::Uuid)]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut self.subscriber)).await {
                Ok(Some(message)) => self.note(&message),
                _ => return false,
            }
        }
        true
    }

    /// Takes in whatever else arrives within `window` (the agents' heartbeats keep the subjects busy, so
    /// this is a fixed window, not a quiet period), and returns every backup fact seen: (event type,
    /// backup id), in publish order.
    pub async fn settled(&mut self, window: std::time::Duration) -> &[(String, uuid::Uuid)] {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(message)) =
            tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut self.subscriber)).await
        {
            self.note(&message);
        }
        &self.seen
    }

    /// How often the agent published `event_type` about `backup`.
    pub fn count(&self, event_type: &str, backup: uuid::Uuid) -> usize {
        self.seen.iter().filter(|(t, b)| t == event_type && *b == backup).count()
    }

    fn note(&mut self, message: &async_nats::Message) {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&message.payload) else { return };
        let kind = body["event"]["type"].as_str().unwrap_or_default();
        let backup = body["event"]["data"]["backup_id"].as_str().and_then(|b| b.parse().ok());
        if let (true, Some(backup)) = (kind.starts_with("Backup"), backup) {
            self.seen.push((kind.to_owned(), backup));
        }
    }
}
