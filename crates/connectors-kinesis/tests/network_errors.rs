//! `KinesisEmitter` against a real SDK client whose endpoint is a closed
//! local port: a connection that cannot be made is a network error, retried
//! by the emitter and reported as retryable once its attempts are spent.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use kinesis_connectors_core::{Emitter, RetryPolicy, Utf8Transformer};
use kinesis_connectors_kinesis::{Error, KinesisEmitter};
use kinesis_connectors_testkit::{batch, shard_context};

/// A client for `http://127.0.0.1:<port>` where nothing listens (the port
/// was bound by the OS, then released), with the SDK's own retries off and
/// short timeouts should the port not refuse at once.
fn unreachable_kinesis() -> aws_sdk_kinesis::Client {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_fails_retryably() {
    let emitter = KinesisEmitter::builder(unreachable_kinesis(), "target", Utf8Transformer)
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            max_attempts: 2,
        })
        .build()
        .unwrap();
    let items: Vec<String> = (0..3).map(|i| format!("r-{i}")).collect();
    let b = batch(shard_context("s"), items, 1);

    let core = emitter.emit(&b).await.unwrap_err();
    assert!(core.is_retryable(), "{core}");
    let text = core.to_string();
    // Every attempt failed as a whole, so every record is still pending.
    assert!(text.contains("3 of 3 record(s)"), "{text}");
    assert!(text.contains("stream target"), "{text}");
    assert!(text.contains("after 2 attempt(s)"), "{text}");
    // The SDK's words for "the request never reached a server".
    assert!(text.contains("dispatch failure"), "{text}");

    // The crate's own error for the same failure.
    let source = std::error::Error::source(&core)
        .and_then(|e| e.downcast_ref::<Error>())
        .expect("the core error wraps the crate's error");
    assert!(source.is_retryable(), "{source}");
    assert!(
        matches!(
            source,
            Error::PartialFailure {
                failed: 3,
                total: 3,
                attempts: 2,
                ..
            }
        ),
        "{source:?}"
    );
}
