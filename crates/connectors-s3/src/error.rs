//! The crate's one error type, and how SDK errors are classified into it.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kinesis_connectors_aws::{Classification, ErrorClass, Service, classify};

/// Errors of the S3 emitters.
///
/// Every variant names the bucket and key (or the manifest stream) it is
/// about, and says whether retrying may succeed ([`Error::is_retryable`]).
/// Converted into the core's [`Error::Emit`](kinesis_connectors_core::Error::Emit)
/// (or [`Error::Config`](kinesis_connectors_core::Error::Config)) by `From`,
/// so the consumer loop retries throttling and network failures and stops the
/// shard on the others.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given a configuration that cannot work. The message
    /// names the bucket (`bucket "logs": part size …`), or quotes the bucket
    /// name when that is what is wrong.
    #[error("invalid S3 emitter configuration: {0}")]
    Config(String),

    /// The bucket does not exist (S3 `NoSuchBucket`).
    #[error("S3 bucket {bucket:?} does not exist (writing key {key:?})")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
        /// The object being written.
        key: String,
    },

    /// The credentials may not write the object (S3 `AccessDenied` and
    /// friends, or a KMS key the caller may not use).
    #[error("access denied writing s3://{bucket}/{key} ({operation}): {message}")]
    AccessDenied {
        /// The S3 operation that was refused.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object being written.
        key: String,
        /// What S3 said.
        message: String,
    },

    /// An S3 request failed for another reason: throttling (`503 SlowDown`),
    /// a network error or a 5xx (retryable), or a request S3 refused
    /// (invalid argument, wrong KMS key, …: not retryable).
    #[error(
        "S3 {operation} of s3://{bucket}/{key} failed{}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    Request {
        /// The S3 operation (`PutObject`, `UploadPart`, …).
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object being written.
        key: String,
        /// The S3 error code, when S3 answered with one.
        code: Option<String>,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// The SDK's description of the failure.
        message: String,
    },

    /// The encoded batch needs more than the 10,000 parts S3 allows in one
    /// multipart upload; raise the part size or lower the buffer limits.
    #[error(
        "object s3://{bucket}/{key} of {size} bytes needs {parts} parts of {part_size} bytes; S3 allows at most 10000"
    )]
    TooLarge {
        /// The bucket.
        bucket: String,
        /// The object being written.
        key: String,
        /// The object's size in bytes.
        size: usize,
        /// The configured part size.
        part_size: usize,
        /// How many parts it would take.
        parts: usize,
    },

    /// Compressing the object failed.
    #[error("compressing s3://{bucket}/{key} failed: {source}")]
    Compress {
        /// The bucket.
        bucket: String,
        /// The object being written.
        key: String,
        /// The compressor's error.
        #[source]
        source: std::io::Error,
    },

    /// The object was uploaded but its manifest record could not be put on
    /// the manifest stream. Retrying the batch uploads the same object again
    /// (same key, same content) and retries the record.
    #[error(
        "object {url} was uploaded but its manifest record was not written to stream {stream}{}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    Manifest {
        /// The manifest stream.
        stream: String,
        /// The object's `s3://bucket/key` URL.
        url: String,
        /// The Kinesis error code, when Kinesis answered with one.
        code: Option<String>,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// The SDK's description of the failure.
        message: String,
    },
}

impl Error {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Request { retryable, .. } | Self::Manifest { retryable, .. } => *retryable,
            Self::Config(_)
            | Self::NoSuchBucket { .. }
            | Self::AccessDenied { .. }
            | Self::TooLarge { .. }
            | Self::Compress { .. } => false,
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

/// Classifies an S3 SDK error of `operation` on `bucket`/`key` with the
/// workspace's shared classification ([`kinesis_connectors_aws::classify`]).
pub(crate) fn classify_s3<E>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let Classification { class, code, .. } = classify(Service::S3, &error);
    let message = DisplayErrorContext(&error).to_string();
    let no_such_bucket = code.as_deref() == Some("NoSuchBucket")
        || (code.is_none() && class == ErrorClass::NotFound && operation == "PutObject");
    if no_such_bucket {
        return Error::NoSuchBucket {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
    }
    if class == ErrorClass::AccessDenied {
        return Error::AccessDenied {
            operation,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message,
        };
    }
    Error::Request {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        retryable: class.is_retryable(),
        code,
        message,
    }
}

/// Classifies a Kinesis `PutRecord` error for the manifest record of `url`.
pub(crate) fn classify_manifest<E>(
    stream: &str,
    url: &str,
    error: SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let Classification { class, code, .. } = classify(Service::Kinesis, &error);
    Error::Manifest {
        stream: stream.to_owned(),
        url: url.to_owned(),
        code,
        retryable: class.is_retryable(),
        message: aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_conversion() {
        let config = Error::Config("bucket is empty".into());
        assert!(!config.is_retryable());
        assert!(matches!(
            kinesis_connectors_core::Error::from(config),
            kinesis_connectors_core::Error::Config(_)
        ));
        let slow = Error::Request {
            operation: "PutObject",
            bucket: "b".into(),
            key: "k".into(),
            code: Some("SlowDown".into()),
            retryable: true,
            message: "slow down".into(),
        };
        assert!(slow.to_string().contains("s3://b/k"), "{slow}");
        assert!(slow.to_string().contains("SlowDown"), "{slow}");
        let core = kinesis_connectors_core::Error::from(slow);
        assert!(core.is_retryable());
        let missing = Error::NoSuchBucket {
            bucket: "nope".into(),
            key: "a/b".into(),
        };
        assert!(missing.to_string().contains("\"nope\""), "{missing}");
        assert!(!kinesis_connectors_core::Error::from(missing).is_retryable());
    }
}
