//! `S3Emitter` and `S3ManifestEmitter` against real SDK clients whose
//! endpoint is a closed local port: a connection that cannot be made is a
//! network error, and network errors are retryable.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use kinesis_connectors_core::{Batch, Emitter, Utf8Transformer};
use kinesis_connectors_s3::{Error, S3Emitter, S3ManifestEmitter};
use kinesis_connectors_testkit::{batch, shard_context, unreachable_sdk_config};

const BUCKET: &str = "test-bucket";
const MIB: usize = 1024 * 1024;

fn unreachable_s3() -> aws_sdk_s3::Client {
    let config = unreachable_sdk_config().unwrap();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

fn unreachable_kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&unreachable_sdk_config().unwrap())
}

fn dated_batch(items: Vec<String>) -> Batch<String> {
    let mut b = batch(shard_context("shardId-000000000003"), items, 1);
    b.first_arrival = Some(UNIX_EPOCH + Duration::from_secs(1_709_211_909));
    b
}

fn strings(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("item-{i}")).collect()
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_put_object_retryably() {
    let emitter = S3Emitter::builder(unreachable_s3(), BUCKET, Utf8Transformer)
        .build()
        .unwrap();
    let b = dated_batch(strings(3));
    let key = emitter.object_key(&b);

    let err = emitter.upload(&b).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Request {
                operation: "PutObject",
                code: None,
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("s3://{BUCKET}/{key}")), "{text}");
    assert!(text.contains("retryable"), "{text}");
    // The SDK's words for "the request never reached a server".
    assert!(text.contains("dispatch failure"), "{text}");

    // Through the Emitter trait: a retryable core error.
    let core = emitter.emit(&b).await.unwrap_err();
    assert!(core.is_retryable(), "{core}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_a_multipart_upload_retryably() {
    let emitter = S3Emitter::builder(unreachable_s3(), BUCKET, Utf8Transformer)
        .part_size(5 * MIB)
        .build()
        .unwrap();
    // 6 MiB and a bit: above the part size, so a multipart upload.
    let items: Vec<String> = (0..6).map(|i| format!("{i}{}", "x".repeat(MIB))).collect();
    let err = emitter.upload(&dated_batch(items)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Request {
                operation: "CreateMultipartUpload",
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn an_unreachable_manifest_stream_fails_retryably_after_the_upload() {
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = written.clone();
    let put = mock!(aws_sdk_s3::Client::put_object).then_compute_output(move |input| {
        w.lock().unwrap().push(input.key().unwrap().to_owned());
        PutObjectOutput::builder().build()
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[put], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let s3 = S3Emitter::builder(s3, BUCKET, Utf8Transformer)
        .build()
        .unwrap();
    let emitter = S3ManifestEmitter::new(s3, unreachable_kinesis(), "manifest").unwrap();
    let b = dated_batch(strings(2));
    let key = emitter.s3().object_key(&b);

    let err = emitter.upload(&b).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Manifest {
                code: None,
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("s3://{BUCKET}/{key}")), "{text}");
    assert!(text.contains("stream manifest"), "{text}");
    // The object went up before the manifest record failed.
    assert_eq!(*written.lock().unwrap(), vec![key]);

    let core = emitter.emit(&b).await.unwrap_err();
    assert!(core.is_retryable(), "{core}");
}

#[tokio::test]
async fn an_unreachable_bucket_fails_the_manifest_emitter_before_the_record() {
    let emitter = S3ManifestEmitter::new(
        S3Emitter::builder(unreachable_s3(), BUCKET, Utf8Transformer)
            .build()
            .unwrap(),
        unreachable_kinesis(),
        "manifest",
    )
    .unwrap();
    let err = emitter.upload(&dated_batch(strings(2))).await.unwrap_err();
    // The upload failed, so no manifest record was attempted.
    assert!(
        matches!(
            err,
            Error::Request {
                operation: "PutObject",
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    let core = emitter.emit(&dated_batch(strings(2))).await.unwrap_err();
    assert!(core.is_retryable(), "{core}");
}
