//! The method table: hub method names matched case-insensitively, as ASP.NET
//! Core SignalR does, each bound to a typed handler.

use crate::args::FromArgs;
use crate::bindings::hubhost::hub::types::HubError as WitHubError;
use crate::context::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// Why a hub method failed. The host turns each kind into the client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// No such method; the client sees `Unknown hub method 'X'`.
    UnknownMethod(String),
    /// The arguments do not fit the method; the client sees a generic error,
    /// the host's log the detail.
    BadArguments(String),
    /// The caller may not do this.
    Unauthorized(String),
    /// The method failed; the client sees this text as it is.
    Failed(String),
}

impl HubError {
    /// A failure whose text reaches the client.
    pub fn failed(text: impl Into<String>) -> Self {
        Self::Failed(text.into())
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMethod(m) => write!(f, "unknown hub method '{m}'"),
            Self::BadArguments(e) => write!(f, "bad arguments: {e}"),
            Self::Unauthorized(e) => write!(f, "unauthorized: {e}"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for HubError {}

impl From<HubError> for WitHubError {
    fn from(error: HubError) -> Self {
        match error {
            HubError::UnknownMethod(m) => Self::UnknownMethod(m),
            HubError::BadArguments(e) => Self::BadArguments(e),
            HubError::Unauthorized(e) => Self::Unauthorized(e),
            HubError::Failed(e) => Self::Failed(e),
        }
    }
}

type Handler = Box<dyn Fn(&Context, &str) -> Result<String, HubError> + Send + Sync>;

/// The hub's methods, by case-insensitive name.
#[derive(Default)]
pub struct Methods {
    handlers: HashMap<String, Handler>,
}

impl Methods {
    /// Register `name`: `handler` gets the call's context and its arguments
    /// read into `A` (a tuple, `()` for none) and returns a serializable
    /// result (`()` completes with `null`). Registering a name twice keeps the
    /// last handler.
    pub fn on<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: FromArgs,
        R: Serialize,
        F: Fn(&Context, A) -> Result<R, HubError> + Send + Sync + 'static,
    {
        let handler: Handler = Box::new(move |ctx, args| {
            let result = handler(ctx, A::from_args(args)?)?;
            serde_json::to_string(&result)
                .map_err(|e| HubError::Failed(format!("result is not serializable: {e}")))
        });
        self.handlers.insert(name.to_lowercase(), handler);
        self
    }

    /// Run `method` with `args` (a JSON array).
    pub fn call(&self, ctx: &Context, method: &str, args: &str) -> Result<String, HubError> {
        match self.handlers.get(&method.to_lowercase()) {
            Some(handler) => handler(ctx, args),
            None => Err(HubError::UnknownMethod(method.to_owned())),
        }
    }
}
