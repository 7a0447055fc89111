//! What every answer of the API and of the admin endpoint carries, whatever route made it:
//!
//! - On a loopback listener without authentication, a `Host` allow-list: a page on another
//!   site whose name the attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name
//!   as `Host` and is refused with 403, so it cannot read what the listener serves.
//! - `Content-Security-Policy` (the UI's own files only, no framing), `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.
//! - Every error as JSON `{"error": "..."}`: the answers axum makes itself (405, a path that
//!   is not UTF-8, a query it cannot parse) are rewritten into that form.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The policy of every answer: the UI loads its script and styles from this origin only and
/// talks to this origin only; nothing may frame it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The most of an error body read to rewrite it as JSON (axum's own are a line).
const ERROR_BODY_LIMIT: usize = 4096;

/// Which `Host` values a listener answers to.
#[derive(Debug, Clone)]
pub struct HostCheck {
    /// Lowercase host names (no port); `None`: any.
    allowed: Option<Arc<Vec<String>>>,
}

impl HostCheck {
    /// For a listener on `address`: when `check` (no authentication) and the address is
    /// loopback, the loopback names, the address itself and `extra` (`"*"` among them turns
    /// the check off); otherwise any host.
    pub fn for_listener(address: SocketAddr, check: bool, extra: &[String]) -> HostCheck {
        if !check || !address.ip().is_loopback() || extra.iter().any(|h| h == "*") {
            return HostCheck { allowed: None };
        }
        let own = match address {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let mut allowed: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .chain([own])
            .chain(extra.iter().map(|h| host_name(h).to_ascii_lowercase()))
            .collect();
        allowed.sort();
        allowed.dedup();
        HostCheck {
            allowed: Some(Arc::new(allowed)),
        }
    }

    /// Whether an answer may be given to a request with this `Host` (absent: yes, no browser
    /// leaves it out).
    pub fn allows(&self, host: Option<&str>) -> bool {
        match (&self.allowed, host) {
            (None, _) | (_, None) => true,
            (Some(allowed), Some(host)) => {
                let name = host_name(host).to_ascii_lowercase();
                let name = name.strip_suffix('.').unwrap_or(&name);
                allowed.iter().any(|a| a == name)
            }
        }
    }
}

/// The name of a `Host` value, without its port: `localhost:8080` → `localhost`,
/// `[::1]:8080` → `[::1]`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// `router` with the checks and headers of this module on every route and fallback.
pub fn harden(router: Router, hosts: HostCheck) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let hosts = hosts.clone();
            async move { guard(hosts, request, next).await }
        },
    ))
}

async fn guard(hosts: HostCheck, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let mut response = if hosts.allows(host.as_deref()) {
        json_errors(next.run(request).await).await
    } else {
        let shown: String = host.unwrap_or_default().chars().take(100).collect();
        ApiError::forbidden(format!(
            "Host {shown:?} is not a name this loopback listener answers to (a page of \
             another site re-pointed at 127.0.0.1?): use localhost or 127.0.0.1, or list the \
             name in api.allowed_hosts"
        ))
        .into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ] {
        headers.entry(name).or_insert(value);
    }
    response
}

/// An error answer that is not JSON (one axum made itself: 405 with no body, a path or query
/// it could not parse in plain text) as `{"error": "..."}`, keeping its status and message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_BODY_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                let allowed = parts
                    .headers
                    .get(header::ALLOW)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                format!("this path does not take that method; it takes: {allowed}")
            }
            _ => status
                .canonical_reason()
                .unwrap_or("the request failed")
                .to_owned(),
        }
    } else {
        text
    };
    let mut json = ApiError::new(status, message).into_response();
    // Keep what else the answer said (Allow, WWW-Authenticate, Retry-After).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(extra: &[&str]) -> HostCheck {
        let extra: Vec<String> = extra.iter().map(|h| (*h).to_owned()).collect();
        HostCheck::for_listener("127.0.0.1:8080".parse().expect("address"), true, &extra)
    }

    #[test]
    fn loopback_listeners_answer_to_loopback_names_only() {
        let check = loopback(&[]);
        for good in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost.",
        ] {
            assert!(check.allows(Some(good)), "{good}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!check.allows(Some(bad)), "{bad}");
        }
        assert!(check.allows(None));
        assert!(loopback(&["sluice.internal:8080"]).allows(Some("sluice.internal")));
        assert!(loopback(&["*"]).allows(Some("evil.example")));
    }

    #[test]
    fn other_listeners_and_authenticated_ones_answer_to_any_host() {
        let any = HostCheck::for_listener("0.0.0.0:8080".parse().expect("address"), true, &[]);
        assert!(any.allows(Some("evil.example")));
        let uaa = HostCheck::for_listener("127.0.0.1:8080".parse().expect("address"), false, &[]);
        assert!(uaa.allows(Some("evil.example")));
        let v6 = HostCheck::for_listener("[::1]:0".parse().expect("address"), true, &[]);
        assert!(v6.allows(Some("[::1]:9598")) && !v6.allows(Some("evil.example")));
    }
}
