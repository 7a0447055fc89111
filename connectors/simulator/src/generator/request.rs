//! One HTTP request through gorouter, as the Firehose carries it: gorouter's HttpStartStop
//! (Client; for a quarter of requests also Server), its `RTR` access log line, and for half of
//! them the app's own access log line. The same request id, app id and instance appear in all.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use sluice_model::Str;
use sluice_model::event::{
    Event, HttpStartStop, LogMessage, MessageType, Method, Payload, PeerType, Tags,
};

use super::lines;
use super::log_event;
use super::topology::{Topology, random_uuid};

/// One request through gorouter to an app instance.
pub(super) fn request(
    rng: &mut StdRng,
    topology: &Topology,
    stop: i64,
    pending: &mut VecDeque<Event>,
) {
    let a = topology.pick_app(rng);
    let app = &topology.apps[a];
    let instance = &app.instances[rng.random_range(0..app.instances.len())];
    let router_index = rng.random_range(0..topology.routers.len());
    let router = &topology.routers[router_index];
    let cell = &topology.cells[instance.cell];

    let method_name = match rng.random_range(0..100) {
        0..70 => "GET",
        70..85 => "POST",
        85..90 => "PUT",
        90..93 => "DELETE",
        93..95 => "PATCH",
        95..98 => "OPTIONS",
        _ => "HEAD",
    };
    let method = Method::from_name(method_name).unwrap_or(Method::GET);
    let status: i32 = match rng.random_range(0..1000) {
        0..700 => 200,
        700..800 => 201,
        800..900 => 204,
        900..915 => 302,
        915..930 => 304,
        930..945 => 404,
        945..955 => 401,
        955..962 => 403,
        962..970 => 429,
        970..980 => 400,
        980..988 => 500,
        988..994 => 502,
        994..998 => 503,
        _ => 504,
    };
    // Log-normal latency around 25 ms: exp(N(ln 25 ms, 0.8)).
    let normal = standard_normal(rng);
    let latency_ns = ((25e6f64).ln() + 0.8 * normal).exp().min(60e9) as i64;
    let start = stop - latency_ns.max(1_000);
    let content_length: i64 = if status == 204 || status == 304 {
        0
    } else {
        rng.random_range(0..20_000)
    };
    let request_bytes: u32 = rng.random_range(100..900);
    let path = lines::path(rng);
    let user_agent = lines::USER_AGENTS[rng.random_range(0..lines::USER_AGENTS.len())];
    let client = format!("203.0.113.{}", rng.random_range(1..255));
    let balancer = format!("10.0.0.{}", rng.random_range(2..9));
    let remote_address = format!("{balancer}:{}", rng.random_range(30_000..65_000));
    let forwarded: Vec<Str> = if rng.random_bool(0.5) {
        vec![client.clone().into(), balancer.into()]
    } else {
        vec![client.clone().into()]
    };
    let request_id = random_uuid(rng);
    let http = HttpStartStop {
        start_timestamp: start,
        stop_timestamp: stop,
        request_id,
        peer_type: PeerType::Client,
        method,
        uri: format!("https://{}{path}", app.host).into(),
        remote_address: remote_address.clone().into(),
        user_agent: Str::from_static(user_agent),
        status_code: status,
        content_length,
        application_id: Some(app.id),
        instance_index: Some(instance.index),
        instance_id: instance.instance_id.clone(),
        forwarded: forwarded.clone(),
    };
    // gorouter also reports a quarter of requests from its Server side: received a little
    // earlier, answered a little later, and without the app it routed to.
    let server = rng.random_bool(0.25).then(|| HttpStartStop {
        start_timestamp: start - 150_000,
        stop_timestamp: stop + 120_000,
        peer_type: PeerType::Server,
        application_id: None,
        instance_index: None,
        instance_id: Str::new(),
        ..http.clone()
    });
    let envelope_delay = rng.random_range(1_000_000..8_000_000);
    let rtr_line = format!(
        concat!(
            r#"{host} - [{start}] "{method} {path} HTTP/1.1" {status} {request_bytes} {length} "-" "{agent}" "#,
            r#""{remote}" "{cell_ip}:{port}" x_forwarded_for:"{forwarded}" x_forwarded_proto:"https" "#,
            r#"vcap_request_id:"{request_id}" response_time:{response:.6} gorouter_time:0.000{gorouter:03} "#,
            r#"app_id:"{app_id}" app_index:"{index}" instance_id:"{instance_id}" x_cf_routererror:"-""#
        ),
        host = app.host,
        start = lines::rfc3339(start),
        method = method.as_str(),
        path = path,
        status = status,
        request_bytes = request_bytes,
        length = content_length,
        agent = user_agent,
        remote = remote_address,
        cell_ip = cell.ip,
        port = instance.port,
        forwarded = forwarded.join(", "),
        request_id = request_id,
        response = latency_ns as f64 / 1e9,
        gorouter = rng.random_range(100..400),
        app_id = app.id_str,
        index = instance.index,
        instance_id = instance.instance_id,
    );
    let rtr_at = stop + rng.random_range(100_000..500_000);
    let rtr = log_event(
        router.header(Tags::default()),
        LogMessage {
            names: None,
            message: Bytes::from(rtr_line),
            message_type: MessageType::Out,
            timestamp: rtr_at,
            app_id: app.id_str.clone(),
            source_type: Str::from_static("RTR"),
            source_instance: router.index.clone(),
        },
        rtr_at + rng.random_range(1_000_000..250_000_000),
    );
    let access = rng.random_bool(0.5).then(|| {
        let line = format!(
            r#"{client} - - "{} {path} HTTP/1.1" {status} {content_length} {:.1}ms"#,
            method.as_str(),
            latency_ns as f64 / 1e6
        );
        let at = stop - rng.random_range(0..(latency_ns / 10).max(1));
        log_event(
            cell.header(app.tags.clone()),
            LogMessage {
                names: None,
                message: Bytes::from(line),
                message_type: MessageType::Out,
                timestamp: at,
                app_id: app.id_str.clone(),
                source_type: Str::from_static("APP/PROC/WEB"),
                source_instance: instance.index_str.clone(),
            },
            at + rng.random_range(1_000_000..100_000_000),
        )
    });

    let header = router.header(Tags::default());
    pending.push_back(Event {
        timestamp: stop + envelope_delay,
        header: header.clone(),
        payload: Payload::Http(http),
    });
    if let Some(server) = server {
        pending.push_back(Event {
            timestamp: server.stop_timestamp + envelope_delay,
            header,
            payload: Payload::Http(server),
        });
    }
    pending.push_back(rtr);
    if let Some(access) = access {
        pending.push_back(access);
    }
}

/// A standard normal sample (Box–Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
