//! One Lua script on a Redis connection made on first use, waited on from
//! inside hub calls (through `workers::wait`) and the timer thread: what the Redis backends of
//! hub state and timers share. A connection that failed is dropped, so the
//! next call makes a new one; every call ends within [`TIMEOUT`].

use crate::redis_endpoint::{RedisConnection, RedisEndpoint};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::runtime::Handle;

/// Longest a call may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call of the script did not answer.
#[derive(Debug)]
pub enum ScriptError {
    /// Redis answered with an error (the script's own codes among them).
    Redis(redis::RedisError),
    /// No answer within [`TIMEOUT`].
    Timeout,
}

pub struct ScriptClient {
    endpoint: RedisEndpoint,
    script: redis::Script,
    runtime: Handle,
    connection: Mutex<Option<RedisConnection>>,
}

impl ScriptClient {
    /// `source` at `url`; connects on first use. Must be made inside the
    /// tokio runtime its calls will wait on.
    pub fn new(url: &str, source: &str) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: RedisEndpoint::parse(url)?,
            script: redis::Script::new(source),
            runtime: Handle::try_current()?,
            connection: Mutex::default(),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<RedisConnection>> {
        // Only replaced whole: a poisoned slot is still a connection or none.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run the script with `keys` and `args`, blocking until it answers.
    pub fn run<T: redis::FromRedisValue>(
        &self,
        keys: &[String],
        args: &[String],
    ) -> Result<T, ScriptError> {
        let connection = self.slot().clone();
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let started = std::time::Instant::now();
        let result = crate::workers::wait(&self.runtime, async {
            tokio::time::timeout(TIMEOUT, async {
                let mut connection = match connection {
                    Some(connection) => connection,
                    None => {
                        let made = self.endpoint.connect().await.map_err(|error| {
                            redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "no Redis to connect to",
                                error.to_string(),
                            ))
                        })?;
                        *self.slot() = Some(made.clone());
                        made
                    }
                };
                invocation.invoke_async::<T>(&mut connection).await
            })
            .await
        });
        crate::monitoring::redis_round_trip("script", started.elapsed());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                // A replica's READONLY: the primary moved (Sentinel).
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                {
                    *self.slot() = None;
                }
                Err(ScriptError::Redis(error))
            }
            Err(_) => {
                *self.slot() = None;
                Err(ScriptError::Timeout)
            }
        }
    }
}
