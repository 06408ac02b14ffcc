//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kinesis_connectors_aws::{ErrorClass, Service};
use kinesis_connectors_core::BoxError;

/// Why a DynamoDB request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`,
    /// `RequestLimitExceeded`: back off and retry.
    Throttled,
    /// Timeouts, connection failures, 5xx answers, transaction conflicts:
    /// retrying may succeed.
    Transient,
    /// Validation errors, access denied…: retrying the same request cannot
    /// succeed.
    Permanent,
}

impl RequestErrorKind {
    /// Whether a request that failed this way may succeed when sent again.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient)
    }
}

impl fmt::Display for RequestErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient error",
            Self::Permanent => "permanent error",
        })
    }
}

/// Errors of the DynamoDB checkpoint store.
///
/// Returned as is by the builder; through the core traits
/// ([`CheckpointStore`](kinesis_connectors_core::CheckpointStore),
/// [`LeaseStore`](kinesis_connectors_core::LeaseStore)) they arrive as
/// [`kinesis_connectors_core::Error::Checkpoint`] (with `retryable` from
/// [`is_retryable`](Self::is_retryable) and this error as the source) or, for
/// [`Config`](Self::Config), [`kinesis_connectors_core::Error::Config`]. A
/// lost lease is the core's [`LeaseLost`](kinesis_connectors_core::Error::LeaseLost),
/// not an error of this type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DynamoDbCheckpointError {
    /// The configuration cannot work: a bad table name, a table with another
    /// key schema, or a key of another application or stream than the one
    /// the store was built for.
    #[error("invalid DynamoDB checkpoint store configuration: {0}")]
    Config(String),

    /// The table does not exist and the store was not asked to create it.
    #[error(
        "DynamoDB table `{table}` does not exist: create it (hash key `leaseKey` of type S) or build the store with `create_table_if_missing(true)`"
    )]
    TableNotFound {
        /// The table.
        table: String,
    },

    /// The table did not become `ACTIVE` in time.
    #[error("DynamoDB table `{table}` is still {status} after {waited:?}")]
    TableNotActive {
        /// The table.
        table: String,
        /// The last status seen.
        status: String,
        /// How long the store waited.
        waited: Duration,
    },

    /// A DynamoDB request failed (after the SDK's own retries).
    #[error(
        "{operation} on table `{table}` failed ({kind}{}): {message}",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default()
    )]
    Request {
        /// `GetItem`, `UpdateItem`, `Scan`, `DescribeTable` or `CreateTable`.
        operation: &'static str,
        /// The table.
        table: String,
        /// Whether retrying may help.
        kind: RequestErrorKind,
        /// The service's error code, when it sent one.
        code: Option<String>,
        /// The error with its causes.
        message: String,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },

    /// An item of the table does not follow the lease-table layout (an
    /// attribute of the wrong type, a checkpoint that is neither a sequence
    /// number nor a known sentinel).
    #[error("item `{lease_key}` of table `{table}`: attribute `{attribute}` {problem}")]
    MalformedItem {
        /// The table.
        table: String,
        /// The item's `leaseKey` (the shard id).
        lease_key: String,
        /// The attribute at fault.
        attribute: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// Other writers kept changing the item between this store's read and
    /// its conditional write; retrying later will succeed.
    #[error(
        "checkpoint of `{lease_key}` in table `{table}` changed under {attempts} conditional write(s) in a row"
    )]
    Contention {
        /// The table.
        table: String,
        /// The item's `leaseKey` (the shard id).
        lease_key: String,
        /// How many read-then-write rounds were tried.
        attempts: u32,
    },
}

impl DynamoDbCheckpointError {
    /// Whether the same call may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Request { kind, .. } => kind.is_retryable(),
            Self::TableNotActive { .. } | Self::Contention { .. } => true,
            Self::Config(_) | Self::TableNotFound { .. } | Self::MalformedItem { .. } => false,
        }
    }

    /// The class of a failed request, when this is a request error.
    pub fn request_kind(&self) -> Option<RequestErrorKind> {
        match self {
            Self::Request { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// A request error from the SDK's, classified; a missing table becomes
    /// [`TableNotFound`](Self::TableNotFound).
    pub(crate) fn request<E>(
        operation: &'static str,
        table: &str,
        error: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let classified = kinesis_connectors_aws::classify(Service::DynamoDb, &error);
        // Only when DynamoDB said so: a 404 without a code comes from a wrong
        // endpoint, not from a missing table.
        if classified.class == ErrorClass::NotFound && classified.code.is_some() {
            return Self::TableNotFound {
                table: table.to_owned(),
            };
        }
        Self::Request {
            operation,
            table: table.to_owned(),
            kind: kind_of(classified.class),
            code: classified.code,
            message: DisplayErrorContext(&error).to_string(),
            source: Box::new(error),
        }
    }
}

impl From<DynamoDbCheckpointError> for kinesis_connectors_core::Error {
    fn from(error: DynamoDbCheckpointError) -> Self {
        match error {
            DynamoDbCheckpointError::Config(message) => Self::Config(message),
            other if other.is_retryable() => Self::checkpoint_retryable(other),
            other => Self::checkpoint_permanent(other),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DynamoDbCheckpointError> = std::result::Result<T, E>;

/// Maps the workspace's shared classification
/// ([`kinesis_connectors_aws::classify`]) to this crate's: throttling codes
/// and HTTP 429 are throttled; timeouts, network errors, 5xx and transaction
/// conflicts are transient; the rest is permanent.
fn kind_of(class: ErrorClass) -> RequestErrorKind {
    match class {
        ErrorClass::Throttling => RequestErrorKind::Throttled,
        ErrorClass::Transient => RequestErrorKind::Transient,
        _ => RequestErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            DynamoDbCheckpointError::Contention {
                table: "t".into(),
                lease_key: "s".into(),
                attempts: 3,
            }
            .is_retryable()
        );
        assert!(
            DynamoDbCheckpointError::TableNotActive {
                table: "t".into(),
                status: "CREATING".into(),
                waited: Duration::from_secs(1),
            }
            .is_retryable()
        );
        assert!(!DynamoDbCheckpointError::Config("x".into()).is_retryable());
        assert!(!DynamoDbCheckpointError::TableNotFound { table: "t".into() }.is_retryable());
        assert!(
            !DynamoDbCheckpointError::MalformedItem {
                table: "t".into(),
                lease_key: "s".into(),
                attribute: "checkpoint",
                problem: "is odd".into(),
            }
            .is_retryable()
        );
        assert!(RequestErrorKind::Throttled.is_retryable());
        assert!(RequestErrorKind::Transient.is_retryable());
        assert!(!RequestErrorKind::Permanent.is_retryable());
    }

    #[test]
    fn converts_into_the_core_error() {
        use kinesis_connectors_core::Error;
        let core: Error = DynamoDbCheckpointError::Config("bad".into()).into();
        assert!(matches!(core, Error::Config(_)));
        let core: Error = DynamoDbCheckpointError::Contention {
            table: "t".into(),
            lease_key: "s".into(),
            attempts: 3,
        }
        .into();
        assert!(matches!(
            core,
            Error::Checkpoint {
                retryable: true,
                ..
            }
        ));
        let core: Error = DynamoDbCheckpointError::TableNotFound { table: "t".into() }.into();
        assert!(matches!(
            core,
            Error::Checkpoint {
                retryable: false,
                ..
            }
        ));
        assert!(
            core.to_string().contains("create_table_if_missing"),
            "{core}"
        );
    }
}
