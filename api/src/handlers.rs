//! The JSON endpoints.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, ApiState, AuthMode};

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

pub async fn apps(_caller: Caller) -> Result<Json<()>, ApiError> {
    Err(ApiError::unavailable("not built yet"))
}

pub async fn metrics(_caller: Caller) -> Result<Json<()>, ApiError> {
    Err(ApiError::unavailable("not built yet"))
}

pub async fn events(_caller: Caller) -> Result<Json<()>, ApiError> {
    Err(ApiError::unavailable("not built yet"))
}

pub async fn logs(_caller: Caller) -> Result<Json<()>, ApiError> {
    Err(ApiError::unavailable("not built yet"))
}
