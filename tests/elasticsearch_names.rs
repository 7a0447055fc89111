//! `sluice run` into Elasticsearch (`osmem-server`): the log documents of apps whose envelopes
//! carry Diego's name tags have `app_name`, `space_name` and `org_name` (SPEC §11), searchable
//! as keywords; the documents of the other apps have none. A tagged app's log whose own
//! envelope is untagged (the Cloud Controller's `API` lines) is named from the directory once
//! the graph knows the app.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_model::event::{Payload, log_id};
use sluice_test_support::search::SearchServer;
use sluice_test_support::*;

/// (app name, space name, org name) of an app, as its tags say.
type Names = (String, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_tagged_apps_carry_their_names() {
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let count = 6_000;
    let events = simulated_events(17, 12, count, 0.0);
    // Each tagged app's names, from any of its envelopes.
    let mut apps: BTreeMap<String, Names> = BTreeMap::new();
    for event in &events {
        if let (Some(app), Some(tags)) = (event.app_id(), event.header.tags.app_tags()) {
            let names = (
                tags.name.to_string(),
                tags.space_name.to_string(),
                tags.org_name.to_string(),
            );
            apps.insert(app.to_canonical().to_string(), names);
        }
    }
    // What each log's document must say: its envelope's tags; else its app's names or none
    // (an untagged line of a tagged app: named once the directory knows the app); else none.
    let mut expected: BTreeMap<String, Option<Names>> = BTreeMap::new();
    let mut maybe: BTreeMap<String, Names> = BTreeMap::new();
    for event in &events {
        let Payload::Log(log) = &event.payload else {
            continue;
        };
        match event.header.tags.app_tags() {
            Some(tags) => {
                let names = (
                    tags.name.to_string(),
                    tags.space_name.to_string(),
                    tags.org_name.to_string(),
                );
                expected.insert(log_id(log), Some(names));
            }
            None => match apps.get(&*log.app_id) {
                Some(names) => {
                    maybe.insert(log_id(log), names.clone());
                }
                None => {
                    expected.insert(log_id(log), None);
                }
            },
        }
    }
    assert!(!maybe.is_empty(), "tagged apps have untagged lines");
    let tagged = expected.values().filter(|names| names.is_some()).count();
    assert!(
        tagged > 100 && tagged < expected.len(),
        "{tagged} of {} logs tagged: both kinds must be there",
        expected.len()
    );
    // The same envelopes from the simulator source, paced: from a replay file the whole
    // capture can pass the graph in one go before any tag is known (seen once under load,
    // no line named from the directory), while at 3 000 envelopes/s each app's tagged
    // envelopes are seen well before its later untagged lines, as on a live Firehose.
    let config = write_config(
        dir.path(),
        "search.toml",
        &format!(
            r#"
[pipeline]
workers = 2

[sources.simulator]
type = "simulator"
apps = 12
seed = 17
rate = 3000
limit = {count}
clock = "simulated"
density = 10
jitter = "20s"

[sinks.search]
type = "elasticsearch"
url = "{url}"
index = "logs-%Y.%m.%d"
streams = ["logs"]
"#,
            url = server.url,
        ),
    );
    let output = tokio::task::spawn_blocking(move || run_config(&config))
        .await
        .expect("sluice ran");
    assert_success(&output);

    let mut found: BTreeMap<String, Option<Names>> = BTreeMap::new();
    for source in server.documents("logs-*").await {
        let text = |field: &str| source[field].as_str().map(str::to_owned);
        let names = match (text("app_name"), text("space_name"), text("org_name")) {
            (None, None, None) => None,
            (app, space, org) => Some((
                app.unwrap_or_default(),
                space.unwrap_or_default(),
                org.unwrap_or_default(),
            )),
        };
        found.insert(text("id").expect("an id"), names);
    }
    assert_eq!(
        found.len(),
        expected.len() + maybe.len(),
        "every log is a document"
    );
    for (id, names) in &expected {
        assert_eq!(found.get(id), Some(names), "document {id}");
    }
    let mut from_directory = 0;
    for (id, names) in &maybe {
        match found.get(id) {
            Some(Some(found)) => {
                assert_eq!(found, names, "document {id}");
                from_directory += 1;
            }
            Some(None) => {}
            None => panic!("document {id} is missing"),
        }
    }
    assert!(
        from_directory > 0,
        "no untagged line of a tagged app was named from the directory ({} such lines)",
        maybe.len()
    );

    // The names are keywords: one app's documents are found by its name.
    let (name, count) = {
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        for (app, _, _) in found.values().flatten() {
            *by_name.entry(app.as_str()).or_default() += 1;
        }
        let (name, count) = by_name.into_iter().next().expect("a tagged app");
        (name.to_owned(), count)
    };
    let client = sluice_common::tls::http_client(false).expect("an HTTP client");
    let answer: Value = client
        .post(format!("{}/logs-*/_count", server.url))
        .json(&json!({ "query": { "term": { "app_name": name } } }))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["count"].as_u64(), Some(count), "{answer}");
}
