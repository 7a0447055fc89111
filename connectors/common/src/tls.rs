//! The TLS client configuration the network sources share (rustls with the ring provider).
//!
//! Certificates are checked against the platform's trust store, as curl and the cf CLI do.
//! `skip_tls_verify = true` accepts any certificate — the equivalent of `cf api
//! --skip-ssl-validation` for foundations with self-signed certificates — and says so loudly.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt;
use tracing::warn;

/// The TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load the platform's trusted certificates: {0}")]
    TrustStore(#[source] rustls::Error),
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A rustls client configuration: platform verification, or none with `skip_tls_verify`.
pub fn client_config(skip_tls_verify: bool) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::TrustStore)?;
    let config = if skip_tls_verify {
        warn!(
            "TLS certificate verification is off (skip_tls_verify = true): any server can impersonate the Firehose and UAA."
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        builder
            .with_platform_verifier()
            .map_err(TlsError::TrustStore)?
            .with_no_client_auth()
    };
    Ok(config)
}

/// An HTTP client for UAA and the RLP gateway, on the shared TLS configuration.
///
/// Only connecting is bounded by a timeout: an SSE stream is a response that never ends.
pub fn http_client(skip_tls_verify: bool) -> Result<reqwest::Client, TlsError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(skip_tls_verify)?)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(TlsError::HttpClient)
}

/// Accepts any server certificate but still checks the handshake signatures, so the session
/// is encrypted to whoever holds the key of the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_verification_modes_build() {
        assert!(client_config(false).is_ok());
        assert!(client_config(true).is_ok());
        assert!(http_client(false).is_ok());
    }
}
