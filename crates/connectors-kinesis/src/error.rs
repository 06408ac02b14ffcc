//! The crate's one error type, and how SDK errors are classified into it.

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kinesis_connectors_aws::Service;

/// Errors of this crate: of the Kinesis emitter and of registering
/// enhanced fan-out consumers (the sources report theirs as the core's
/// [`Error::Source`](kinesis_connectors_core::Error::Source)).
///
/// Every variant names the stream or consumer and says whether retrying may
/// succeed ([`Error::is_retryable`]). Converted into the core's
/// [`Error::Emit`](kinesis_connectors_core::Error::Emit) (or
/// [`Error::Config`](kinesis_connectors_core::Error::Config)) by `From`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given a configuration that cannot work.
    #[error("invalid Kinesis emitter configuration: {0}")]
    Config(String),

    /// A `PutRecords` request failed as a whole: throttling, a network error
    /// or a 5xx (retryable), or a request Kinesis refused (stream not found,
    /// access denied, KMS key unusable, …: not retryable).
    #[error(
        "PutRecords to stream {stream} failed{}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    Request {
        /// The target stream.
        stream: String,
        /// The Kinesis error code, when Kinesis answered with one.
        code: Option<String>,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// The SDK's description of the failure.
        message: String,
    },

    /// Some records were still refused (`ProvisionedThroughputExceededException`,
    /// `InternalFailure`) after every attempt; the others were delivered.
    /// Retryable: the consumer emits the batch again later.
    #[error(
        "{failed} of {total} record(s) were not accepted by stream {stream} after {attempts} attempt(s) (last error: {code}: {message})"
    )]
    PartialFailure {
        /// The target stream.
        stream: String,
        /// How many records were still refused.
        failed: usize,
        /// How many records the batch sent (rejected items excluded).
        total: usize,
        /// How many attempts were made.
        attempts: u32,
        /// The error code of the last refused record.
        code: String,
        /// Its error message.
        message: String,
    },

    /// A call that registers, describes or deregisters an enhanced fan-out
    /// consumer failed: throttling or a network error (retryable), or a
    /// refusal (the stream does not exist, access denied, 20 consumers on
    /// the stream already: not retryable).
    #[error(
        "{call} for fan-out consumer {consumer} failed{}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    Registration {
        /// The Kinesis operation.
        call: &'static str,
        /// The consumer's name or ARN.
        consumer: String,
        /// The Kinesis error code, when Kinesis answered with one.
        code: Option<String>,
        /// Whether the same call may succeed later.
        retryable: bool,
        /// The SDK's description of the failure.
        message: String,
    },

    /// A fan-out consumer is not ACTIVE: it is being deleted, or it did
    /// not become ACTIVE within the wait. Retryable.
    #[error("fan-out consumer {consumer} is {status}, not ACTIVE, after waiting {waited:?}")]
    NotActive {
        /// The consumer's name.
        consumer: String,
        /// Its status (`CREATING`, `DELETING`).
        status: String,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
}

impl Error {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Request { retryable, .. } | Self::Registration { retryable, .. } => *retryable,
            Self::PartialFailure { .. } | Self::NotActive { .. } => true,
            Self::Config(_) => false,
        }
    }
}

impl From<Error> for kinesis_connectors_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Config(message) => Self::Config(message),
            error if error.is_retryable() => Self::emit_retryable(error),
            error => Self::emit_permanent(error),
        }
    }
}

/// Classifies a `PutRecords` error on `stream` with the workspace's shared
/// classification ([`kinesis_connectors_aws::classify`]).
pub(crate) fn classify<E>(
    stream: &str,
    error: SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classified = kinesis_connectors_aws::classify(Service::Kinesis, &error);
    Error::Request {
        stream: stream.to_owned(),
        code: classified.code,
        retryable: classified.class.is_retryable(),
        message: DisplayErrorContext(&error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_conversion() {
        let partial = Error::PartialFailure {
            stream: "target".into(),
            failed: 3,
            total: 10,
            attempts: 5,
            code: "ProvisionedThroughputExceededException".into(),
            message: "Rate exceeded".into(),
        };
        let text = partial.to_string();
        assert!(text.starts_with("3 of 10 record(s)"), "{text}");
        assert!(
            text.contains("target") && text.contains("5 attempt"),
            "{text}"
        );
        assert!(kinesis_connectors_core::Error::from(partial).is_retryable());
        assert!(matches!(
            kinesis_connectors_core::Error::from(Error::Config("x".into())),
            kinesis_connectors_core::Error::Config(_)
        ));
        let refused = Error::Request {
            stream: "s".into(),
            code: Some("ResourceNotFoundException".into()),
            retryable: false,
            message: "no".into(),
        };
        assert!(!kinesis_connectors_core::Error::from(refused).is_retryable());
    }
}
