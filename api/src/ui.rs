//! The single-page web UI, embedded in the binary.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub async fn serve() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}
