//! `KinesisEmitter` against a real SDK client whose endpoint is a closed
//! local port: a connection that cannot be made is a network error, retried
//! by the emitter and reported as retryable once its attempts are spent.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kinesis_connectors_core::{Emitter, RetryPolicy, Utf8Transformer};
use kinesis_connectors_kinesis::{Error, KinesisEmitter};
use kinesis_connectors_testkit::{batch, shard_context, unreachable_sdk_config};

/// A client for a local port where nothing listens (see
/// [`unreachable_sdk_config`]).
fn unreachable_kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&unreachable_sdk_config().unwrap())
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_fails_retryably() {
    let emitter = KinesisEmitter::builder(unreachable_kinesis(), "target", Utf8Transformer)
        .retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(10))
                .with_max_attempts(2),
        )
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
