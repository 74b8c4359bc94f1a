//! The Instance aggregate on JetStream: its subjects, its store, and the after-commit duties of its
//! commands.

use domain::{Instance, InstanceCommand, InstanceError, InstanceEvent, InstanceServices};
use uuid::Uuid;

use crate::{
    envelope::CommandMetadata,
    names::KvNameRegistry,
    store::{Committed, Current, ExecuteError, JetStreamStore, Landed, StreamAggregate},
    topology::{INSTANCE_EVENT_PREFIX, Topology},
};

impl StreamAggregate for Instance {
    /// 2: the aggregate counts its events and the version that last changed each aspect.
    const SNAPSHOT_VERSION: u32 = 2;

    /// Format 1 is format 2 without the generations: it reads with every aspect changed at the
    /// message's version (nothing is taken as applied that may not be).
    fn from_older_snapshot(
        version: u32,
        state: &str,
        aggregate_version: u64,
    ) -> Option<Result<Self, serde_json::Error>> {
        (version == 1).then(|| {
            serde_json::from_str::<Instance>(state).map(|mut instance| {
                instance.assume_generation(aggregate_version);
                instance
            })
        })
    }

    fn upcasters() -> &'static [Box<dyn cqrs_es::persist::EventUpcaster>] {
        domain::instance::upcasters()
    }

    fn partition(&self) -> Option<&str> {
        self.spec().map(|spec| spec.cluster.as_str())
    }

    fn message_partition<'a>(&'a self, events: &'a [InstanceEvent]) -> Option<&'a str> {
        self.message_cluster(events)
    }

    fn spans_partitions(&self) -> bool {
        self.has_moved()
    }
}

/// The event store of instances.
pub type InstanceStore = JetStreamStore<Instance>;

/// Aggregate id of an instance: `<project>.<instance-id>`, so its subject is
/// `cp.evt.<cluster>.<project>.<instance-id>`.
pub fn aggregate_id(project: &str, instance_id: Uuid) -> String {
    format!("{project}.{instance_id}")
}

/// The project and instance an aggregate id names: an instance's (`<project>.<instance>`), or one of
/// its backups' (`<project>.<instance>.bak.<backup>`, see `backups::aggregate_id`).
pub fn parse_aggregate_id(id: &str) -> Option<(&str, Uuid)> {
    let mut parts = id.split('.');
    Some((parts.next()?, parts.next()?.parse().ok()?))
}

/// Subject of an instance's events: `cp.evt.<cluster>.<project>.<instance-id>`.
pub fn instance_subject(cluster: &str, project: &str, instance_id: Uuid) -> String {
    format!("{INSTANCE_EVENT_PREFIX}.{cluster}.{}", aggregate_id(project, instance_id))
}

/// Every instance's and backup's own subject on every cluster: what the control plane itself stores,
/// without the facts agents report.
pub fn desired_filter() -> String {
    format!("{INSTANCE_EVENT_PREFIX}.>")
}

/// Subject filter of every instance event placed on `cluster` (what that cluster's agent consumes).
pub fn cluster_filter(cluster: &str) -> String {
    format!("{INSTANCE_EVENT_PREFIX}.{cluster}.>")
}

/// Subject of the observed-state events of an instance.
pub fn observed_subject(cluster: &str, project: &str, instance_id: Uuid) -> String {
    format!("{}.{cluster}.{project}.{instance_id}", crate::topology::OBSERVED_PREFIX)
}

/// Subject filter of the observed-state events of `cluster`.
pub fn observed_cluster_filter(cluster: &str) -> String {
    format!("{}.{cluster}.>", crate::topology::OBSERVED_PREFIX)
}

/// Subject filter of the observed-state events of `project`'s instances, on every cluster.
pub fn observed_project_filter(project: &str) -> String {
    format!("{}.*.{project}.>", crate::topology::OBSERVED_PREFIX)
}

/// Subject filter of every instance event of `project`.
pub fn project_filter(project: &str) -> String {
    format!("{INSTANCE_EVENT_PREFIX}.*.{project}.>")
}

/// Subject filters of an instance's events and its backups', on whichever cluster it is placed.
pub fn instance_event_filters(project: &str, instance_id: Uuid) -> Vec<String> {
    let id = aggregate_id(project, instance_id);
    vec![format!("{INSTANCE_EVENT_PREFIX}.*.{id}"), format!("{INSTANCE_EVENT_PREFIX}.*.{id}.bak.>")]
}

/// The project and instance of an event subject (`cp.evt.<cluster>.<project>.<instance>[.bak.<backup>]`).
pub fn parse_event_subject(subject: &str) -> Option<(&str, Uuid)> {
    let rest = subject.strip_prefix(INSTANCE_EVENT_PREFIX)?.strip_prefix('.')?;
    parse_aggregate_id(rest.split_once('.')?.1)
}

/// Subject filter of every instance event.
pub fn all_instances_filter() -> String {
    format!("{INSTANCE_EVENT_PREFIX}.>")
}

/// Default number of instances whose state is cached per process.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Runs instance commands: the store plus the duties that follow a commit.
#[derive(Clone)]
pub struct InstanceCommands {
    store: InstanceStore,
    names: KvNameRegistry,
    services: InstanceServices,
}

impl std::fmt::Debug for InstanceCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceCommands").finish_non_exhaustive()
    }
}

impl InstanceCommands {
    /// Commands over `topology`, caching up to `cache_capacity` instances.
    pub fn new(topology: &Topology, cache_capacity: usize) -> Self {
        let store = JetStreamStore::new(
            topology.jetstream.clone(),
            topology.events.clone(),
            INSTANCE_EVENT_PREFIX,
            cache_capacity,
            topology.settings.commit_mode,
        );
        let names = KvNameRegistry::new(
            topology.names.clone(),
            store.clone(),
            &topology.jetstream,
            topology.settings.commit_mode,
        );
        let services = InstanceServices::new(std::sync::Arc::new(names.clone()));
        Self { store, names, services }
    }

    /// The same, with commands checked against `catalog` instead of the built-in one.
    pub fn with_catalog(mut self, catalog: std::sync::Arc<domain::Catalog>) -> Self {
        self.services.catalog = catalog;
        self
    }

    /// The catalog commands are checked against.
    pub fn catalog(&self) -> &domain::Catalog {
        &self.services.catalog
    }

    /// The underlying store.
    pub fn store(&self) -> &InstanceStore {
        &self.store
    }

    /// Runs `command` on instance `instance_id` of `project`.
    pub async fn execute(
        &self,
        project: &str,
        instance_id: Uuid,
        command: InstanceCommand,
        expected_version: Option<u64>,
        metadata: CommandMetadata,
    ) -> Result<Committed<Instance>, ExecuteError<InstanceError>> {
        let id = aggregate_id(project, instance_id);
        let committed = self.store.execute(&id, command, &self.services, expected_version, metadata).await?;
        self.after_commit(project, instance_id, committed).await
    }

    /// Provisions an instance whose id was generated for this request (see
    /// [`JetStreamStore::execute_new`]); saves loading an aggregate that cannot exist.
    pub async fn provision_new(
        &self,
        project: &str,
        instance_id: Uuid,
        command: InstanceCommand,
        metadata: CommandMetadata,
    ) -> Result<Committed<Instance>, ExecuteError<InstanceError>> {
        let id = aggregate_id(project, instance_id);
        let committed = self.store.execute_new(&id, command, &self.services, metadata).await?;
        self.after_commit(project, instance_id, committed).await
    }

    async fn after_commit(
        &self,
        project: &str,
        instance_id: Uuid,
        committed: Committed<Instance>,
    ) -> Result<Committed<Instance>, ExecuteError<InstanceError>> {
        if committed.events.iter().any(|e| matches!(e, InstanceEvent::DeprovisioningStarted {}))
            && let Some(spec) = committed.aggregate.spec()
        {
            // Best effort: a reservation left behind is taken over by the next provision of the name,
            // because its holder is deprovisioning (see `KvNameRegistry`).
            if let Err(e) = self.names.release(project, &spec.name, instance_id).await {
                tracing::warn!(error = %e, project, name = %spec.name, "name not released; it will be taken over");
            }
        }
        Ok(committed)
    }

    /// The instance as every write acknowledged before the call left it, from the stream (see
    /// [`JetStreamStore::read_current`]); `None` when it was never provisioned.
    pub async fn read_current(
        &self,
        project: &str,
        instance_id: Uuid,
    ) -> Result<Option<Current<Instance>>, ExecuteError<InstanceError>> {
        self.store.read_current(&aggregate_id(project, instance_id)).await.map_err(store_error)
    }

    /// Where command `command_id` on the instance landed, if it did since `not_before` (see
    /// [`JetStreamStore::find_command`]).
    pub async fn find_command(
        &self,
        project: &str,
        instance_id: Uuid,
        command_id: Uuid,
        not_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Landed>, ExecuteError<InstanceError>> {
        let id = aggregate_id(project, instance_id);
        self.store.find_command(&id, command_id, not_before).await.map_err(store_error)
    }

    /// The instance and its version (0 when it does not exist).
    pub async fn load(
        &self,
        project: &str,
        instance_id: Uuid,
    ) -> Result<(Instance, u64), ExecuteError<InstanceError>> {
        self.store.load(&aggregate_id(project, instance_id)).await.map_err(store_error)
    }
}

fn store_error(e: cqrs_es::AggregateError<InstanceError>) -> ExecuteError<InstanceError> {
    match e {
        cqrs_es::AggregateError::DatabaseConnectionError(e) => ExecuteError::Unavailable(e.to_string()),
        other => ExecuteError::Corrupt(other.to_string()),
    }
}
