//! Admin API errors: a status and a JSON body `{"error": "…"}`.

use crate::deploy::DeployError;
use crate::runtime::LoadError;
use crate::store::StoreError;
use crate::vars::VarError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// A well-formed component we refuse (wrong world, forbidden import).
    #[error("{0}")]
    Unprocessable(String),
    #[error("The hub store is unavailable; try again.")]
    Unavailable,
    /// Over a rate; another try after a second may succeed.
    #[error("{0}")]
    TooMany(String),
    /// This node has too much to do; another try may succeed.
    #[error("{0}")]
    Busy(String),
    #[error("Internal error; see the server log.")]
    Internal,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(super::api::ErrorBody {
            error: self.to_string(),
        });
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            (status, [(header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSuchHub => Self::NotFound("No such hub.".to_owned()),
            StoreError::NoSuchVersion(v) => Self::NotFound(format!("No version {v} of this hub.")),
            StoreError::NoEarlierVersion => {
                Self::Conflict("No earlier version to roll back to.".to_owned())
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "admin request failed: hub store unavailable");
                Self::Unavailable
            }
        }
    }
}

impl From<DeployError> for AdminError {
    fn from(error: DeployError) -> Self {
        match error {
            DeployError::Store(error) => error.into(),
            DeployError::TooLarge { .. } => Self::TooLarge(error.to_string()),
            DeployError::TooManyHubs { .. } | DeployError::StorageFull { .. } => {
                Self::Conflict(capitalized(&error.to_string()) + ".")
            }
            DeployError::Busy => Self::Busy(capitalized(&error.to_string()) + "."),
            DeployError::Var(VarError::BadName) => {
                Self::BadRequest(capitalized(&error.to_string()) + ".")
            }
            DeployError::Var(_) | DeployError::TooManyVars { .. } => {
                Self::Conflict(capitalized(&error.to_string()) + ".")
            }
            DeployError::VarTooLarge { .. } => {
                Self::TooLarge(capitalized(&error.to_string()) + ".")
            }
            DeployError::Load(LoadError::Invalid(detail)) => {
                Self::BadRequest(format!("Not a valid WebAssembly component: {detail}"))
            }
            DeployError::Load(
                error @ (LoadError::ForbiddenImport(_) | LoadError::WrongWorld(_)),
            ) => Self::Unprocessable(capitalized(&error.to_string())),
            DeployError::Load(error @ LoadError::Read { .. }) => {
                tracing::error!(%error, "admin request failed");
                Self::Internal
            }
            DeployError::Internal(detail) => {
                tracing::error!(%detail, "admin request failed");
                Self::Internal
            }
        }
    }
}

/// `text` with its first letter in upper case (error texts start lower case).
pub(super) fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
