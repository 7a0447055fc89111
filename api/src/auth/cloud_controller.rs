//! Asking the Cloud Controller about apps with the caller's token: one app (`GET
//! /v3/apps/{guid}`), or a list of them (`GET /v3/apps?guids=..`); and about a space or an
//! org (`GET /v3/spaces/{guid}`, `GET /v3/organizations/{guid}`). What it hides from the
//! caller (403, 404) is an answer, not an error.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use super::access::Verdict;
use super::{Uaa, error_chain};
use crate::ApiError;

/// How long one Cloud Controller request may take.
const CC_TIMEOUT: Duration = Duration::from_secs(10);

impl Uaa {
    /// `GET {cc_url}/v3/apps?guids=..` with the caller's token: the names of those the caller
    /// may see, by guid (lowercase).
    pub(super) async fn list_cloud_controller(
        &self,
        token: &str,
        guids: &[&str],
    ) -> Result<HashMap<String, Option<String>>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            resources: Vec<App>,
        }
        #[derive(Deserialize)]
        struct App {
            guid: String,
            #[serde(default)]
            name: Option<String>,
        }
        // GUID characters and commas need no escaping in a query.
        let url = format!(
            "{}/v3/apps?guids={}&per_page={}",
            self.cc_url,
            guids.join(","),
            guids.len().max(1)
        );
        let page: Page = self
            .cloud_controller(token, &url, "app list")
            .await?
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "the Cloud Controller at {url} hid the app list itself"
                ))
            })?;
        Ok(page
            .resources
            .into_iter()
            .map(|app| (app.guid.to_ascii_lowercase(), app.name))
            .collect())
    }

    /// `GET {cc_url}/v3/apps/{app_id}` with the caller's token.
    pub(super) async fn ask_cloud_controller(
        &self,
        token: &str,
        app_id: &str,
    ) -> Result<Verdict, ApiError> {
        #[derive(Deserialize)]
        struct App {
            #[serde(default)]
            name: Option<String>,
        }
        let url = format!("{}/v3/apps/{app_id}", self.cc_url);
        Ok(
            match self.cloud_controller::<App>(token, &url, "app").await? {
                Some(app) => Verdict::Allowed(app.name),
                None => Verdict::Denied,
            },
        )
    }

    /// `GET {cc_url}/v3/{resource}/{guid}` with the caller's token (`spaces`,
    /// `organizations`): whether the caller may see that space or org, and its name.
    pub(super) async fn ask_cloud_controller_about(
        &self,
        token: &str,
        resource: &str,
        guid: &str,
    ) -> Result<Verdict, ApiError> {
        #[derive(Deserialize)]
        struct Named {
            #[serde(default)]
            name: Option<String>,
        }
        let url = format!("{}/v3/{resource}/{guid}", self.cc_url);
        Ok(
            match self
                .cloud_controller::<Named>(token, &url, resource)
                .await?
            {
                Some(found) => Verdict::Allowed(found.name),
                None => Verdict::Denied,
            },
        )
    }

    /// `GET url` of the Cloud Controller with the caller's token, decoded as `what`; `None`
    /// when the Cloud Controller hides it from the caller (403 or 404, as it does for apps a
    /// user may not see). 401 means the token is no good to it; anything else is a 503.
    async fn cloud_controller<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        url: &str,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(CC_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "cannot reach the Cloud Controller at {}: {}",
                    self.cc_url,
                    error_chain(&e)
                ))
            })?;
        match response.status() {
            StatusCode::OK => response.json().await.map(Some).map_err(|e| {
                ApiError::unavailable(format!(
                    "the Cloud Controller at {url} sent no {what}: {}",
                    error_chain(&e)
                ))
            }),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED => Err(ApiError::unauthorized(format!(
                "the Cloud Controller at {} refused the bearer token: sign in again",
                self.cc_url
            ))),
            status => Err(ApiError::unavailable(format!(
                "the Cloud Controller at {url} answered HTTP {}",
                status.as_u16()
            ))),
        }
    }
}
