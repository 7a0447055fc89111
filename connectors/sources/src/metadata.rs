//! The Cloud Controller as a source of app names (SPEC §11): `[metadata]`.
//!
//! [`CloudController::list`] takes one complete listing: a UAA client-credentials token
//! (`POST {uaa_url}/oauth/token`, the [`TokenSource`] the Firehose uses), then
//! `GET {cc_url}/v3/apps?per_page=5000&include=space.organization` and every page after it
//! through `pagination.next.href`, joining each app with the `included` spaces and orgs for
//! their names. A `429` (after its `Retry-After`) or a `5xx` is tried again with backoff, a
//! `401` once with a fresh token; anything else fails the listing, and a partial listing is
//! never returned. [`run`] lists every `refresh`, one listing at a time, and hands each
//! complete listing to the pipeline; a failed one is tried again with backoff (capped at
//! `refresh`), logged as one error when the outage starts and one line when it ends.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_common::backoff::Backoff;
use sluice_common::telemetry::Counter;
use sluice_common::tls::{self, TlsError};
use sluice_common::uaa::{TokenSource, UaaError};
use sluice_model::Str;
use sluice_model::records::AppInfo;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::check_url;

/// Apps per page asked of the Cloud Controller: its maximum.
pub const PER_PAGE: usize = 5000;

/// Attempts at one page answered `429` or `5xx` before the listing fails.
const PAGE_ATTEMPTS: u32 = 6;

/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[metadata]`: the Cloud Controller whose apps, spaces and orgs name the directory.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// The Cloud Controller's base URL (`https://api.sys.example.com`).
    pub cc_url: String,
    /// UAA's base URL (`https://uaa.sys.example.com`); the token comes from `/oauth/token`.
    pub uaa_url: String,
    /// The UAA client, which needs `cloud_controller.admin_read_only` or
    /// `cloud_controller.global_auditor`.
    pub client_id: String,
    /// Its secret (usually `"${CC_CLIENT_SECRET}"`).
    pub client_secret: String,
    /// Accept any TLS certificate from the Cloud Controller and UAA. Default false.
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// How often the apps are listed again. Default `"5m"`, at least `"1s"`.
    #[serde(default = "default_refresh", with = "sluice_common::config::duration")]
    pub refresh: Duration,
    /// How long a run waits for the first listing before records enter the graph. Default
    /// `"30s"`; `"0s"` does not wait.
    #[serde(
        default = "default_startup_timeout",
        with = "sluice_common::config::duration"
    )]
    pub startup_timeout: Duration,
}

const fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

const fn default_startup_timeout() -> Duration {
    Duration::from_secs(30)
}

impl fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("cc_url", &self.cc_url)
            .field("uaa_url", &self.uaa_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("refresh", &self.refresh)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl MetadataConfig {
    /// Every problem of the section as `(key, problem)`. Pure: nothing is contacted.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (key, url) in [("cc_url", &self.cc_url), ("uaa_url", &self.uaa_url)] {
            if let Err(problem) = check_url(url, &["http", "https"]) {
                problems.push((key, problem));
            }
        }
        if self.client_id.trim().is_empty() {
            problems.push(("client_id", "is empty".to_owned()));
        }
        if self.refresh < Duration::from_secs(1) {
            problems.push((
                "refresh",
                format!("must be at least 1s, not {:?}", self.refresh),
            ));
        }
        if self.startup_timeout > Duration::from_secs(3600) {
            problems.push((
                "startup_timeout",
                format!("must be at most 1h, not {:?}", self.startup_timeout),
            ));
        }
        problems
    }

    /// The first page of a listing.
    pub fn apps_url(&self) -> String {
        format!(
            "{}/v3/apps?per_page={PER_PAGE}&include=space.organization",
            self.cc_url.trim_end_matches('/')
        )
    }
}

/// What the Cloud Controller source has done: `/metrics` shows it.
#[derive(Debug, Default)]
pub struct MetadataMetrics {
    /// Complete listings handed to the graph.
    pub listings: Counter,
    /// Listings that failed (nothing of them was used).
    pub failures: Counter,
    /// Pages asked again after a `429`, a `5xx` or a refused token.
    pub retries: Counter,
    /// Apps in the last complete listing; -1 before the first.
    pub apps: AtomicI64,
}

impl MetadataMetrics {
    pub fn new() -> MetadataMetrics {
        MetadataMetrics {
            apps: AtomicI64::new(-1),
            ..MetadataMetrics::default()
        }
    }
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Uaa(#[from] UaaError),
    #[error("cannot reach the Cloud Controller at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the Cloud Controller at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "the Cloud Controller at {url} refused a fresh token of client '{client_id}' (HTTP \
         {status}); the client needs cloud_controller.admin_read_only or \
         cloud_controller.global_auditor"
    )]
    Refused {
        url: String,
        client_id: String,
        status: u16,
    },
    #[error("the Cloud Controller at {url} sent a page that is not a v3 app list: {detail}")]
    BadPage { url: String, detail: String },
    #[error("stopped")]
    Stopped,
}

/// One page of `GET /v3/apps?include=space.organization`, as far as the directory needs it.
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    pagination: Option<Pagination>,
    resources: Vec<AppResource>,
    #[serde(default)]
    included: Included,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    #[serde(default)]
    next: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    href: String,
}

#[derive(Debug, Deserialize)]
struct AppResource {
    guid: String,
    name: String,
    #[serde(default)]
    relationships: Option<Relationships>,
}

#[derive(Debug, Default, Deserialize)]
struct Included {
    #[serde(default)]
    spaces: Vec<SpaceResource>,
    #[serde(default)]
    organizations: Vec<Named>,
}

#[derive(Debug, Deserialize)]
struct SpaceResource {
    guid: String,
    name: String,
    #[serde(default)]
    relationships: Option<Relationships>,
}

#[derive(Debug, Deserialize)]
struct Named {
    guid: String,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct Relationships {
    #[serde(default)]
    space: Option<ToOne>,
    #[serde(default)]
    organization: Option<ToOne>,
}

#[derive(Debug, Deserialize)]
struct ToOne {
    data: Option<Guid>,
}

#[derive(Debug, Deserialize)]
struct Guid {
    guid: String,
}

impl Relationships {
    fn space(&self) -> Option<&str> {
        Some(self.space.as_ref()?.data.as_ref()?.guid.as_str())
    }

    fn organization(&self) -> Option<&str> {
        Some(self.organization.as_ref()?.data.as_ref()?.guid.as_str())
    }
}

/// An app guid as the graph spells app ids: lower case (the Cloud Controller's guids are
/// hyphenated UUIDs already).
fn canonical_guid(guid: &str) -> Str {
    Str::from(guid.trim().to_ascii_lowercase())
}

/// The apps of a listing with their names, joined from the pages' resources and includes.
#[derive(Default)]
struct Gathered {
    apps: Vec<(Str, String, Option<String>)>,
    spaces: HashMap<String, (Str, Option<String>)>,
    orgs: HashMap<String, Str>,
}

impl Gathered {
    fn add(&mut self, page: Page) {
        for space in page.included.spaces {
            let org = space
                .relationships
                .as_ref()
                .and_then(Relationships::organization)
                .map(str::to_owned);
            self.spaces
                .insert(space.guid, (Str::from(space.name.as_str()), org));
        }
        for org in page.included.organizations {
            self.orgs.insert(org.guid, Str::from(org.name.as_str()));
        }
        for app in page.resources {
            let space = app
                .relationships
                .as_ref()
                .and_then(Relationships::space)
                .map(str::to_owned);
            self.apps.push((canonical_guid(&app.guid), app.name, space));
        }
    }

    fn finish(self) -> Vec<(Str, AppInfo)> {
        let mut apps: Vec<(Str, AppInfo)> = self
            .apps
            .into_iter()
            .map(|(guid, name, space_id)| {
                let space = space_id.as_ref().and_then(|id| self.spaces.get(id));
                let org_id = space.and_then(|(_, org)| org.clone());
                let info = AppInfo {
                    name: Str::from(name.as_str()),
                    space_id: space_id.as_deref().map(Str::from).unwrap_or_default(),
                    space_name: space.map(|(name, _)| name.clone()).unwrap_or_default(),
                    org_name: org_id
                        .as_ref()
                        .and_then(|id| self.orgs.get(id).cloned())
                        .unwrap_or_default(),
                    org_id: org_id.as_deref().map(Str::from).unwrap_or_default(),
                };
                (guid, info)
            })
            .collect();
        apps.sort_by(|a, b| a.0.cmp(&b.0));
        apps.dedup_by(|a, b| a.0 == b.0);
        apps
    }
}

/// A client of one Cloud Controller.
pub struct CloudController {
    http: reqwest::Client,
    tokens: TokenSource,
    client_id: String,
    apps_url: String,
    metrics: Arc<MetadataMetrics>,
    shutdown: CancellationToken,
}

impl CloudController {
    pub fn new(
        config: &MetadataConfig,
        metrics: Arc<MetadataMetrics>,
        shutdown: CancellationToken,
    ) -> Result<CloudController, ListError> {
        let http = tls::http_client(config.skip_tls_verify)?;
        let tokens = TokenSource::new(
            http.clone(),
            &config.uaa_url,
            config.client_id.clone(),
            config.client_secret.clone(),
        );
        Ok(CloudController {
            http,
            tokens,
            client_id: config.client_id.clone(),
            apps_url: config.apps_url(),
            metrics,
            shutdown,
        })
    }

    /// The first page's URL, as logs name the Cloud Controller.
    pub fn apps_url(&self) -> &str {
        &self.apps_url
    }

    /// One complete listing: every app, sorted by guid. Nothing of a listing that fails
    /// half-way is returned.
    pub async fn list(&self) -> Result<Vec<(Str, AppInfo)>, ListError> {
        let mut gathered = Gathered::default();
        let mut next = Some(self.apps_url.clone());
        let mut pages = 0_u32;
        while let Some(url) = next {
            let page = self.page(&url).await?;
            pages += 1;
            next = page
                .pagination
                .as_ref()
                .and_then(|p| p.next.as_ref())
                .map(|link| link.href.clone());
            gathered.add(page);
        }
        let apps = gathered.finish();
        debug!(
            pages,
            apps = apps.len(),
            "Listed the Cloud Controller's apps."
        );
        Ok(apps)
    }

    /// One page, asked again after a `429` or `5xx` (with backoff) and once after a `401`
    /// (with a fresh token).
    async fn page(&self, url: &str) -> Result<Page, ListError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut fresh_token = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let token = self.tokens.token().await?;
            let response = tokio::select! {
                response = self.http
                    .get(url)
                    .bearer_auth(&token)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .timeout(PAGE_TIMEOUT)
                    .send() => response,
                () = self.shutdown.cancelled() => return Err(ListError::Stopped),
            }
            .map_err(|source| ListError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
            let status = response.status().as_u16();
            let delay = match status {
                200..=299 => {
                    let body = response
                        .bytes()
                        .await
                        .map_err(|source| ListError::Unreachable {
                            url: url.to_owned(),
                            source,
                        })?;
                    return serde_json::from_slice(&body).map_err(|e| ListError::BadPage {
                        url: url.to_owned(),
                        detail: e.to_string(),
                    });
                }
                401 if !fresh_token => {
                    // Revoked or expired early: one fresh token, at once.
                    fresh_token = true;
                    self.metrics.retries.incr();
                    self.tokens.invalidate().await;
                    debug!(
                        url,
                        "The Cloud Controller refused the token; fetching a fresh one."
                    );
                    continue;
                }
                401 | 403 => {
                    return Err(ListError::Refused {
                        url: url.to_owned(),
                        client_id: self.client_id.clone(),
                        status,
                    });
                }
                429 | 500..=599 if attempts < PAGE_ATTEMPTS => {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                    let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
                    debug!(
                        url,
                        status,
                        delay_ms = delay.as_millis() as u64,
                        "The Cloud Controller asked to wait; asking again."
                    );
                    delay
                }
                _ => {
                    let body = response.text().await.unwrap_or_default();
                    return Err(ListError::Status {
                        url: url.to_owned(),
                        status,
                        body: body.chars().take(300).collect(),
                    });
                }
            };
            self.metrics.retries.incr();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return Err(ListError::Stopped),
            }
        }
    }
}

/// Lists every `refresh` until `shutdown`, handing each complete listing to `deliver`.
/// `first_done` is called once, after the first attempt's outcome (a listing or a failure).
pub async fn run(
    config: MetadataConfig,
    metrics: Arc<MetadataMetrics>,
    shutdown: CancellationToken,
    mut deliver: impl FnMut(Vec<(Str, AppInfo)>) + Send,
    first_done: impl FnOnce() + Send,
) {
    let mut first_done = Some(first_done);
    let client = match CloudController::new(&config, metrics.clone(), shutdown.clone()) {
        Ok(client) => client,
        Err(e) => {
            error!(error = %e, "Cannot set up the Cloud Controller client; apps are named by envelope tags only.");
            if let Some(done) = first_done.take() {
                done();
            }
            return;
        }
    };
    let url = client.apps_url().to_owned();
    let mut backoff = Backoff::new(Duration::from_secs(1), config.refresh);
    let mut failing = 0_u64;
    loop {
        let started = Instant::now();
        let wait = match client.list().await {
            Ok(apps) => {
                let count = apps.len();
                let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                metrics.listings.incr();
                metrics
                    .apps
                    .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
                deliver(apps);
                if failing > 0 {
                    info!(
                        url,
                        failed = failing,
                        apps = count,
                        took_ms,
                        "The Cloud Controller answers again."
                    );
                } else if metrics.listings.get() == 1 {
                    info!(
                        url,
                        apps = count,
                        took_ms,
                        "The Cloud Controller's first listing is in."
                    );
                } else {
                    debug!(
                        url,
                        apps = count,
                        took_ms,
                        "Cloud Controller listing delivered."
                    );
                }
                failing = 0;
                backoff.reset();
                config.refresh
            }
            Err(ListError::Stopped) => break,
            Err(e) => {
                metrics.failures.incr();
                failing += 1;
                let delay = backoff.next_delay();
                if failing == 1 {
                    error!(url, error = %e, retry_in_s = delay.as_secs_f64(),
                        "Cannot list the Cloud Controller's apps; apps are named by envelope tags until it answers.");
                } else {
                    warn!(url, error = %e, attempt = failing, "The Cloud Controller still gives no listing.");
                }
                delay
            }
        };
        if let Some(done) = first_done.take() {
            done();
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Some(done) = first_done.take() {
        done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MetadataConfig {
        MetadataConfig {
            cc_url: "https://api.sys.example.com/".to_owned(),
            uaa_url: "https://uaa.sys.example.com".to_owned(),
            client_id: "sluice".to_owned(),
            client_secret: "secret".to_owned(),
            skip_tls_verify: false,
            refresh: default_refresh(),
            startup_timeout: default_startup_timeout(),
        }
    }

    #[test]
    fn a_good_section_has_no_problems_and_lists_5000_apps_a_page() {
        assert!(config().problems().is_empty());
        assert_eq!(
            config().apps_url(),
            "https://api.sys.example.com/v3/apps?per_page=5000&include=space.organization"
        );
    }

    #[test]
    fn every_problem_names_its_key() {
        let bad = MetadataConfig {
            cc_url: "api.sys.example.com".to_owned(),
            uaa_url: "ftp://uaa".to_owned(),
            client_id: " ".to_owned(),
            refresh: Duration::from_millis(10),
            startup_timeout: Duration::from_secs(7200),
            ..config()
        };
        let keys: Vec<&str> = bad.problems().iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [
                "cc_url",
                "uaa_url",
                "client_id",
                "refresh",
                "startup_timeout"
            ]
        );
        assert!(!format!("{bad:?}").contains("secret\""));
    }

    #[test]
    fn pages_are_joined_with_their_spaces_and_orgs() {
        let page: Page = serde_json::from_value(serde_json::json!({
            "pagination": { "next": null },
            "resources": [
                { "guid": "6D3C9F4E-0000-4000-8000-000000000001", "name": "web",
                  "relationships": { "space": { "data": { "guid": "s1" } } } },
                { "guid": "6d3c9f4e-0000-4000-8000-000000000002", "name": "orphan",
                  "relationships": { "space": { "data": { "guid": "s9" } } } }
            ],
            "included": {
                "spaces": [{ "guid": "s1", "name": "prod",
                    "relationships": { "organization": { "data": { "guid": "o1" } } } }],
                "organizations": [{ "guid": "o1", "name": "acme" }]
            }
        }))
        .expect("a v3 page");
        let mut gathered = Gathered::default();
        gathered.add(page);
        let apps = gathered.finish();
        assert_eq!(apps.len(), 2);
        assert_eq!(&*apps[0].0, "6d3c9f4e-0000-4000-8000-000000000001");
        assert_eq!(
            apps[0].1,
            AppInfo {
                name: "web".into(),
                space_id: "s1".into(),
                space_name: "prod".into(),
                org_id: "o1".into(),
                org_name: "acme".into(),
            }
        );
        assert_eq!(&*apps[1].1.space_id, "s9");
        assert!(apps[1].1.space_name.is_empty() && apps[1].1.org_id.is_empty());
    }
}
