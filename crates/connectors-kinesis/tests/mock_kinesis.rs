//! `KinesisEmitter` against a mocked Kinesis client (`aws-smithy-mocks`, no
//! network): routing, request chunking at 500 records / 5 MiB, per-record
//! rejections, retries of only the refused entries and their backoff delays,
//! error classification, and the testkit's emitter conformance suite on an
//! in-memory "stream". Network errors: `network_errors.rs`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::ErrorMetadata;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_sdk_kinesis::types::error::ProvisionedThroughputExceededException;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use kinesis_connectors_core::{
    Batch, Emitter, Encoder, ItemSource, Record, RetryPolicy, Transformer, Utf8Transformer,
};
use kinesis_connectors_kinesis::{Error, KinesisEmitter};
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, batch, emitter_conformance, shard_context,
};

const STREAM: &str = "target";

/// A record the fake stream accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    data: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

/// An in-memory stream behind the mocked client.
#[derive(Debug, Default)]
struct Stream {
    stored: Vec<Stored>,
    /// The data of every record of every request, request by request.
    requests: Vec<Vec<String>>,
    /// Request sizes in bytes (data + partition keys).
    request_bytes: Vec<usize>,
    /// Data refused (with PTE) this many more times.
    refuse: HashMap<String, usize>,
    /// The stream name or ARN each request named.
    targets: Vec<String>,
    /// When each request was made (tokio's clock, so paused time counts).
    times: Vec<tokio::time::Instant>,
}

type Shared = Arc<Mutex<Stream>>;

fn stream_rule(stream: &Shared) -> Rule {
    let s = stream.clone();
    mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(move |input| {
        let mut stream = s.lock().unwrap();
        let target = input
            .stream_name()
            .or(input.stream_arn())
            .unwrap()
            .to_owned();
        stream.targets.push(target);
        stream.times.push(tokio::time::Instant::now());
        let mut results = Vec::new();
        let mut failed = 0;
        let mut datas = Vec::new();
        let mut bytes = 0;
        for entry in input.records() {
            let data = String::from_utf8(entry.data().as_ref().to_vec()).unwrap();
            bytes += entry.data().as_ref().len() + entry.partition_key().unwrap().len();
            datas.push(data.clone());
            let refuse = stream.refuse.get_mut(&data).filter(|n| **n > 0);
            if let Some(left) = refuse {
                *left -= 1;
                failed += 1;
                results.push(
                    PutRecordsResultEntry::builder()
                        .error_code("ProvisionedThroughputExceededException")
                        .error_message("Rate exceeded for shard shardId-000000000000")
                        .build(),
                );
                continue;
            }
            stream.stored.push(Stored {
                data,
                partition_key: entry.partition_key().unwrap().to_owned(),
                explicit_hash_key: entry.explicit_hash_key().map(str::to_owned),
            });
            results.push(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-000000000000")
                    .sequence_number(stream.stored.len().to_string())
                    .build(),
            );
        }
        stream.requests.push(datas);
        stream.request_bytes.push(bytes);
        PutRecordsOutput::builder()
            .failed_record_count(failed)
            .set_records(Some(results))
            .build()
            .unwrap()
    })
}

fn client(rules: &[Rule]) -> aws_sdk_kinesis::Client {
    // The SDK's own retries are off: each test sees exactly the mocked answer.
    mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::disabled()))
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::new()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100))
        .with_max_attempts(max_attempts)
}

fn strings(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn emitter(stream: &Shared) -> KinesisEmitter<Utf8Transformer> {
    KinesisEmitter::builder(client(&[stream_rule(stream)]), STREAM, Utf8Transformer)
        .retry(fast_retry(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn items_are_forwarded_with_the_source_routing() {
    let stream = Shared::default();
    let mut b = batch(shard_context("s"), strings(10, "r"), 1);
    b.sources[3].explicit_hash_key = Some("12345".to_owned());
    let outcome = emitter(&stream).emit(&b).await.unwrap();
    assert!(outcome.rejected.is_empty());
    let stream = stream.lock().unwrap();
    assert_eq!(stream.requests.len(), 1);
    assert_eq!(stream.targets, vec![STREAM]);
    let expected: Vec<Stored> = (0..10)
        .map(|i| Stored {
            data: format!("r-{i}"),
            partition_key: format!("pk-{}", i % 8),
            explicit_hash_key: (i == 3).then(|| "12345".to_owned()),
        })
        .collect();
    assert_eq!(stream.stored, expected);
}

#[tokio::test]
async fn routing_functions_and_stream_arns() {
    let stream = Shared::default();
    let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/target";
    let emitter = KinesisEmitter::builder(client(&[stream_rule(&stream)]), arn, Utf8Transformer)
        .partition_key(|item: &String, source: &ItemSource| format!("{item}@{}", source.position))
        .explicit_hash_key(|_, _| Some("0".to_owned()))
        .build()
        .unwrap();
    let b = batch(shard_context("s"), strings(2, "x"), 7);
    let _ = emitter.emit(&b).await.unwrap();
    let stream = stream.lock().unwrap();
    assert_eq!(stream.targets, vec![arn]);
    assert_eq!(stream.stored[1].partition_key, "x-1@8");
    assert_eq!(stream.stored[1].explicit_hash_key.as_deref(), Some("0"));
}

#[tokio::test]
async fn requests_are_chunked_at_500_records() {
    let stream = Shared::default();
    let b = batch(shard_context("s"), strings(1_201, "r"), 1);
    let _ = emitter(&stream).emit(&b).await.unwrap();
    let stream = stream.lock().unwrap();
    let sizes: Vec<usize> = stream.requests.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![500, 500, 201]);
    let data: Vec<&str> = stream.stored.iter().map(|s| s.data.as_str()).collect();
    assert_eq!(data, strings(1_201, "r"), "order is kept");
}

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn requests_are_chunked_at_5_mib() {
    let stream = Shared::default();
    // 700 KiB each: 7 fit in 5 MiB (4.8 MiB), 8 do not.
    let items: Vec<String> = (0..10)
        .map(|i| format!("{i}{}", "x".repeat(700 * 1024 - 1)))
        .collect();
    let _ = emitter(&stream)
        .emit(&batch(shard_context("s"), items, 1))
        .await
        .unwrap();
    let stream = stream.lock().unwrap();
    let sizes: Vec<usize> = stream.requests.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![7, 3]);
    assert!(
        stream.request_bytes.iter().all(|b| *b <= 5 * MIB),
        "{:?}",
        stream.request_bytes
    );
    assert_eq!(stream.stored.len(), 10);
}

/// Encodes items verbatim, but refuses items saying "unencodable".
struct Picky;

impl Transformer for Picky {
    type Item = String;
    fn to_item(&self, record: &Record) -> kinesis_connectors_core::Result<String> {
        Utf8Transformer.to_item(record)
    }
}

impl Encoder for Picky {
    fn from_item(&self, item: &String, out: &mut Vec<u8>) -> kinesis_connectors_core::Result<()> {
        if item == "unencodable" {
            return Err(kinesis_connectors_core::Error::transform("cannot encode"));
        }
        out.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

#[tokio::test]
async fn records_kinesis_cannot_take_are_rejected_one_by_one() {
    let stream = Shared::default();
    let emitter = KinesisEmitter::builder(client(&[stream_rule(&stream)]), STREAM, Picky)
        .build()
        .unwrap();
    // pk-1 (4 bytes) + 1 MiB - 4 bytes of data: exactly 1 MiB, accepted.
    let exactly = "e".repeat(MIB - 4);
    let items = vec![
        "fine-0".to_owned(),
        "t".repeat(MIB),
        "unencodable".to_owned(),
        "fine-3".to_owned(),
        "fine-4".to_owned(),
        "fine-5".to_owned(),
        exactly.clone(),
    ];
    let mut b = batch(shard_context("s"), items, 1);
    b.sources[3].partition_key = String::new();
    b.sources[4].partition_key = "k".repeat(257);
    b.sources[5].explicit_hash_key = Some("not-a-number".to_owned());
    b.sources[6].partition_key = "pk-1".to_owned();
    let outcome = emitter.emit(&b).await.unwrap();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![1, 2, 3, 4, 5]);
    let reason = &outcome.rejected[0].reason;
    assert!(
        reason.contains("1048580 bytes") && reason.contains("1 MiB"),
        "{reason}"
    );
    assert!(outcome.rejected[1].reason.contains("cannot encode"));
    assert!(
        outcome.rejected[2]
            .reason
            .contains("partition key of 0 characters")
    );
    assert!(outcome.rejected[3].reason.contains("257 characters"));
    assert!(outcome.rejected[4].reason.contains("explicit hash key"));
    let stream = stream.lock().unwrap();
    let data: Vec<&str> = stream.stored.iter().map(|s| s.data.as_str()).collect();
    assert_eq!(data, vec!["fine-0", exactly.as_str()]);
}

#[tokio::test(start_paused = true)]
async fn only_the_refused_entries_are_sent_again() {
    let stream = Shared::default();
    stream.lock().unwrap().refuse = HashMap::from([
        ("r-3".to_owned(), 1),
        ("r-7".to_owned(), 2),
        ("r-505".to_owned(), 1),
    ]);
    let b = batch(shard_context("s"), strings(600, "r"), 1);
    let outcome = emitter(&stream).emit(&b).await.unwrap();
    assert!(outcome.rejected.is_empty());
    let stream = stream.lock().unwrap();
    let requests: Vec<Vec<String>> = stream.requests.clone();
    assert_eq!(
        requests.len(),
        4,
        "{:?}",
        requests.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(requests[0].len(), 500);
    assert_eq!(requests[1].len(), 100);
    assert_eq!(requests[2], vec!["r-3", "r-7", "r-505"]);
    assert_eq!(requests[3], vec!["r-7"]);
    let mut data: Vec<String> = stream.stored.iter().map(|s| s.data.clone()).collect();
    assert_eq!(data.len(), 600, "each record exactly once");
    data.sort();
    let mut expected = strings(600, "r");
    expected.sort();
    assert_eq!(data, expected);
}

#[tokio::test(start_paused = true)]
async fn refused_records_wait_a_growing_capped_delay() {
    let stream = Shared::default();
    // r-2 is refused 5 times, then accepted at the 6th and last attempt.
    stream.lock().unwrap().refuse = HashMap::from([("r-2".to_owned(), 5)]);
    let emitter = KinesisEmitter::builder(client(&[stream_rule(&stream)]), STREAM, Utf8Transformer)
        .retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_millis(400))
                .with_max_attempts(6),
        )
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let outcome = emitter
        .emit(&batch(shard_context("s"), strings(5, "r"), 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());

    let stream = stream.lock().unwrap();
    assert_eq!(stream.requests.len(), 6, "{:?}", stream.requests);
    assert_eq!(stream.requests[0], strings(5, "r"));
    assert!(
        stream.requests[1..]
            .iter()
            .all(|r| r == &vec!["r-2".to_owned()]),
        "only the refused record is sent again: {:?}",
        stream.requests
    );
    assert_eq!(stream.stored.len(), 5);
    // The first request goes out at once.
    assert_eq!(stream.times[0], started);

    // Before jitter the delays double from the initial delay and stop at the
    // maximum: 100, 200, 400, 400, 400 ms. Jitter adds less than as much
    // again; tokio's timer rounds up to the next millisecond.
    let gaps: Vec<Duration> = stream.times.windows(2).map(|w| w[1] - w[0]).collect();
    let bases = [100, 200, 400, 400, 400].map(Duration::from_millis);
    for (retry, (gap, base)) in gaps.iter().zip(bases).enumerate() {
        assert!(
            *gap >= base,
            "retry {}: waited {gap:?}, less than {base:?} ({gaps:?})",
            retry + 1
        );
        assert!(
            *gap <= 2 * base + Duration::from_millis(1),
            "retry {}: waited {gap:?}, more than twice {base:?} ({gaps:?})",
            retry + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn records_refused_past_the_limit_fail_the_batch_naming_the_count() {
    let stream = Shared::default();
    stream.lock().unwrap().refuse = HashMap::from([("r-4".to_owned(), usize::MAX)]);
    let b = batch(shard_context("s"), strings(10, "r"), 1);
    let err = emitter(&stream).emit(&b).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("1 of 10 record(s)"), "{text}");
    assert!(text.contains("after 5 attempt(s)"), "{text}");
    assert!(
        text.contains("ProvisionedThroughputExceededException"),
        "{text}"
    );
    assert!(text.contains(STREAM), "{text}");
    let stream = stream.lock().unwrap();
    assert_eq!(stream.requests.len(), 5);
    assert!(
        stream.requests[1..]
            .iter()
            .all(|r| r == &vec!["r-4".to_owned()])
    );
    assert_eq!(stream.stored.len(), 9);
}

fn coded(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(code).build()
}

#[tokio::test(start_paused = true)]
async fn whole_request_throttling_is_retried_and_refusals_are_not() {
    // Throttled twice as a whole, then accepted.
    let stream = Shared::default();
    let throttled = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .error(|| {
            PutRecordsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(coded("ProvisionedThroughputExceededException"))
                    .build(),
            )
        })
        .times(2)
        .build();
    let emitter = KinesisEmitter::builder(
        client(&[throttled, stream_rule(&stream)]),
        STREAM,
        Utf8Transformer,
    )
    .retry(fast_retry(5))
    .build()
    .unwrap();
    let _ = emitter
        .emit(&batch(shard_context("s"), strings(3, "r"), 1))
        .await
        .unwrap();
    assert_eq!(stream.lock().unwrap().stored.len(), 3);

    // Stream not found: one call, a permanent error naming the stream.
    let missing = mock!(aws_sdk_kinesis::Client::put_records)
        .then_error(|| PutRecordsError::generic(coded("ResourceNotFoundException")));
    let emitter = KinesisEmitter::builder(
        client(std::slice::from_ref(&missing)),
        STREAM,
        Utf8Transformer,
    )
    .retry(fast_retry(5))
    .build()
    .unwrap();
    let err = emitter
        .emit(&batch(shard_context("s"), strings(3, "r"), 1))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("stream target"), "{err}");
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );
    assert_eq!(missing.num_calls(), 1);

    // Throttled every time: the retryable error names every record.
    let always = mock!(aws_sdk_kinesis::Client::put_records)
        .then_error(|| PutRecordsError::generic(coded("LimitExceededException")));
    let emitter = KinesisEmitter::builder(
        client(std::slice::from_ref(&always)),
        STREAM,
        Utf8Transformer,
    )
    .retry(fast_retry(3))
    .build()
    .unwrap();
    let err = emitter
        .emit(&batch(shard_context("s"), strings(3, "r"), 1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("3 of 3"), "{err}");
    assert_eq!(always.num_calls(), 3);
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let stream = Shared::default();
    let empty: Batch<String> = batch(shard_context("s"), Vec::new(), 3);
    let outcome = emitter(&stream).emit(&empty).await.unwrap();
    assert!(outcome.rejected.is_empty());
    assert!(stream.lock().unwrap().requests.is_empty());
}

#[test]
fn bad_configurations_are_refused_clearly() {
    let c = client(&[]);
    let err = KinesisEmitter::builder(c.clone(), "", Utf8Transformer)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert!(err.to_string().contains("stream name is empty"), "{err}");
    let err = KinesisEmitter::builder(c, STREAM, Utf8Transformer)
        .retry(RetryPolicy::default().with_max_attempts(0))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn kinesis_emitter_passes_the_conformance_suite() {
    let stream = Shared::default();
    // Some throttling on the way, as a real stream does.
    stream.lock().unwrap().refuse = (0..2_100)
        .step_by(7)
        .map(|i| (format!("item-{i}"), 1))
        .collect();
    let emitter = emitter(&stream);
    let counted = stream.clone();
    // At-least-once: a replay writes records again, consumers deduplicate by
    // content, so delivered = distinct payloads in the stream.
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item-{i}")).delivered_count(move || {
            let stream = counted.clone();
            Box::pin(async move {
                let stream = stream.lock().unwrap();
                stream
                    .stored
                    .iter()
                    .map(|s| s.data.as_str())
                    .collect::<HashSet<_>>()
                    .len()
            })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
}
