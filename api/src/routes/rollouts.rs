//! Version rollouts across the fleet: a platform admin announces one (every active instance of a service
//! at one version is to run a newer one of the same major, applied in each instance's maintenance
//! window) and follows it. The announcement is recorded (`streams::rollouts`); the projector's roller
//! holds the upgrade for each instance (`projections::rollouts`); progress is read from the instances
//! when asked. Platform admins only (`auth::routes`).

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header::LOCATION},
};
use chrono::Utc;
use domain::instance::maintenance::check_rollout;
use projections::rollouts::{Step, progress};
use streams::rollouts::Rollout as Record;
use uuid::Uuid;
use wire::{Rollout, RolloutList, RolloutProgress, RolloutRequest, RolloutStep, RolloutTarget};

use crate::{ApiError, AppState, auth::Principal, error::Problem, extract::JsonBody};

fn step(step: Step) -> RolloutStep {
    match step {
        Step::Waiting => RolloutStep::Waiting,
        Step::Held => RolloutStep::Held,
        Step::Upgrading => RolloutStep::Upgrading,
        Step::Applied => RolloutStep::Applied,
        Step::Failed => RolloutStep::Failed,
    }
}

/// `record` with its progress across the fleet as the read models show it now.
fn view(state: &AppState, record: Record) -> Rollout {
    let instances: Vec<RolloutTarget> = progress(&state.read_models.read(), &record, Utc::now())
        .into_iter()
        .map(|t| RolloutTarget {
            project: t.project,
            instance_id: t.instance_id,
            step: step(t.step),
            scheduled_for: t.scheduled_for,
            reason: t.reason,
        })
        .collect();
    Rollout {
        id: record.id,
        service: record.service.into(),
        from_version: record.from_version,
        to_version: record.to_version,
        created_at: record.created_at,
        actor: record.actor,
        progress: RolloutProgress::of(instances.iter().map(|t| t.step)),
        instances,
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// Announces a rollout: every active instance of `service` at `from_version`, and any provisioned at it
/// later, is to run `to_version`. The upgrade is held for each instance's maintenance window (its
/// `pending_maintenance` shows it) and applied then, or when the instance's owner applies pending
/// maintenance now. Only an upgrade the catalog allows within one major may be rolled out; a major
/// upgrade stays each customer's, by `PATCH`.
#[utoipa::path(
    post,
    path = "/v1/admin/rollouts",
    tag = "admin",
    request_body = RolloutRequest,
    responses(
        (status = 201, body = Rollout, headers(("Location" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "another rollout still moves instances of this service at from_version", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_rollout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<RolloutRequest>,
) -> Result<(StatusCode, HeaderMap, Json<Rollout>), ApiError> {
    let RolloutRequest { service, from_version, to_version } = body.value;
    let service: domain::ServiceType = service.into();
    let offering = state.catalog().offering(service).ok_or_else(|| {
        ApiError::field("/service", "offered_service", format!("{service} is not offered by this catalog"))
    })?;
    check_rollout(offering, &from_version, &to_version)?;
    for other in state.rollouts.list().await.map_err(unavailable)? {
        if other.service != service || other.from_version != from_version {
            continue;
        }
        let unfinished = view(&state, other.clone()).progress;
        if unfinished.waiting + unfinished.held + unfinished.upgrading > 0 {
            return Err(ApiError::Conflict {
                code: "rollout_in_progress",
                detail: format!(
                    "rollout {} still moves {service} {from_version} instances to {}",
                    other.id, other.to_version
                ),
                errors: vec![],
                retry_after: None,
            });
        }
    }
    let record = Record {
        id: Uuid::now_v7(),
        service,
        from_version,
        to_version,
        created_at: Utc::now(),
        actor: principal.subject.clone(),
    };
    state.rollouts.create(&record).await.map_err(unavailable)?;
    let mut headers = HeaderMap::new();
    let location = format!("/v1/admin/rollouts/{}", record.id);
    headers.insert(LOCATION, HeaderValue::from_str(&location).map_err(unavailable)?);
    Ok((StatusCode::CREATED, headers, Json(view(&state, record))))
}

/// Every rollout, newest first, each with its progress across the fleet.
#[utoipa::path(
    get,
    path = "/v1/admin/rollouts",
    tag = "admin",
    responses((status = 200, body = RolloutList), (status = 503, body = Problem, content_type = "application/problem+json"))
)]
pub(super) async fn list_rollouts(State(state): State<AppState>) -> Result<Json<RolloutList>, ApiError> {
    let records = state.rollouts.list().await.map_err(unavailable)?;
    Ok(Json(RolloutList { rollouts: records.into_iter().map(|r| view(&state, r)).collect() }))
}

/// One rollout and its progress: how many instances it concerns, which hold the upgrade (and when each
/// is scheduled), which run the new version as their clusters report, which failed.
#[utoipa::path(
    get,
    path = "/v1/admin/rollouts/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "rollout id")),
    responses(
        (status = 200, body = Rollout),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_rollout(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::field("/id", "uuid", "not a rollout id"))?;
    let record = state.rollouts.get(id).await.map_err(unavailable)?.ok_or(ApiError::NotFound("rollout"))?;
    Ok(Json(view(&state, record)))
}
