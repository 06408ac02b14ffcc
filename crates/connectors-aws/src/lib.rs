#![doc = include_str!("../README.md")]

mod codes;

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{DispatchFailure, SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::ErrorKind;

pub use codes::Service;

/// What a failed AWS call means for the caller: whether sending it again may
/// succeed, and if not, what to tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The service asks the caller to slow down (`ThrottlingException`,
    /// `ProvisionedThroughputExceededException`, S3 `SlowDown`, HTTP 429):
    /// back off and retry.
    Throttling,
    /// The call may succeed when sent again: timeouts, connection failures,
    /// unreadable responses, HTTP 5xx, internal errors, conflicts between
    /// concurrent writers.
    Transient,
    /// The Kinesis shard iterator the call carried expired: the same call
    /// fails again, one with a new iterator may succeed.
    ExpiredIterator,
    /// The stream, bucket, table, key… does not exist.
    NotFound,
    /// The credentials may not do this (or may not use the KMS key).
    AccessDenied,
    /// The service refused the request as it is: invalid parameters, a
    /// value it does not accept, a condition that did not hold.
    InvalidRequest,
    /// Anything else: a request that could not be built, or a client error
    /// with a code no table lists. Not retryable.
    Other,
}

impl ErrorClass {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttling | Self::Transient)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttling => "throttled",
            Self::Transient => "transient error",
            Self::ExpiredIterator => "expired iterator",
            Self::NotFound => "not found",
            Self::AccessDenied => "access denied",
            Self::InvalidRequest => "invalid request",
            Self::Other => "error",
        })
    }
}

/// What [`classify`] found out about an SDK error: its class, and the code
/// and HTTP status it was judged by, for the caller's own error message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classification {
    /// The class of the error.
    pub class: ErrorClass,
    /// The service's error code, when it answered with a non-empty one.
    pub code: Option<String>,
    /// The HTTP status of the answer, when one arrived.
    pub status: Option<u16>,
}

/// Classifies an SDK error of `service` so that every backend retries the
/// same failures.
///
/// In this order:
///
/// 1. Timeouts, network failures (connection refused or reset, DNS, I/O,
///    or what the HTTP client marks retryable) and responses that could not
///    be read are [`Transient`](ErrorClass::Transient); a request that could
///    not be built or sent (a missing parameter, an endpoint that cannot be
///    resolved) is [`Other`](ErrorClass::Other), as the SDK's own retry
///    classifier judges them.
/// 2. A service error whose code the service's table lists gets that class,
///    whatever the HTTP status.
/// 3. Otherwise the HTTP status decides: 429 is
///    [`Throttling`](ErrorClass::Throttling), 5xx is
///    [`Transient`](ErrorClass::Transient) (a proxy or load balancer answering
///    502/503/504 sends no code, or a service sends a code newer than the
///    table); without a code, 2xx is [`Transient`](ErrorClass::Transient)
///    (a success the SDK could not read), 403 is
///    [`AccessDenied`](ErrorClass::AccessDenied) and 404
///    [`NotFound`](ErrorClass::NotFound); anything else is
///    [`Other`](ErrorClass::Other).
pub fn classify<E>(service: Service, error: &SdkError<E, HttpResponse>) -> Classification
where
    E: ProvideErrorMetadata,
{
    let status = error.raw_response().map(|raw| raw.status().as_u16());
    let code = match error {
        SdkError::ServiceError(service_error) => service_error
            .err()
            .code()
            .filter(|code| !code.is_empty())
            .map(str::to_owned),
        _ => None,
    };
    let class = match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
        SdkError::DispatchFailure(failure) => dispatch_class(failure),
        SdkError::ServiceError(_) => code
            .as_deref()
            .and_then(|code| service.class_of(code))
            .unwrap_or_else(|| by_status(status, code.is_some())),
        // ConstructionFailure and variants added later.
        _ => ErrorClass::Other,
    };
    Classification {
        class,
        code,
        status,
    }
}

/// The class of a request that was not answered, as the SDK's own retry
/// classifier judges it: the network failed (I/O, timeout) or the HTTP
/// client said it may be retried; not, for example, an endpoint that cannot
/// be resolved from a malformed ARN, which fails the same way every time.
fn dispatch_class(failure: &DispatchFailure) -> ErrorClass {
    if failure.is_io() || failure.is_timeout() {
        return ErrorClass::Transient;
    }
    match failure.as_other() {
        Some(ErrorKind::ThrottlingError) => ErrorClass::Throttling,
        Some(ErrorKind::TransientError | ErrorKind::ServerError) => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

/// The class of a service error no table lists, from its HTTP status.
fn by_status(status: Option<u16>, has_code: bool) -> ErrorClass {
    match status {
        // A success status the SDK could not read: a truncated answer.
        Some(200..=299) if !has_code => ErrorClass::Transient,
        Some(429) => ErrorClass::Throttling,
        Some(500..=599) => ErrorClass::Transient,
        Some(403) if !has_code => ErrorClass::AccessDenied,
        Some(404) if !has_code => ErrorClass::NotFound,
        _ => ErrorClass::Other,
    }
}
