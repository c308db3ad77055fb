//! The method table: hub method names matched case-insensitively, as ASP.NET
//! Core SignalR does, each bound to a typed handler.

use crate::args::FromArgs;
use crate::bindings::hubhost::hub::types::HubError as WitHubError;
use crate::context::Context;
use crate::streams::{Stream, Upload};
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

type Plain = Box<dyn Fn(&Context, &str) -> Result<String, HubError> + Send + Sync>;
type Uploading = Box<dyn Fn(&Context, &str, Vec<Upload>) -> Result<String, HubError> + Send + Sync>;
type Streaming = Box<dyn Fn(&Context, &str, &Stream) -> Result<(), HubError> + Send + Sync>;

/// A method of one of the three kinds a client can call.
enum Handler {
    Plain(Plain),
    Uploading { streams: usize, handler: Uploading },
    Streaming(Streaming),
}

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
        let handler: Plain = Box::new(move |ctx, args| {
            let result = handler(ctx, A::from_args(args)?)?;
            to_json(&result)
        });
        self.handlers
            .insert(name.to_lowercase(), Handler::Plain(handler));
        self
    }

    /// Register `name`, a method the client passes `streams` upload streams
    /// to (`Subject`s among its arguments): `handler` gets them, in the
    /// client's order, besides the other arguments.
    pub fn on_uploads<A, R, F>(&mut self, name: &str, streams: usize, handler: F) -> &mut Self
    where
        A: FromArgs,
        R: Serialize,
        F: Fn(&Context, A, Vec<Upload>) -> Result<R, HubError> + Send + Sync + 'static,
    {
        let handler: Uploading = Box::new(move |ctx, args, uploads| {
            let result = handler(ctx, A::from_args(args)?, uploads)?;
            to_json(&result)
        });
        let kind = Handler::Uploading { streams, handler };
        self.handlers.insert(name.to_lowercase(), kind);
        self
    }

    /// Register `name`, a method clients call with `stream(...)`: `handler`
    /// sends the items on its [`Stream`]. The stream ends when the handler
    /// returns (with its error, if it fails), unless it kept it open.
    pub fn stream<A, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: FromArgs,
        F: Fn(&Context, A, &Stream) -> Result<(), HubError> + Send + Sync + 'static,
    {
        let handler: Streaming =
            Box::new(move |ctx, args, stream| handler(ctx, A::from_args(args)?, stream));
        self.handlers
            .insert(name.to_lowercase(), Handler::Streaming(handler));
        self
    }

    fn find(&self, method: &str) -> Result<&Handler, HubError> {
        self.handlers
            .get(&method.to_lowercase())
            .ok_or_else(|| HubError::UnknownMethod(method.to_owned()))
    }

    /// Run `method` with `args` (a JSON array) and the client's `uploads`.
    pub fn call(
        &self,
        ctx: &Context,
        method: &str,
        args: &str,
        uploads: Vec<String>,
    ) -> Result<String, HubError> {
        let expected = match self.find(method)? {
            Handler::Plain(handler) if uploads.is_empty() => return handler(ctx, args),
            Handler::Uploading { streams, handler } if *streams == uploads.len() => {
                return handler(ctx, args, uploads.into_iter().map(Upload::new).collect());
            }
            Handler::Plain(_) => 0,
            Handler::Uploading { streams, .. } => *streams,
            Handler::Streaming(_) => {
                return Err(HubError::Failed(format!(
                    "The client attempted to invoke the streaming '{method}' method with a non-streaming invocation."
                )));
            }
        };
        Err(HubError::Failed(format!(
            "Client sent {} stream(s), Hub method expects {expected}.",
            uploads.len()
        )))
    }

    /// Run stream method `method` with `args`, sending on `stream`.
    pub fn open_stream(
        &self,
        ctx: &Context,
        method: &str,
        args: &str,
        stream: &Stream,
    ) -> Result<(), HubError> {
        let Handler::Streaming(handler) = self.find(method)? else {
            return Err(HubError::Failed(format!(
                "The client attempted to invoke the non-streaming '{method}' method with a streaming invocation."
            )));
        };
        handler(ctx, args, stream)?;
        if !stream.is_kept_open() {
            // Ended already (cancelled, or by the handler): nothing to do.
            let _ = stream.complete();
        }
        Ok(())
    }
}

fn to_json<R: Serialize>(result: &R) -> Result<String, HubError> {
    serde_json::to_string(result)
        .map_err(|e| HubError::Failed(format!("result is not serializable: {e}")))
}
