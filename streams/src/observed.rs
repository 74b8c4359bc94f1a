//! The wire form of observed-state messages (`cp.obs.<cluster>.<project>.<instance-id>`): one type that
//! agents write and projections and the feed read.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use domain::observed::{OBSERVED_EVENT_VERSION, ObservedEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DecodeError, envelope::headers, instances::observed_subject, topology::OBSERVED_PREFIX};

/// The source token of the facts the control plane states itself (a backup's verification or deletion),
/// in the cluster's place of `cp.obs.<source>.<project>.<instance-id>`. Cluster names are DNS labels,
/// which cannot begin with `_`, and an agent may publish under its own cluster's token only
/// ([`crate::cluster_feed::agent_permissions`]), so no agent can state these facts. The subject keeps
/// them in every filter of an instance's or a project's observed facts (`cp.obs.*.<project>.…`).
pub const CONTROL_PLANE_SOURCE: &str = "_control-plane";

/// Who stated an observed fact and about what, as its subject (which NATS permissions bind to its
/// publisher) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedSubject<'a> {
    /// the reporting cluster, or [`CONTROL_PLANE_SOURCE`]
    pub source: &'a str,
    /// the instance's project
    pub project: &'a str,
    /// the instance
    pub instance_id: Uuid,
}

impl ObservedSubject<'_> {
    /// Whether the control plane stated it.
    pub fn from_control_plane(&self) -> bool {
        self.source == CONTROL_PLANE_SOURCE
    }

    /// Who stated it, as histories and audits name it.
    pub fn actor(&self) -> String {
        source_actor(self.source)
    }
}

fn source_actor(source: &str) -> String {
    if source == CONTROL_PLANE_SOURCE {
        "control-plane".to_owned()
    } else {
        format!("cluster-agent/{source}")
    }
}

/// The parts of an observed subject `cp.obs.<source>.<project>.<instance-id>`; `None` for any other shape.
pub fn parse_observed_subject(subject: &str) -> Option<ObservedSubject<'_>> {
    let rest = subject.strip_prefix(OBSERVED_PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let (source, project, instance) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || source.is_empty() || project.is_empty() {
        return None;
    }
    Some(ObservedSubject { source, project, instance_id: instance.parse().ok()? })
}

/// One observed-state event of one instance, as a cluster's agent publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedMessage {
    /// the cluster whose agent observed it
    pub cluster: String,
    /// the instance's project
    pub project: String,
    /// the instance
    pub instance_id: Uuid,
    /// the desired generation (instance version) the agent was working towards
    pub desired_generation: u64,
    /// schema version of `event`
    pub schema: String,
    /// when the agent observed it
    pub time: DateTime<Utc>,
    /// what it observed
    pub event: ObservedEvent,
}

impl ObservedMessage {
    /// A message observed now, in the schema this build writes.
    pub fn new(
        cluster: &str,
        project: &str,
        instance_id: Uuid,
        desired_generation: u64,
        event: ObservedEvent,
    ) -> Self {
        Self {
            cluster: cluster.to_owned(),
            project: project.to_owned(),
            instance_id,
            desired_generation,
            schema: OBSERVED_EVENT_VERSION.to_owned(),
            time: Utc::now(),
            event,
        }
    }

    /// A fact the control plane states itself about `project`'s `instance_id` (see
    /// [`CONTROL_PLANE_SOURCE`]).
    pub fn from_control_plane(project: &str, instance_id: Uuid, event: ObservedEvent) -> Self {
        Self::new(CONTROL_PLANE_SOURCE, project, instance_id, 0, event)
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        observed_subject(&self.cluster, &self.project, self.instance_id)
    }

    /// Its headers (the same names as instance events': type, schema, actor, time).
    pub fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(headers::EVENT_TYPE, self.event.type_name());
        map.insert(headers::SCHEMA_VERSION, self.schema.as_str());
        map.insert(headers::ACTOR, source_actor(&self.cluster).as_str());
        map.insert(headers::TIME, self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).as_str());
        // A backup has one start and one outcome (and one verification, one deletion): reported again by an
        // agent that died between reporting and recording it in the cluster, JetStream drops the repeat
        // within its duplicate window; past that, the fold keeps the first (an outcome is final).
        if let Some(backup_id) = self.event.backup_id() {
            map.insert(headers::MSG_ID, format!("obs-{backup_id}-{}", self.event.type_name()).as_str());
        }
        map
    }

    /// The payload.
    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Publishes it on its subject with its headers and waits for JetStream's acknowledgement; the error
    /// says why it was not stored.
    pub async fn publish(&self, jetstream: &async_nats::jetstream::Context) -> Result<(), String> {
        let body = self.to_vec().map_err(|e| e.to_string())?;
        let ack = jetstream
            .publish_with_headers(self.subject(), self.headers(), body.into())
            .await
            .map_err(|e| e.to_string())?;
        let ack = ack.await.map_err(|e| e.to_string())?;
        // Which stream stored it and where: what an operator (or a test) matches against the event stream
        // when a fact seems missing.
        tracing::debug!(
            target: "cp_facts",
            subject = self.subject(),
            desired_generation = self.desired_generation,
            stream = ack.stream,
            sequence = ack.sequence,
            duplicate = ack.duplicate,
            "fact acknowledged"
        );
        Ok(())
    }

    /// Parses a payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(payload).map_err(DecodeError::Malformed)
    }
}

/// Whether a subject of the event stream holds observed-state messages (else instance events).
pub fn is_observed_subject(subject: &str) -> bool {
    subject.strip_prefix(OBSERVED_PREFIX).is_some_and(|rest| rest.starts_with('.'))
}
