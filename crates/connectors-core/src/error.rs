//! The core crate's one error type.

use std::fmt;
use std::time::Duration;

use crate::kpl::AggregateFault;
use crate::record::SequenceNumber;

/// A boxed error from a backend (SDK, database, user code).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to the record source (Kinesis), so the loop knows how to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// `ProvisionedThroughputExceeded`, KMS throttling, `LimitExceeded`: back off and retry.
    Throttled,
    /// The shard iterator expired: get a new one after the last record read.
    ExpiredIterator,
    /// Network errors, timeouts, 5xx: back off and retry.
    Transient,
    /// The stream or shard does not exist.
    NotFound,
    /// Anything else: not retryable.
    Other,
}

impl fmt::Display for SourceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttled => "throttled",
            Self::ExpiredIterator => "expired iterator",
            Self::Transient => "transient error",
            Self::NotFound => "not found",
            Self::Other => "error",
        })
    }
}

/// Errors of the core crate and of the traits it defines.
///
/// Every variant says whether retrying the same operation may succeed
/// ([`Error::is_retryable`]); the consumer loop retries retryable errors with
/// capped exponential backoff and stops the shard on the others.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record could not be turned into an item (or an item into bytes).
    #[error("transform failed: {message}")]
    Transform {
        /// What was wrong with the input.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// An emitter failed to deliver a batch.
    #[error("emit failed{}: {source}", if *.retryable { " (retryable)" } else { "" })]
    Emit {
        /// Whether the same batch may succeed when retried.
        retryable: bool,
        /// The emitter's own error.
        #[source]
        source: BoxError,
    },

    /// The consumer gave up on a batch: the shard stops and nothing past
    /// `first` is checkpointed.
    #[error(
        "shard {shard_id}: batch {first}..={last} was not emitted after {attempts} attempt(s): {source}"
    )]
    BatchFailed {
        /// The shard the batch came from.
        shard_id: String,
        /// The first record position the batch covers.
        first: String,
        /// The last record position the batch covers.
        last: String,
        /// How many times emitting was tried.
        attempts: u32,
        /// The last error.
        #[source]
        source: Box<Error>,
    },

    /// A checkpoint store failed to read or write.
    #[error("checkpoint store failed{}: {source}", if *.retryable { " (retryable)" } else { "" })]
    Checkpoint {
        /// Whether the same call may succeed when retried.
        retryable: bool,
        /// The store's own error.
        #[source]
        source: BoxError,
    },

    /// This worker no longer holds the lease of the shard: it must stop
    /// processing it and write nothing more.
    #[error("lease on shard {shard_id} lost (held by {owner:?})")]
    LeaseLost {
        /// The shard whose lease was lost.
        shard_id: String,
        /// The current owner, when known.
        owner: Option<String>,
    },

    /// Reading from Kinesis failed.
    #[error("kinesis {kind}: {source}")]
    Source {
        /// The class of failure.
        kind: SourceErrorKind,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },

    /// User code (a transformer, filter or emitter) panicked while the shard
    /// ran; the shard task ended without flushing.
    #[error("shard {shard_id}: a transformer, filter or emitter panicked: {message}")]
    Panicked {
        /// The shard whose task panicked.
        shard_id: String,
        /// The panic's message, when it had one.
        message: String,
    },

    /// Shutdown's grace period ended before the shard had flushed, emitted
    /// and checkpointed; it was stopped without its last checkpoint.
    #[error(
        "shard {shard_id}: still busy after the shutdown grace period of {grace:?}; stopped without its last checkpoint"
    )]
    ShutdownTimedOut {
        /// The shard that was stopped.
        shard_id: String,
        /// The grace period it had.
        grace: Duration,
    },

    /// A consumer that takes no leases ([`SingleWorker`](crate::SingleWorker))
    /// found the shard leased in its checkpoint store, so the store refuses
    /// its checkpoints: a run with a
    /// [`LeaseCoordinator`](crate::LeaseCoordinator) left the lease, or one
    /// still runs. Restarting cannot help, so it stops the consumer under
    /// every [`ShardFailurePolicy`](crate::ShardFailurePolicy).
    #[error(
        "shard {shard_id} has a lease in the checkpoint store ({}), but this consumer takes no leases (SingleWorker): run every worker with a LeaseCoordinator, or use a checkpoint store (or table/prefix) without leases",
        owner.as_deref().map_or_else(|| "released".to_owned(), |owner| format!("held by {owner:?}"))
    )]
    UnexpectedLease {
        /// The leased shard.
        shard_id: String,
        /// The lease's owner, `None` for a released lease.
        owner: Option<String>,
    },

    /// A shard failed and the consumer's
    /// [`ShardFailurePolicy`](crate::ShardFailurePolicy) says to stop the
    /// whole consumer rather than restart the shard.
    #[error("stream consumer stopped: shard {shard_id} failed: {source}")]
    ShardFailed {
        /// The shard that failed.
        shard_id: String,
        /// Its error.
        #[source]
        source: BoxError,
    },

    /// A sequence number was not a decimal number.
    #[error("invalid sequence number {0:?}: expected decimal digits")]
    InvalidSequenceNumber(String),

    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A record starts with the KPL magic but is not a valid aggregate
    /// ([`kpl::deaggregate`](crate::kpl::deaggregate)); readers hand it on
    /// whole, as the KCL does.
    #[error("record {sequence} is not a valid KPL aggregate: {fault}")]
    InvalidAggregate {
        /// The record's sequence number.
        sequence: SequenceNumber,
        /// What is wrong with it.
        fault: AggregateFault,
    },
}

impl Error {
    /// Whether retrying the failed operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Emit { retryable, .. } | Self::Checkpoint { retryable, .. } => *retryable,
            Self::Source { kind, .. } => matches!(
                kind,
                SourceErrorKind::Throttled
                    | SourceErrorKind::Transient
                    | SourceErrorKind::ExpiredIterator
            ),
            Self::Transform { .. }
            | Self::BatchFailed { .. }
            | Self::LeaseLost { .. }
            | Self::Panicked { .. }
            | Self::ShutdownTimedOut { .. }
            | Self::ShardFailed { .. }
            | Self::UnexpectedLease { .. }
            | Self::InvalidSequenceNumber(_)
            | Self::Config(_)
            | Self::InvalidAggregate { .. } => false,
        }
    }

    /// A transform error with a message and no underlying cause.
    pub fn transform(message: impl Into<String>) -> Self {
        Self::Transform {
            message: message.into(),
            source: None,
        }
    }

    /// An emit error that is worth retrying (throttling, timeouts, 5xx).
    pub fn emit_retryable(source: impl Into<BoxError>) -> Self {
        Self::Emit {
            retryable: true,
            source: source.into(),
        }
    }

    /// An emit error that retrying cannot fix (bad configuration, access denied).
    pub fn emit_permanent(source: impl Into<BoxError>) -> Self {
        Self::Emit {
            retryable: false,
            source: source.into(),
        }
    }

    /// A checkpoint-store error that is worth retrying (connection lost, throttled).
    pub fn checkpoint_retryable(source: impl Into<BoxError>) -> Self {
        Self::Checkpoint {
            retryable: true,
            source: source.into(),
        }
    }

    /// A checkpoint-store error that retrying cannot fix.
    pub fn checkpoint_permanent(source: impl Into<BoxError>) -> Self {
        Self::Checkpoint {
            retryable: false,
            source: source.into(),
        }
    }

    /// A record-source error of the given kind.
    pub fn source(kind: SourceErrorKind, source: impl Into<BoxError>) -> Self {
        Self::Source {
            kind,
            source: source.into(),
        }
    }

    /// The source error kind, if this is a record-source error.
    pub fn source_kind(&self) -> Option<SourceErrorKind> {
        match self {
            Self::Source { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(Error::emit_retryable("slow down").is_retryable());
        assert!(!Error::emit_permanent("no such bucket").is_retryable());
        assert!(Error::source(SourceErrorKind::Throttled, "pte").is_retryable());
        assert!(!Error::source(SourceErrorKind::NotFound, "gone").is_retryable());
        assert!(!Error::transform("bad json").is_retryable());
        let lost = Error::LeaseLost {
            shard_id: "s".into(),
            owner: None,
        };
        assert!(!lost.is_retryable());
    }

    #[test]
    fn exhausted_error_names_the_range() {
        let err = Error::BatchFailed {
            shard_id: "shardId-000".into(),
            first: "10".into(),
            last: "20".into(),
            attempts: 3,
            source: Box::new(Error::emit_retryable("timeout")),
        };
        let text = err.to_string();
        assert!(text.contains("10..=20"), "{text}");
        assert!(text.contains("shardId-000"), "{text}");
    }
}
