//! The single-page web UI, embedded in the binary.
//!
//! `ui/dist` is built from `ui/src` with `npm run build` and checked in, so building Sluice
//! needs no network and no Node.js. The page keeps its state in the URL fragment: these three
//! files are every path it asks for.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../ui/dist/index.html");
const APP_JS: &str = include_str!("../../ui/dist/assets/app.js");
const APP_CSS: &str = include_str!("../../ui/dist/assets/app.css");

/// Everything the API routes do not take: the UI's files, else a JSON 404.
pub async fn serve(uri: Uri) -> Response {
    let (content_type, body) = match uri.path() {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/assets/app.css" => ("text/css; charset=utf-8", APP_CSS),
        path => {
            return crate::ApiError::not_found(format!("no such path: {path}")).into_response();
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // The names are not content-hashed: make browsers revalidate after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
