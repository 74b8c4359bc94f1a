//! Finding the instance a platform's id names. OSB routes carry no project, so the instance is looked up
//! by its id among every project's in the read models, after they have caught up with the event stream
//! (`routes::write::catch_up`): a platform that just provisioned must find what it created. The scan is
//! linear in the number of instances (a map walk, no I/O); the broker's requests are few.

use projections::InstanceView;
use uuid::Uuid;

use super::error::OsbError;
use crate::{
    AppState,
    auth::{Principal, Role},
    routes::write,
};

/// An instance a platform addressed, as the read models show it.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// its project
    pub(super) project: String,
    /// its record
    pub(super) view: InstanceView,
}

impl Found {
    /// Whether its provision was applied once (the agent observed a generation of it).
    pub(super) fn provisioned(&self) -> bool {
        self.view.observed.as_ref().and_then(|o| o.observed_generation).is_some_and(|g| g >= 1)
    }

    /// Whether the cluster has applied the last change of the instance's users. Until then a user just
    /// deleted (an unbind) may still be in the database: the read model keeps no list of deleted names,
    /// so this is the instance-wide answer (a user the instance never had also reads "unsettled" while
    /// another user's change is under way).
    pub(super) fn users_settled(&self) -> bool {
        let changed = self.view.changed.get(projections::Aspect::Users).unwrap_or(0);
        self.view.observed.as_ref().map_or(0, |o| o.applied(projections::Aspect::Users)) >= changed
    }

    /// Whether an operation on it is under way (deprovisioning counts).
    pub(super) fn busy(&self) -> bool {
        self.view.deprovisioning.is_some() && !self.view.removed
            || self.view.status.state == projections::Health::Reconciling
    }
}

/// The instance `id`, wherever it is, once the read models include everything the stream holds now.
pub(super) async fn find(state: &AppState, id: Uuid) -> Result<Option<Found>, OsbError> {
    write::catch_up(state).await.map_err(|e| OsbError::from_api(e, super::error::Request::Read))?;
    let model = state.read_models.read();
    Ok(model
        .all_instances()
        .find(|view| view.instance.spec().is_some_and(|spec| spec.id == id))
        .map(|view| Found { project: view.spec().project.clone(), view: view.clone() }))
}

/// The instance `id` if the caller holds at least `role` in its project; one in a project the caller
/// has no role in is not there for it (as on `/v1`, existence does not leak). A role too weak is 403.
pub(super) async fn find_for(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    role: Role,
) -> Result<Option<Found>, OsbError> {
    let Some(found) = find(state, id).await? else { return Ok(None) };
    match principal.role_in(&found.project) {
        None => Ok(None),
        Some(_) => {
            super::auth::require(principal, &found.project, role)?;
            Ok(Some(found))
        }
    }
}

/// The id of the command that last changed instance `id` of `project` (its operation), from the stream.
pub(super) async fn last_command(
    state: &AppState,
    project: &str,
    id: Uuid,
) -> Result<Option<Uuid>, OsbError> {
    let history =
        state.commands.store().history(&streams::instances::aggregate_id(project, id)).await.map_err(
            |e| OsbError::from_api(crate::ApiError::Unavailable(e.to_string()), super::error::Request::Read),
        )?;
    Ok(history.last().map(|(_, _, metadata)| metadata.command_id))
}
