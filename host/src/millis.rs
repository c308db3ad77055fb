//! Durations in settings: whole milliseconds in the configuration file,
//! flags and environment (`*_ms` keys), parsed once into a [`Duration`].
//!
//! Use as `#[serde(with = "crate::millis")]` and
//! `#[arg(value_parser = crate::millis::parse)]`; the `positive` variants
//! refuse 0 where a zero duration would mean a busy loop or an instant
//! timeout.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Whole milliseconds, saturating (a `Duration` may exceed `u64` ms).
pub fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch now (0 for a clock set before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, as_millis)
}

pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(as_millis(*duration))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

/// A flag or environment value: whole milliseconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("'{text}' is not a whole number of milliseconds"))
}

/// At least one millisecond.
pub mod positive {
    use super::*;

    pub use super::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let duration = super::deserialize(deserializer)?;
        check(duration).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        check(super::parse(text)?)
    }

    fn check(duration: Duration) -> Result<Duration, String> {
        if duration.is_zero() {
            Err("must be at least 1 millisecond".into())
        } else {
            Ok(duration)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_milliseconds_and_refuses_zero_where_asked() {
        assert_eq!(parse("1500"), Ok(Duration::from_millis(1500)));
        assert!(parse("1.5s").is_err());
        assert!(positive::parse("0").is_err());
        assert_eq!(positive::parse("1"), Ok(Duration::from_millis(1)));
    }
}
