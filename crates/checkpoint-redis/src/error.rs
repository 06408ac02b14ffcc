//! The crate's one error type, and how Redis failures are classified.

use redis::{ErrorKind, RedisError};

/// Errors of the Redis checkpoint store.
///
/// [`Error::is_retryable`] tells whether the same call may succeed later
/// (Redis unreachable, a timeout, a server that is loading or failing over).
/// Every error converts into the core's [`kinesis_connectors_core::Error`]:
/// [`Error::LeaseLost`] into `Error::LeaseLost`, the others into
/// `Error::Checkpoint` with the same retryability, so the consumer loop
/// backs off and retries exactly the retryable ones.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Redis command failed: connection refused or dropped, a timeout, or
    /// an error reply from the server.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),

    /// Connecting panicked inside the Redis client. For `rediss://` URLs
    /// this happens when rustls finds no process-wide crypto provider (the
    /// dependency graph enables several, or none): install one before
    /// connecting (see the crate documentation).
    #[error(
        "connecting to redis panicked: {0} (for rediss:// URLs: install a rustls CryptoProvider first, see the kinesis-checkpoint-redis docs)"
    )]
    ConnectPanicked(String),

    /// The value stored under a checkpoint key is in none of the formats
    /// this crate reads (`SHARD_END`, `<sequence>`, `<sequence>/<sub-sequence>`),
    /// or the value under a pending-batch key is not a position (the same
    /// formats but `SHARD_END`). A checkpoint is left untouched: writes to
    /// that key fail until it is repaired; a pending batch is overwritten by
    /// the next one.
    #[error("the value at {key:?} is not a checkpoint: {value:?}")]
    InvalidCheckpoint {
        /// The Redis key.
        key: String,
        /// What was stored there (lossily decoded as UTF-8).
        value: String,
    },

    /// A lease hash lacks a field or holds a malformed one.
    #[error("the lease at {key:?} is malformed: {reason}")]
    InvalidLease {
        /// The Redis key of the lease hash.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Redis answered with a reply this crate's scripts never produce
    /// (another program wrote keys in this crate's key space, or a proxy
    /// rewrote the reply).
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),

    /// The lease is no longer held by this owner with this counter: another
    /// worker took it, or it was released. Nothing was written.
    #[error("lease on shard {shard_id} lost (held by {owner:?})")]
    LeaseLost {
        /// The shard whose lease was lost.
        shard_id: String,
        /// The current owner, if any.
        owner: Option<String>,
    },
}

impl Error {
    /// Whether retrying the failed call may succeed: true for I/O errors
    /// (connection refused, reset or dropped, timeouts) and for server
    /// replies that announce a passing state (`LOADING`, `BUSY`, `TRYAGAIN`,
    /// `MASTERDOWN`, `CLUSTERDOWN`, `READONLY` during a failover, `OOM`,
    /// `MISCONF`, `NOREPLICAS`); false for everything retrying cannot fix
    /// (bad configuration, authentication, wrong key types, malformed
    /// stored values, a lost lease).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Redis(error) => redis_error_is_retryable(error),
            Self::ConnectPanicked(_)
            | Self::InvalidCheckpoint { .. }
            | Self::InvalidLease { .. }
            | Self::UnexpectedReply(_)
            | Self::LeaseLost { .. } => false,
        }
    }
}

/// Server error codes that describe a state Redis leaves by itself (or an
/// operator fixes without restarting consumers): waiting is always safe for
/// checkpoint writes, so these are retried.
const RETRYABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
];

/// Whether a Redis client error is worth retrying.
pub(crate) fn redis_error_is_retryable(error: &RedisError) -> bool {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        return true;
    }
    if let Some(code) = error.code() {
        return RETRYABLE_CODES.contains(&code);
    }
    match error.kind() {
        // A reply that does not parse means the connection is out of step;
        // the connection manager replaces it.
        ErrorKind::Parse | ErrorKind::ClusterConnectionNotFound => true,
        _ => false,
    }
}

impl From<Error> for kinesis_connectors_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::LeaseLost { shard_id, owner } => Self::LeaseLost { shard_id, owner },
            error if error.is_retryable() => Self::checkpoint_retryable(error),
            error => Self::checkpoint_permanent(error),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn server_error(reply: &str) -> RedisError {
        let wire = format!("-{reply}\r\n");
        match redis::parse_redis_value(wire.as_bytes()).and_then(redis::Value::extract_error) {
            Err(error) => error,
            Ok(value) => panic!("{reply:?} parsed as a value: {value:?}"),
        }
    }

    fn io_error(kind: io::ErrorKind) -> Error {
        Error::Redis(RedisError::from(io::Error::from(kind)))
    }

    #[test]
    fn unreachable_redis_is_retryable() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            io::ErrorKind::NotConnected,
            io::ErrorKind::HostUnreachable,
        ] {
            assert!(io_error(kind).is_retryable(), "{kind:?}");
        }
        let dropped = Error::Redis(RedisError::from((ErrorKind::Io, "Connection dropped")));
        assert!(dropped.is_retryable());
    }

    #[test]
    fn passing_server_states_are_retryable() {
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MISCONF Redis is configured to save RDB snapshots",
            "NOREPLICAS Not enough good replicas to write.",
        ] {
            let error = Error::Redis(server_error(reply));
            assert!(error.is_retryable(), "{reply}: {error}");
        }
    }

    #[test]
    fn errors_retrying_cannot_fix_are_permanent() {
        for reply in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR unknown command 'EVALSHA'",
            "NOPERM this user has no permissions to run the 'evalsha' command",
            "NOSCRIPT No matching script",
        ] {
            let error = Error::Redis(server_error(reply));
            assert!(!error.is_retryable(), "{reply}: {error}");
        }
        let auth = Error::Redis(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "WRONGPASS",
        )));
        assert!(!auth.is_retryable());
        let config = Error::Redis(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "Redis URL did not parse",
        )));
        assert!(!config.is_retryable());
        assert!(
            !Error::InvalidCheckpoint {
                key: "k".into(),
                value: "v".into()
            }
            .is_retryable()
        );
        assert!(!Error::UnexpectedReply("x".into()).is_retryable());
        assert!(!Error::ConnectPanicked("no provider".into()).is_retryable());
    }

    #[test]
    fn converts_into_core_errors() {
        let core: kinesis_connectors_core::Error =
            io_error(io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(
            core,
            kinesis_connectors_core::Error::Checkpoint {
                retryable: true,
                ..
            }
        ));
        let core: kinesis_connectors_core::Error = Error::InvalidLease {
            key: "k".into(),
            reason: "no counter".into(),
        }
        .into();
        assert!(matches!(
            core,
            kinesis_connectors_core::Error::Checkpoint {
                retryable: false,
                ..
            }
        ));
        let core: kinesis_connectors_core::Error = Error::LeaseLost {
            shard_id: "shard-0".into(),
            owner: Some("worker-b".into()),
        }
        .into();
        match core {
            kinesis_connectors_core::Error::LeaseLost { shard_id, owner } => {
                assert_eq!(shard_id, "shard-0");
                assert_eq!(owner.as_deref(), Some("worker-b"));
            }
            other => panic!("expected LeaseLost, got {other:?}"),
        }
    }

    #[test]
    fn messages_name_the_cause() {
        let text = io_error(io::ErrorKind::ConnectionRefused).to_string();
        assert!(text.starts_with("redis: "), "{text}");
        let text = Error::InvalidCheckpoint {
            key: "app:checkpoint:s:shard-0".into(),
            value: "garbage".into(),
        }
        .to_string();
        assert!(
            text.contains("app:checkpoint:s:shard-0") && text.contains("garbage"),
            "{text}"
        );
    }
}
