//! Every class, for Kinesis, S3 and DynamoDB, on real SDK errors: mocked
//! clients (`aws-smithy-mocks`) answer with the HTTP response a service or a
//! proxy sends, and the SDK's own deserializer turns it into the `SdkError`
//! the backends see; two HTTP clients stand for a refused connection and an
//! endpoint that never answers (timeout).

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use kinesis_connectors_aws::{Classification, ErrorClass, Service, classify};

/// What the mocked endpoint does with the request.
#[derive(Debug, Clone)]
enum Answer {
    /// Answers with this status and body.
    Http(u16, String),
    /// Refuses the connection (a dispatch failure).
    Refused,
    /// Never answers (the attempt times out).
    Silent,
    /// Nothing is sent: the request cannot be built or sent (a missing
    /// parameter, an endpoint that cannot be resolved).
    Unbuildable,
}

impl Answer {
    fn response(&self) -> HttpResponse {
        let (status, body) = match self {
            Self::Http(status, body) => (*status, body.clone()),
            _ => (200, String::new()),
        };
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
    }

    /// The HTTP client standing in for the network, if not the mock's.
    fn http_client(&self) -> Option<SharedHttpClient> {
        let broken = match self {
            Self::Refused => Broken::Refuses,
            Self::Silent => Broken::Hangs,
            _ => return None,
        };
        Some(http_client_fn(move |_, _| SharedHttpConnector::new(broken)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Broken {
    Refuses,
    Hangs,
}

impl HttpConnector for Broken {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        match self {
            Self::Refuses => HttpConnectorFuture::ready(Err(ConnectorError::io(
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            ))),
            Self::Hangs => HttpConnectorFuture::new(std::future::pending()),
        }
    }
}

/// Sends one request of `$operation` through a mocked `$sdk` client that
/// answers `$answer`, and classifies the error. `$call` / `$unbuildable`:
/// the request, and one that cannot be built or sent.
macro_rules! classified {
    ($sdk:ident, $operation:ident, $service:expr, $answer:expr,
     |$client:ident| $call:expr, $unbuildable:expr) => {{
        let answer: &Answer = $answer;
        let response = answer.clone();
        let rule = mock!($sdk::Client::$operation).then_http_response(move || response.response());
        let http = answer.http_client();
        let $client = mock_client!($sdk, RuleMode::MatchAny, [&rule], |config| {
            let config = config.retry_config(RetryConfig::disabled()).timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(100))
                    .build(),
            );
            match &http {
                Some(http) => config.http_client(http.clone()),
                None => config,
            }
        });
        let result = match answer {
            Answer::Unbuildable => $unbuildable.send().await,
            _ => $call.send().await,
        };
        match result {
            Ok(output) => panic!("{answer:?}: succeeded with {output:?}"),
            Err(error) => classify($service, &error),
        }
    }};
}

async fn kinesis(answer: &Answer) -> Classification {
    classified!(
        aws_sdk_kinesis,
        get_records,
        Service::Kinesis,
        answer,
        |client| client.get_records().shard_iterator("AAAA"),
        client
            .get_records()
            .shard_iterator("AAAA")
            .stream_arn("not an ARN")
    )
}

async fn s3(answer: &Answer) -> Classification {
    classified!(
        aws_sdk_s3,
        list_objects_v2,
        Service::S3,
        answer,
        |client| client.list_objects_v2().bucket("logs"),
        client.list_objects_v2()
    )
}

async fn dynamodb(answer: &Answer) -> Classification {
    classified!(
        aws_sdk_dynamodb,
        get_item,
        Service::DynamoDb,
        answer,
        |client| client.get_item().table_name("leases").key(
            "leaseKey",
            aws_sdk_dynamodb::types::AttributeValue::S("shardId-0".into())
        ),
        client.get_item()
    )
}

/// Kinesis' awsJson error body.
fn json(code: &str) -> String {
    format!(r#"{{"__type":"{code}","message":"scripted"}}"#)
}

/// DynamoDB's: the code is prefixed with its namespace, which the SDK strips.
fn ddb(code: &str) -> String {
    json(&format!("com.amazonaws.dynamodb.v20120810#{code}"))
}

/// S3's REST-XML error body.
fn xml(code: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>scripted</Message><RequestId>1</RequestId></Error>"#
    )
}

fn http(status: u16, body: impl Into<String>) -> Answer {
    Answer::Http(status, body.into())
}

#[tokio::test]
async fn every_class_for_every_service() {
    use ErrorClass::*;
    use Service::{DynamoDb, Kinesis, S3};
    #[rustfmt::skip]
    let cases: Vec<(Service, &str, Answer, ErrorClass)> = vec![
        // ---- Kinesis ---------------------------------------------------------------------------
        (Kinesis, "PTE",                    http(400, json("ProvisionedThroughputExceededException")), Throttling),
        (Kinesis, "KMS throttling",         http(400, json("KMSThrottlingException")), Throttling),
        (Kinesis, "limit exceeded",         http(400, json("LimitExceededException")), Throttling),
        (Kinesis, "429, unlisted code",     http(429, json("BrandNewThrottleException")), Throttling),
        (Kinesis, "internal failure",       http(500, json("InternalFailure")), Transient),
        (Kinesis, "503, unlisted code",     http(503, json("BrandNewException")), Transient),
        (Kinesis, "502 from a proxy",       http(502, "<html>Bad Gateway</html>"), Transient),
        (Kinesis, "stream in use",          http(400, json("ResourceInUseException")), Transient),
        (Kinesis, "unreadable answer",      http(200, "{not json"), Transient),
        (Kinesis, "connection refused",     Answer::Refused, Transient),
        (Kinesis, "no answer",              Answer::Silent, Transient),
        (Kinesis, "expired iterator",       http(400, json("ExpiredIteratorException")), ExpiredIterator),
        (Kinesis, "no such stream",         http(400, json("ResourceNotFoundException")), NotFound),
        (Kinesis, "access denied",          http(400, json("AccessDeniedException")), AccessDenied),
        (Kinesis, "KMS access denied",      http(400, json("KMSAccessDeniedException")), AccessDenied),
        // A listed code wins over the status.
        (Kinesis, "KMS access denied, 500", http(500, json("KMSAccessDeniedException")), AccessDenied),
        (Kinesis, "KMS key disabled",       http(400, json("KMSDisabledException")), InvalidRequest),
        (Kinesis, "invalid argument",       http(400, json("InvalidArgumentException")), InvalidRequest),
        (Kinesis, "400, unlisted code",     http(400, json("SomethingElseException")), Other),
        // The SDK reports an endpoint it cannot resolve as a dispatch failure.
        (Kinesis, "malformed stream ARN",   Answer::Unbuildable, Other),
        // ---- S3 --------------------------------------------------------------------------------
        (S3, "slow down",                   http(503, xml("SlowDown")), Throttling),
        (S3, "429 without a body",          http(429, ""), Throttling),
        (S3, "internal error",              http(500, xml("InternalError")), Transient),
        (S3, "503, unlisted code",          http(503, xml("BrandNewError")), Transient),
        (S3, "504 without a body",          http(504, ""), Transient),
        (S3, "upload gone",                 http(404, xml("NoSuchUpload")), Transient),
        (S3, "unreadable answer",           http(200, "<ListBucketResult><KeyCount>x"), Transient),
        (S3, "connection refused",          Answer::Refused, Transient),
        (S3, "no answer",                   Answer::Silent, Transient),
        (S3, "no such bucket",              http(404, xml("NoSuchBucket")), NotFound),
        (S3, "404 without a body",          http(404, ""), NotFound),
        (S3, "access denied",               http(403, xml("AccessDenied")), AccessDenied),
        (S3, "403 without a body",          http(403, ""), AccessDenied),
        (S3, "KMS key disabled",            http(400, xml("KMS.DisabledException")), AccessDenied),
        (S3, "invalid argument",            http(400, xml("InvalidArgument")), InvalidRequest),
        (S3, "400, unlisted code",          http(400, xml("SomethingElse")), Other),
        (S3, "409 without a body",          http(409, ""), Other),
        (S3, "no bucket given",             Answer::Unbuildable, Other),
        // ---- DynamoDB --------------------------------------------------------------------------
        (DynamoDb, "PTE",                   http(400, ddb("ProvisionedThroughputExceededException")), Throttling),
        (DynamoDb, "request limit",         http(400, ddb("RequestLimitExceeded")), Throttling),
        (DynamoDb, "throttling",            http(400, ddb("ThrottlingException")), Throttling),
        (DynamoDb, "429, unlisted code",    http(429, ddb("BrandNewThrottle")), Throttling),
        (DynamoDb, "429 without a body",    http(429, ""), Throttling),
        (DynamoDb, "internal server error", http(500, ddb("InternalServerError")), Transient),
        (DynamoDb, "503, unlisted code",    http(503, ddb("BrandNewException")), Transient),
        (DynamoDb, "502 from a proxy",      http(502, "<html>Bad Gateway</html>"), Transient),
        (DynamoDb, "transaction conflict",  http(400, ddb("TransactionConflictException")), Transient),
        (DynamoDb, "unreadable answer",     http(200, "{not json"), Transient),
        (DynamoDb, "connection refused",    Answer::Refused, Transient),
        (DynamoDb, "no answer",             Answer::Silent, Transient),
        (DynamoDb, "no such table",         http(400, ddb("ResourceNotFoundException")), NotFound),
        (DynamoDb, "access denied",         http(400, ddb("AccessDeniedException")), AccessDenied),
        (DynamoDb, "unknown credentials",   http(400, ddb("UnrecognizedClientException")), AccessDenied),
        (DynamoDb, "validation",            http(400, ddb("ValidationException")), InvalidRequest),
        (DynamoDb, "condition failed",      http(400, ddb("ConditionalCheckFailedException")), InvalidRequest),
        (DynamoDb, "400, unlisted code",    http(400, ddb("SomethingElseException")), Other),
        (DynamoDb, "no table given",        Answer::Unbuildable, Other),
    ];
    let mut wrong = Vec::new();
    for (service, name, answer, expected) in &cases {
        let classified = match service {
            Kinesis => kinesis(answer).await,
            S3 => s3(answer).await,
            DynamoDb => dynamodb(answer).await,
            other => panic!("no client for {other:?}"),
        };
        let status = match answer {
            Answer::Http(status, _) => Some(*status),
            _ => None,
        };
        if classified.class != *expected || classified.status != status {
            wrong.push(format!(
                "{service:?} {name}: expected {expected:?} (status {status:?}), got {classified:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    // Every class is covered for every service (the Kinesis-only expired
    // iterator aside).
    for service in [Kinesis, S3, DynamoDb] {
        for class in [
            Throttling,
            Transient,
            NotFound,
            AccessDenied,
            InvalidRequest,
            Other,
        ] {
            assert!(
                cases
                    .iter()
                    .any(|(s, _, _, c)| *s == service && *c == class),
                "{service:?}: no case for {class:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_code_and_the_status_come_along() {
    let classified = s3(&http(503, xml("SlowDown"))).await;
    assert_eq!(classified.code.as_deref(), Some("SlowDown"));
    let classified = dynamodb(&http(400, ddb("ValidationException"))).await;
    assert_eq!(classified.code.as_deref(), Some("ValidationException"));
    let classified = kinesis(&http(503, "")).await;
    assert_eq!((classified.code, classified.status), (None, Some(503)));
    let classified = kinesis(&Answer::Refused).await;
    assert_eq!((classified.code, classified.status), (None, None));
}
