//! How loading a component or calling a hub fails.

use std::time::Duration;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component imports '{0}', which hubhost does not provide")]
    ForbiddenImport(String),
    #[error("the component does not fit the hubhost:hub/hub-component world: {0}")]
    WrongWorld(String),
}

/// Why a call did not produce an answer from the hub.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the hub exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("the hub exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("the hub exceeded its table limit of {0} elements")]
    TableLimit(usize),
    #[error("the hub overflowed its stack")]
    StackOverflow,
    #[error("the hub trapped: {0}")]
    Trap(String),
    #[error("the hub returned a result that is not valid JSON: {0}")]
    BadResult(String),
    #[error("the hub's result of {size} bytes exceeds the limit of {limit} bytes")]
    ResultTooLarge { size: usize, limit: usize },
}

impl CallError {
    /// Its kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit(_) => "memory",
            Self::TableLimit(_) => "table",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
            Self::BadResult(_) => "bad_result",
            Self::ResultTooLarge { .. } => "result_too_large",
        }
    }

    /// The setting of the limit that stopped the call, if a limit did.
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            Self::Timeout(_) => "hub_limits.call_timeout_ms",
            Self::MemoryLimit(_) => "hub_limits.memory_bytes",
            Self::TableLimit(_) => "hub_limits.max_table_elements",
            Self::ResultTooLarge { .. } => "hub_limits.max_result_bytes",
            Self::StackOverflow | Self::Trap(_) | Self::BadResult(_) => return None,
        })
    }
}
