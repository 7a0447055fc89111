//! The Cloud Controller's app listing (SPEC §11): `GET /v3/apps?per_page=N&include=space.organization`
//! for the client-credentials token of the configured client (what `[metadata]` uses), paged
//! through `pagination.next`, with the spaces and orgs of each page under `included`.
//!
//! The foundation's directory changes while the server runs: every `directory_churn` (and at
//! each [`SimulateHandle::churn_directory`](super::SimulateHandle::churn_directory)) one app,
//! drawn with the server's seed, is renamed, moved to another space, or deleted, in that
//! order of turns. The envelopes do not change: a deleted app keeps sending, as an app
//! deleted a moment ago does until its containers stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sluice_model::Str;

use super::{Shared, lock};
use crate::SimulatedApp;

/// One change of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryChange {
    Renamed { guid: uuid::Uuid, name: String },
    Moved { guid: uuid::Uuid, space_id: Str },
    Deleted { guid: uuid::Uuid },
}

/// The apps the Cloud Controller knows now.
#[derive(Debug)]
pub(super) struct Directory {
    /// In the topology's order; `None`: deleted.
    apps: Vec<Option<SimulatedApp>>,
    /// Every space of the foundation: (id, name, org id, org name).
    spaces: Vec<(Str, Str, Str, Str)>,
    churn: Option<Duration>,
    started: Instant,
    /// Changes made so far.
    made: u64,
    /// Changes due by the clock that were made.
    timed: u64,
    rng: StdRng,
}

impl Directory {
    pub(super) fn new(apps: Vec<SimulatedApp>, churn: Option<Duration>, seed: u64) -> Directory {
        let mut spaces: BTreeMap<Str, (Str, Str, Str)> = BTreeMap::new();
        for app in &apps {
            spaces.insert(
                app.space_id.clone(),
                (
                    app.space_name.clone(),
                    app.org_id.clone(),
                    app.org_name.clone(),
                ),
            );
        }
        Directory {
            apps: apps.into_iter().map(Some).collect(),
            spaces: spaces
                .into_iter()
                .map(|(id, (name, org_id, org_name))| (id, name, org_id, org_name))
                .collect(),
            churn: churn.filter(|c| !c.is_zero()),
            started: Instant::now(),
            made: 0,
            timed: 0,
            rng: StdRng::seed_from_u64(seed ^ 0xd1_4ec7),
        }
    }

    /// Makes the changes the clock says are due.
    fn catch_up(&mut self) {
        let Some(churn) = self.churn else {
            return;
        };
        let due = (self.started.elapsed().as_nanos() / churn.as_nanos().max(1)) as u64;
        while self.timed < due {
            self.timed += 1;
            self.change();
        }
    }

    /// One change: a rename, a move, a delete, in turn (a delete never takes the last app).
    pub(super) fn change(&mut self) -> Option<DirectoryChange> {
        let live: Vec<usize> = (0..self.apps.len())
            .filter(|i| self.apps[*i].is_some())
            .collect();
        if live.is_empty() {
            return None;
        }
        let at = live[self.rng.random_range(0..live.len())];
        let turn = self.made % 3;
        self.made += 1;
        let space = self.rng.random_range(0..self.spaces.len().max(1));
        let made = self.made;
        let app = self.apps[at].as_mut()?;
        let guid = app.guid;
        match turn {
            0 => {
                let base = app.name.split("-v").next().unwrap_or(&app.name).to_owned();
                app.name = format!("{base}-v{made}");
                Some(DirectoryChange::Renamed {
                    guid,
                    name: app.name.clone(),
                })
            }
            1 if self.spaces.len() > 1 => {
                let mut choice = &self.spaces[space];
                if choice.0 == app.space_id {
                    choice = &self.spaces[(space + 1) % self.spaces.len()];
                }
                app.space_id = choice.0.clone();
                app.space_name = choice.1.clone();
                app.org_id = choice.2.clone();
                app.org_name = choice.3.clone();
                Some(DirectoryChange::Moved {
                    guid,
                    space_id: app.space_id.clone(),
                })
            }
            2 if live.len() > 1 => {
                self.apps[at] = None;
                Some(DirectoryChange::Deleted { guid })
            }
            _ => {
                app.name = format!("{}-r{made}", app.name);
                Some(DirectoryChange::Renamed {
                    guid,
                    name: app.name.clone(),
                })
            }
        }
    }

    /// The apps known now, in the topology's order.
    pub(super) fn current(&mut self) -> Vec<SimulatedApp> {
        self.catch_up();
        self.apps.iter().flatten().cloned().collect()
    }
}

/// `GET /v3/apps?per_page=N&include=space.organization&page=P` for the configured client:
/// every app the foundation has now.
pub(super) fn listing(
    shared: &Arc<Shared>,
    per_page: usize,
    page: usize,
    include: bool,
) -> Response {
    shared.cc_listings.fetch_add(1, Ordering::Relaxed);
    let apps = lock(&shared.directory).current();
    let total = apps.len();
    let pages = total.div_ceil(per_page).max(1);
    if page > pages && total > 0 {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({ "errors": [{ "code": 10005, "title": "CF-BadQueryParameter",
                "detail": "The query parameter is invalid: page is past the last page" }] }),
            ),
        )
            .into_response();
    }
    let on_page: Vec<&SimulatedApp> = apps
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let resources: Vec<_> = on_page
        .iter()
        .map(|app| {
            json!({
                "guid": app.guid,
                "name": app.name,
                "state": "STARTED",
                "relationships": { "space": { "data": { "guid": app.space_id } } },
            })
        })
        .collect();
    let mut spaces = BTreeMap::new();
    let mut orgs = BTreeMap::new();
    for app in &on_page {
        spaces.insert(
            app.space_id.clone(),
            json!({
                "guid": app.space_id,
                "name": app.space_name,
                "relationships": { "organization": { "data": { "guid": app.org_id } } },
            }),
        );
        orgs.insert(
            app.org_id.clone(),
            json!({ "guid": app.org_id, "name": app.org_name }),
        );
    }
    let base = format!("http://{}/v3/apps", shared.local_addr);
    let include_query = if include {
        "&include=space.organization"
    } else {
        ""
    };
    let link = |page: usize| format!("{base}?page={page}&per_page={per_page}{include_query}");
    let mut body = json!({
        "pagination": super::identity::pagination(total, pages, page, link),
        "resources": resources,
    });
    if include {
        body["included"] = json!({
            "spaces": spaces.into_values().collect::<Vec<_>>(),
            "organizations": orgs.into_values().collect::<Vec<_>>(),
        });
    }
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, SimulatorConfig};

    #[test]
    fn changes_take_turns_and_a_delete_removes_the_app() {
        let apps = Generator::new(&SimulatorConfig {
            apps: 20,
            ..SimulatorConfig::default()
        })
        .apps();
        let mut directory = Directory::new(apps.clone(), None, 7);
        let renamed = directory.change();
        let moved = directory.change();
        let deleted = directory.change();
        assert!(matches!(renamed, Some(DirectoryChange::Renamed { .. })));
        let Some(DirectoryChange::Moved { guid, space_id }) = moved else {
            panic!("a move, not {moved:?}");
        };
        let now = directory.current();
        let app = now.iter().find(|a| a.guid == guid).expect("moved app");
        assert_eq!(app.space_id, space_id);
        let before = apps.iter().find(|a| a.guid == guid).expect("app");
        assert_ne!(before.space_id, space_id);
        let Some(DirectoryChange::Deleted { guid }) = deleted else {
            panic!("a delete, not {deleted:?}");
        };
        assert_eq!(now.len(), 19);
        assert!(now.iter().all(|a| a.guid != guid));
    }

    #[test]
    fn the_clock_changes_the_directory_every_churn_interval() {
        let apps = Generator::new(&SimulatorConfig {
            apps: 10,
            ..SimulatorConfig::default()
        })
        .apps();
        let mut directory = Directory::new(apps.clone(), Some(Duration::from_millis(20)), 3);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Three changes are due after 60 ms: a rename, a move and a delete.
        while directory.current().len() == apps.len() {
            assert!(Instant::now() < deadline, "no delete within 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(directory.made >= 3);
        let mut still = Directory::new(apps.clone(), None, 3);
        assert_eq!(still.current(), apps);
    }
}
