//! The JSON endpoints. Each parses its parameters first (400 naming the one at fault), then
//! asks auth whether the caller may see the app (403), then reads the store (503 while it is
//! unreachable, or when `api.limits.read_connections` reads are already running: the read and
//! the encoding of its answer hold a place, and nobody queues for one).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Caller;
use crate::params::{self, Cursor, TimeRange};
use crate::store::{AppEventRow, GroupPoint, LogQuery, MetricPoint};
use crate::{ApiError, ApiState, AuthMode};
use sluice_model::records::GroupKind;

/// `GET /api/v1/info` answer.
#[derive(Debug, Serialize)]
pub struct Info {
    pub auth: AuthMode,
    pub version: &'static str,
}

/// `GET /api/v1/info`: what a client needs before signing in.
pub async fn info(State(state): State<ApiState>) -> Json<Info> {
    Json(Info {
        auth: state.auth.mode(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /api/v1/apps` answer.
#[derive(Debug, Serialize)]
pub struct Apps {
    pub apps: Vec<App>,
}

#[derive(Debug, Serialize)]
pub struct App {
    pub id: String,
    pub name: Option<String>,
    pub last_activity: i64,
    /// The app's space and org from the directory (SPEC §11), when known.
    pub space_id: Option<String>,
    pub space_name: Option<String>,
    pub org_id: Option<String>,
    pub org_name: Option<String>,
}

/// `GET /api/v1/apps`: the apps with rollups that the caller may see, sorted by id.
pub async fn apps(State(state): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    let _reading = state.stores.read_permit()?;
    let stored = state.stores.apps().await?;
    let ids: Vec<String> = stored.iter().map(|app| app.id.clone()).collect();
    // One Cloud Controller list request per chunk of ids, not one request per app.
    let mut visible = state.auth.visible_apps(&caller, &ids).await?;
    let apps = stored
        .into_iter()
        .filter_map(|app| {
            let access = visible.remove(&app.id)?;
            Some(App {
                id: app.id,
                // The directory's name (SPEC §11); else what the Cloud Controller check said.
                name: app.name.or(access.name),
                last_activity: app.last_activity,
                space_id: app.space_id,
                space_name: app.space_name,
                org_id: app.org_id,
                org_name: app.org_name,
            })
        })
        .collect();
    Ok(Json(Apps { apps }).into_response())
}

/// `GET /api/v1/apps/{id}/metrics` answer.
#[derive(Debug, Serialize)]
pub struct Metrics {
    pub app_id: String,
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub points: Vec<MetricPoint>,
}

/// `GET /api/v1/apps/{id}/metrics?from&to&step`.
pub async fn metrics(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<params::Query>,
) -> Result<Response, ApiError> {
    let app_id = params::app_id(&id)?;
    let range = TimeRange::parse(&query)?;
    let step = params::step(&query)?;
    params::check_points(range, step, state.limits.max_points)?;
    state.auth.app_access(&caller, &app_id).await?;
    // Held until the answer is encoded: that takes time too.
    let _reading = state.stores.read_permit()?;
    let points = state.stores.metrics(&app_id, range, step).await?;
    Ok(Json(Metrics {
        app_id,
        from: range.from,
        to: range.to,
        step,
        points,
    })
    .into_response())
}

/// `GET /api/v1/spaces/{id}/metrics` and `/api/v1/orgs/{id}/metrics` answer.
#[derive(Debug, Serialize)]
pub struct GroupMetrics {
    /// `space` or `org`.
    pub kind: GroupKind,
    pub id: String,
    /// The name the Cloud Controller gave when it was asked (`auth = "uaa"`).
    pub name: Option<String>,
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub points: Vec<GroupPoint>,
}

/// `GET /api/v1/spaces/{id}/metrics?from&to&step`: the space's rollups (SPEC §11).
pub async fn space_metrics(
    state: State<ApiState>,
    caller: Caller,
    id: Path<String>,
    query: Query<params::Query>,
) -> Result<Response, ApiError> {
    group_metrics(GroupKind::Space, state, caller, id, query).await
}

/// `GET /api/v1/orgs/{id}/metrics?from&to&step`: the org's rollups (SPEC §11).
pub async fn org_metrics(
    state: State<ApiState>,
    caller: Caller,
    id: Path<String>,
    query: Query<params::Query>,
) -> Result<Response, ApiError> {
    group_metrics(GroupKind::Org, state, caller, id, query).await
}

/// A group's metrics: the parameters and budgets of an app's, and the Cloud Controller's
/// word on the space (org) instead of the app.
async fn group_metrics(
    kind: GroupKind,
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<params::Query>,
) -> Result<Response, ApiError> {
    let what = match kind {
        GroupKind::Space => "space",
        GroupKind::Org => "org",
    };
    let id = params::group_id(what, &id)?;
    let range = TimeRange::parse(&query)?;
    let step = params::step(&query)?;
    params::check_points(range, step, state.limits.max_points)?;
    let access = state.auth.group_access(&caller, kind, &id).await?;
    let _reading = state.stores.read_permit()?;
    let points = state.stores.group_metrics(kind, &id, range, step).await?;
    Ok(Json(GroupMetrics {
        kind,
        id,
        name: access.name,
        from: range.from,
        to: range.to,
        step,
        points,
    })
    .into_response())
}

/// `GET /api/v1/apps/{id}/events` answer.
#[derive(Debug, Serialize)]
pub struct Events {
    pub events: Vec<AppEventRow>,
}

/// `GET /api/v1/apps/{id}/events?from&to`.
pub async fn events(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<params::Query>,
) -> Result<Response, ApiError> {
    let app_id = params::app_id(&id)?;
    let range = TimeRange::parse(&query)?;
    state.auth.app_access(&caller, &app_id).await?;
    let _reading = state.stores.read_permit()?;
    let events = state.stores.events(&app_id, range).await?;
    Ok(Json(Events { events }).into_response())
}

/// `GET /api/v1/apps/{id}/logs?from&to&q&limit&cursor`: newest first, a page at a time.
pub async fn logs(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<params::Query>,
) -> Result<Response, ApiError> {
    let app_id = params::app_id(&id)?;
    let range = TimeRange::parse(&query)?;
    let limit = params::limit(&query)?;
    let cursor = Cursor::parse(&query)?;
    let terms = params::search_terms(
        &query,
        state.limits.max_search_terms,
        state.limits.max_term_bytes,
    )?;
    state.auth.app_access(&caller, &app_id).await?;
    let _reading = state.stores.read_permit()?;
    let page = state
        .stores
        .logs(LogQuery {
            app_id: &app_id,
            range,
            terms: terms.as_deref(),
            limit,
            cursor,
        })
        .await?;
    Ok(Json(page).into_response())
}
