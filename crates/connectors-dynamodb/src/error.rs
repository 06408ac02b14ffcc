//! The crate's one error type.

use std::fmt;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use kinesis_connectors_aws::{ErrorClass, Service};
use kinesis_connectors_core::BoxError;

use crate::item::MAX_ITEM_BYTES;

/// Why a DynamoDB request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`,
    /// `RequestLimitExceeded`: back off and retry.
    Throttled,
    /// Timeouts, connection failures, 5xx answers, write conflicts between
    /// replicas: retrying may succeed.
    Transient,
    /// Validation errors, a missing table, access denied…: retrying the same
    /// request cannot succeed.
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

/// Errors of the DynamoDB emitter.
///
/// Batch-level failures ([`Request`](Self::Request),
/// [`UnprocessedItems`](Self::UnprocessedItems)) are returned from
/// [`Emitter::emit`](kinesis_connectors_core::Emitter::emit) as
/// [`kinesis_connectors_core::Error::Emit`], with `retryable` taken from
/// [`is_retryable`](Self::is_retryable). Item-level problems
/// ([`Conversion`](Self::Conversion), [`ItemTooLarge`](Self::ItemTooLarge),
/// [`InvalidItem`](Self::InvalidItem)) never fail a batch: the item is
/// returned in [`EmitOutcome::rejected`](kinesis_connectors_core::EmitOutcome)
/// with this error's text as the reason, for the pipeline's bad-record policy.
/// An item DynamoDB refuses alone with `ValidationException` is rejected the
/// same way (the reason names the table and gives DynamoDB's message), unless
/// it refuses every item of the chunk (see
/// [`DynamoDbEmitter`](crate::DynamoDbEmitter)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DynamoDbError {
    /// The emitter's configuration cannot work.
    #[error("invalid DynamoDB emitter configuration: {0}")]
    Config(String),

    /// A `BatchWriteItem` or `PutItem` request failed (after the emitter's
    /// own retries, for retryable failures).
    ///
    /// It ends the batch: no further request of the batch starts, the ones
    /// in flight finish. When it is retryable the consumer emits the whole
    /// batch again; every write is a full put of an item under its key, so
    /// writing the items that were already written again leaves the table
    /// as it was. This error does not count items; in batch mode the
    /// emitter logs how many were not confirmed written (`debug` level).
    #[error(
        "{operation} on table `{table}` failed after {attempts} attempt(s) ({kind}{}): {message}",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default()
    )]
    Request {
        /// `BatchWriteItem` or `PutItem`.
        operation: &'static str,
        /// The table written to.
        table: String,
        /// Whether retrying may help.
        kind: RequestErrorKind,
        /// The service's error code, when it sent one.
        code: Option<String>,
        /// The error with its causes.
        message: String,
        /// How many times the request was sent.
        attempts: u32,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },

    /// DynamoDB kept answering a chunk's `BatchWriteItem` with
    /// `UnprocessedItems` (throttling on a partition, usually) until the
    /// emitter's retries of that chunk ran out.
    ///
    /// Retryable: the consumer emits the whole batch again. The items that
    /// were written are put again under the same keys, which leaves the
    /// table as it was.
    #[error(
        "{not_written} of {batch_items} item(s) not confirmed written to table `{table}`: \
         DynamoDB left {left} unprocessed after {attempts} BatchWriteItem attempt(s)"
    )]
    UnprocessedItems {
        /// The table written to.
        table: String,
        /// Items of the batch not confirmed written: what DynamoDB left
        /// unprocessed in every chunk that gave up, every item of a chunk
        /// whose request failed, and every item of the chunks never sent (no
        /// chunk starts after a failure; the ones in flight finish).
        not_written: usize,
        /// Items the batch had to write: its items minus the rejected ones
        /// and the collapsed duplicates.
        batch_items: usize,
        /// Items DynamoDB left unprocessed in its last answer to the chunk
        /// that gave up first.
        left: usize,
        /// How many times that chunk (or what was left of it) was sent.
        attempts: u32,
    },

    /// The item mapping (serde_dynamo by default) could not turn an item into
    /// a DynamoDB item. Per item: the item is rejected, not the batch.
    #[error("item cannot be converted to a DynamoDB item: {source}")]
    Conversion {
        /// The mapping's error.
        #[source]
        source: BoxError,
    },

    /// The item is larger than DynamoDB's item size limit (400 KB).
    /// Per item: the item is rejected, not the batch.
    #[error(
        "item is {size} bytes, over DynamoDB's item size limit of {MAX_ITEM_BYTES} bytes (400 KB)"
    )]
    ItemTooLarge {
        /// The item's size as DynamoDB counts it (attribute names plus values).
        size: usize,
    },

    /// The item would make DynamoDB refuse the whole request (a key attribute
    /// missing, empty or of the wrong type, or an attribute the condition
    /// needs is absent). Per item: the item is rejected, not the batch.
    #[error("attribute `{attribute}` {problem}")]
    InvalidItem {
        /// The attribute at fault.
        attribute: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl DynamoDbError {
    /// Whether emitting the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Request { kind, .. } => kind.is_retryable(),
            Self::UnprocessedItems { .. } => true,
            Self::Config(_)
            | Self::Conversion { .. }
            | Self::ItemTooLarge { .. }
            | Self::InvalidItem { .. } => false,
        }
    }

    /// The class of a failed request, when this is a request error.
    pub fn request_kind(&self) -> Option<RequestErrorKind> {
        match self {
            Self::Request { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether DynamoDB refused a request as invalid (`ValidationException`).
    pub(crate) fn is_validation(&self) -> bool {
        matches!(self, Self::Request { code: Some(code), .. } if code == "ValidationException")
    }

    /// DynamoDB's own message, for a `BatchWriteItem` or `PutItem` request
    /// it answered with one.
    pub(crate) fn service_message(&self) -> Option<&str> {
        let Self::Request { source, .. } = self else {
            return None;
        };
        match source.downcast_ref::<SdkError<BatchWriteItemError, HttpResponse>>() {
            Some(error) => error.message(),
            None => source
                .downcast_ref::<SdkError<PutItemError, HttpResponse>>()?
                .message(),
        }
    }

    pub(crate) fn invalid_item(attribute: &str, problem: impl Into<String>) -> Self {
        Self::InvalidItem {
            attribute: attribute.to_owned(),
            problem: problem.into(),
        }
    }

    /// A request error from the SDK's, classified.
    pub(crate) fn request<E, R>(
        operation: &'static str,
        table: &str,
        attempts: u32,
        kind: RequestErrorKind,
        error: SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let code = match &error {
            SdkError::ServiceError(service) => service.err().code().map(str::to_owned),
            _ => None,
        };
        Self::Request {
            operation,
            table: table.to_owned(),
            kind,
            code,
            message: DisplayErrorContext(&error).to_string(),
            attempts,
            source: Box::new(error),
        }
    }
}

impl From<DynamoDbError> for kinesis_connectors_core::Error {
    fn from(error: DynamoDbError) -> Self {
        match error {
            DynamoDbError::Config(message) => Self::Config(message),
            other if other.is_retryable() => Self::emit_retryable(other),
            other => Self::emit_permanent(other),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DynamoDbError> = std::result::Result<T, E>;

/// Classifies an SDK error with the workspace's shared classification
/// ([`kinesis_connectors_aws::classify`]): throttling codes and HTTP 429 are
/// throttled; timeouts, network errors, 5xx (also from a proxy, without a
/// DynamoDB code) and write conflicts are transient; the rest is permanent.
pub(crate) fn classify<E>(error: &SdkError<E, HttpResponse>) -> RequestErrorKind
where
    E: ProvideErrorMetadata,
{
    match kinesis_connectors_aws::classify(Service::DynamoDb, error).class {
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
        let unprocessed = DynamoDbError::UnprocessedItems {
            table: "t".into(),
            not_written: 12,
            batch_items: 60,
            left: 2,
            attempts: 5,
        };
        assert!(unprocessed.is_retryable());
        assert_eq!(
            unprocessed.to_string(),
            "12 of 60 item(s) not confirmed written to table `t`: \
             DynamoDB left 2 unprocessed after 5 BatchWriteItem attempt(s)"
        );
        assert!(!DynamoDbError::Config("x".into()).is_retryable());
        assert!(!DynamoDbError::ItemTooLarge { size: 500_000 }.is_retryable());
        assert!(RequestErrorKind::Throttled.is_retryable());
        assert!(RequestErrorKind::Transient.is_retryable());
        assert!(!RequestErrorKind::Permanent.is_retryable());
    }

    #[test]
    fn converts_into_the_core_error() {
        let core: kinesis_connectors_core::Error = DynamoDbError::UnprocessedItems {
            table: "t".into(),
            not_written: 1,
            batch_items: 1,
            left: 1,
            attempts: 2,
        }
        .into();
        assert!(core.is_retryable());
        let core: kinesis_connectors_core::Error = DynamoDbError::Config("bad".into()).into();
        assert!(matches!(core, kinesis_connectors_core::Error::Config(_)));
        let core: kinesis_connectors_core::Error =
            DynamoDbError::invalid_item("pk", "is missing").into();
        assert!(!core.is_retryable());
    }
}
