//! One remote-write request over HTTP and what its answer means.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};

use super::config::{AuthConfig, PrometheusSinkConfig};
use super::error::PrometheusSinkError;
use sluice_common::tls;

/// The receiver's answer to a request it read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// 2xx.
    Stored,
    /// A 4xx other than 429 and those in [`refuses_the_sink`] (or Prometheus 2.42's 500 "too
    /// old sample"): this request's data is refused (out of order, duplicate, out of bounds,
    /// invalid, too large); the receiver's message says why.
    Rejected { status: u16, message: String },
}

/// 429 and 5xx: overloaded or restarting.
fn is_retriable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// Prometheus 2.42 (Debian 12's) answers 500 "too old sample" for a sample older than its
/// out-of-order window, where later versions answer 400: it is a refusal, and retrying it
/// would hold its lane forever.
fn is_too_old_sample(status: u16, message: &str) -> bool {
    status == 500 && message.starts_with("too old sample")
}

/// Answers that would be the same for every request: bad credentials, a wrong URL, a
/// Prometheus without `--web.enable-remote-write-receiver` (404). SPEC §8: these stop the
/// sink, loudly, rather than dead-letter everything.
fn refuses_the_sink(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 407) || !(400..500).contains(&status)
}

pub(super) struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: Option<AuthConfig>,
    endpoint: String,
}

impl Client {
    pub(super) fn new(config: &PrometheusSinkConfig) -> Result<Client, PrometheusSinkError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| PrometheusSinkError::Config(format!("url: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| PrometheusSinkError::Config(format!("headers: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| PrometheusSinkError::Config(format!("headers: {e}")))?;
            headers.insert(name, value);
        }
        let tls = tls::client_config(config.skip_tls_verify)
            .map_err(|e| PrometheusSinkError::Client(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(headers)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| PrometheusSinkError::Client(e.to_string()))?;
        Ok(Client {
            http,
            url,
            auth: config.auth.clone(),
            endpoint: config.endpoint(),
        })
    }

    /// Posts one body. A failed connection, a timeout and a 429/5xx are retriable errors;
    /// an answer refusing the sink as a whole is [`PrometheusSinkError::Refused`].
    pub(super) async fn send(&self, body: Bytes) -> Result<Answer, PrometheusSinkError> {
        let mut request = self.http.post(self.url.clone()).body(body);
        request = match &self.auth {
            None => request,
            Some(AuthConfig::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(AuthConfig::Bearer { token }) => request.bearer_auth(token),
        };
        let unreachable = |e: reqwest::Error| PrometheusSinkError::Unreachable {
            endpoint: self.endpoint.clone(),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            // Read to the end so the connection goes back to the pool.
            let _ = response.bytes().await;
            return Ok(Answer::Stored);
        }
        let body = response.bytes().await.map_err(unreachable)?;
        // Enough of the answer to say what went wrong, cut on a character boundary.
        let message: String = String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(500)
            .collect();
        let endpoint = self.endpoint.clone();
        if is_too_old_sample(status, &message) {
            Ok(Answer::Rejected { status, message })
        } else if is_retriable_status(status) {
            Err(PrometheusSinkError::Unavailable {
                endpoint,
                status,
                message,
            })
        } else if refuses_the_sink(status) {
            Err(PrometheusSinkError::Refused {
                endpoint,
                status,
                message,
            })
        } else {
            Ok(Answer::Rejected { status, message })
        }
    }
}

/// reqwest's error and its causes on one line ("error sending request: … connection
/// refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_protocol_intends() {
        for status in [429, 500, 502, 503, 504] {
            assert!(is_retriable_status(status), "{status}");
        }
        for status in [401, 403, 404, 405, 301, 100] {
            assert!(
                !is_retriable_status(status) && refuses_the_sink(status),
                "{status}"
            );
        }
        for status in [400, 409, 413, 422] {
            assert!(
                !is_retriable_status(status) && !refuses_the_sink(status),
                "{status}"
            );
        }
        assert!(is_too_old_sample(500, "too old sample"));
        assert!(!is_too_old_sample(500, "opening storage failed"));
    }
}
