//! Logging into the host's log. The host tags every line with tenant, hub and
//! connection and rate-limits it, so a hub can log freely.

use crate::bindings::hubhost::hub::log::{Level, log};

/// Debug detail; the host shows it when its log filter includes debug.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}

/// A line at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}

/// Something the tenant should look at.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref());
}

/// Something failed.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
