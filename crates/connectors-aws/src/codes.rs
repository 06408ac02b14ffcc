//! The error codes of each service, by class: the one place they are listed.

use crate::ErrorClass::{
    self, AccessDenied, ExpiredIterator, InvalidRequest, NotFound, Throttling, Transient,
};

/// The AWS service an error came from: each names some error codes its own
/// way (`SlowDown` is S3's throttling, `ExpiredIteratorException` exists
/// only in Kinesis), so the classification needs to know whose code it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// Amazon Kinesis Data Streams.
    Kinesis,
    /// Amazon S3.
    S3,
    /// Amazon DynamoDB.
    DynamoDb,
}

impl Service {
    /// The class of `code`, when this service's table or the codes every
    /// service uses list it: for errors that arrive without an HTTP answer
    /// of their own, such as those inside a `SubscribeToShard` event stream.
    ///
    /// ```
    /// use kinesis_connectors_aws::{ErrorClass, Service};
    /// assert_eq!(Service::Kinesis.class_of("InternalFailureException"), Some(ErrorClass::Transient));
    /// assert_eq!(Service::Kinesis.class_of("NoSuchCode"), None);
    /// ```
    pub fn class_of(self, code: &str) -> Option<ErrorClass> {
        let table = match self {
            Self::Kinesis => KINESIS,
            Self::S3 => S3,
            Self::DynamoDb => DYNAMODB,
        };
        table
            .iter()
            .chain(COMMON)
            .find(|(listed, _)| *listed == code)
            .map(|(_, class)| *class)
    }
}

/// Codes that mean the same in every AWS service.
const COMMON: &[(&str, ErrorClass)] = &[
    ("Throttling", Throttling),
    ("ThrottlingException", Throttling),
    ("ThrottledException", Throttling),
    ("TooManyRequestsException", Throttling),
    ("RequestLimitExceeded", Throttling),
    ("InternalFailure", Transient),
    ("ServiceUnavailable", Transient),
    ("RequestTimeout", Transient),
    ("RequestTimeoutException", Transient),
    ("AccessDeniedException", AccessDenied),
    ("UnrecognizedClientException", AccessDenied),
];

/// Kinesis Data Streams.
const KINESIS: &[(&str, ErrorClass)] = &[
    ("ProvisionedThroughputExceededException", Throttling),
    ("KMSThrottlingException", Throttling),
    ("LimitExceededException", Throttling),
    ("InternalFailureException", Transient),
    ("ServiceUnavailableException", Transient),
    // The stream is being created, updated or resharded: try again later.
    ("ResourceInUseException", Transient),
    ("ExpiredIteratorException", ExpiredIterator),
    ("ResourceNotFoundException", NotFound),
    ("KMSAccessDeniedException", AccessDenied),
    ("KMSDisabledException", InvalidRequest),
    ("KMSInvalidStateException", InvalidRequest),
    ("KMSNotFoundException", InvalidRequest),
    ("KMSOptInRequired", InvalidRequest),
    ("InvalidArgumentException", InvalidRequest),
    ("ValidationException", InvalidRequest),
];

/// S3.
const S3: &[(&str, ErrorClass)] = &[
    ("SlowDown", Throttling),
    ("TooManyRequests", Throttling),
    ("InternalError", Transient),
    ("RequestTimeTooSkewed", Transient),
    ("OperationAborted", Transient),
    // The multipart upload was aborted or expired under us: emitting the
    // batch again starts a new one.
    ("NoSuchUpload", Transient),
    ("NoSuchBucket", NotFound),
    ("NoSuchKey", NotFound),
    // What the SDK names a 404 without a body.
    ("NotFound", NotFound),
    ("AccessDenied", AccessDenied),
    ("AllAccessDisabled", AccessDenied),
    ("InvalidAccessKeyId", AccessDenied),
    ("SignatureDoesNotMatch", AccessDenied),
    ("AccountProblem", AccessDenied),
    ("InvalidSecurity", AccessDenied),
    ("KMS.AccessDeniedException", AccessDenied),
    ("KMS.DisabledException", AccessDenied),
    ("KMS.NotFoundException", AccessDenied),
    ("InvalidArgument", InvalidRequest),
    ("InvalidRequest", InvalidRequest),
    ("InvalidBucketName", InvalidRequest),
    ("EntityTooLarge", InvalidRequest),
    ("EntityTooSmall", InvalidRequest),
    ("InvalidPart", InvalidRequest),
    ("InvalidPartOrder", InvalidRequest),
    ("KeyTooLongError", InvalidRequest),
    ("MalformedXML", InvalidRequest),
];

/// DynamoDB.
const DYNAMODB: &[(&str, ErrorClass)] = &[
    ("ProvisionedThroughputExceededException", Throttling),
    // Control plane (`CreateTable`): too many tables being created at once.
    ("LimitExceededException", Throttling),
    ("InternalServerError", Transient),
    ("ReplicatedWriteConflictException", Transient),
    ("TransactionConflictException", Transient),
    ("ResourceNotFoundException", NotFound),
    ("ValidationException", InvalidRequest),
    ("ConditionalCheckFailedException", InvalidRequest),
    ("ItemCollectionSizeLimitExceededException", InvalidRequest),
    ("SerializationException", InvalidRequest),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_code_is_listed_twice_for_a_service() {
        for table in [KINESIS, S3, DYNAMODB] {
            for (i, (code, _)) in table.iter().chain(COMMON).enumerate() {
                let again = table.iter().chain(COMMON).skip(i + 1);
                assert!(
                    again.clone().all(|(other, _)| other != code),
                    "{code} listed twice"
                );
            }
        }
    }
}
