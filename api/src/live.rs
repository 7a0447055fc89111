//! Rollup rows and app events pushed to clients the moment the dataflow emits them.

use axum::response::{IntoResponse, Response};

use crate::ApiError;
use crate::auth::Caller;

/// The fan-out from the graph to the open streams.
#[derive(Debug, Default)]
pub struct LiveFeed {}

pub async fn stream(_caller: Caller) -> Response {
    ApiError::unavailable("not built yet").into_response()
}
