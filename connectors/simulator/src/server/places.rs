//! The simulated Cloud Controller's `GET /v3/spaces/{guid}` and `GET /v3/organizations/{guid}`:
//! what the API asks before it shows a space's or an org's rollups (SPEC §11). Test rule: the
//! `admin` user sees every space and org, `developer` those at even positions of the
//! simulator's lists (spaces of 8 apps, orgs of 3 spaces, in the order of the apps), so a test
//! has both kinds at hand. (Which apps `developer` sees is a separate rule, see
//! [`super::identity`]: these users are fixtures, not a model of Cloud Foundry's roles.)

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use super::identity::{cc_error, cc_request};

/// Spaces or orgs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    Space,
    Org,
}

/// `GET /v3/spaces/{guid}`.
pub(super) async fn space(
    State(shared): State<Arc<Shared>>,
    Path(guid): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(&shared, Place::Space, &guid, &headers)
}

/// `GET /v3/organizations/{guid}`.
pub(super) async fn organization(
    State(shared): State<Arc<Shared>>,
    Path(guid): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(&shared, Place::Org, &guid, &headers)
}

/// 401 without a valid token, 404 for a space (org) the user may not see or that does not
/// exist (the Cloud Controller does not tell which), else its guid and name.
fn answer(shared: &Shared, place: Place, guid: &str, headers: &HeaderMap) -> Response {
    let user = match cc_request(shared, headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let guid = guid.to_ascii_lowercase();
    match shared.identity.visible_place(user, place, &guid) {
        Some(name) => Json(json!({ "guid": guid, "name": name })).into_response(),
        None => cc_error(
            StatusCode::NOT_FOUND,
            10010,
            "CF-ResourceNotFound",
            match place {
                Place::Space => "Space not found",
                Place::Org => "Organization not found",
            },
        ),
    }
}
