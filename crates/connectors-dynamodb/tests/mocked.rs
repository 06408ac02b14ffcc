//! The emitter against scripted DynamoDB answers (`aws-smithy-mocks`), for
//! what an emulator cannot show: unprocessed items, throttling, chunking,
//! duplicate keys, oversized and unconvertible items, items DynamoDB refuses
//! (found by sending them alone), conditional puts, the bound on requests in
//! flight (through the testkit's `InFlightProbe`). Also
//! the testkit's emitter conformance suite on an in-memory mock table, and a
//! real client pointed at a closed local port for connection failures.
//!
//! SDK retries are disabled in every client, so each scripted answer is one
//! attempt of the emitter's own retry loop; tokio time is paused (except for
//! the closed-port test), so backoff sleeps take no wall-clock time.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::batch_write_item::{
    BatchWriteItemError, BatchWriteItemInput, BatchWriteItemOutput,
};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, ProvisionedThroughputExceededException, RequestLimitExceeded,
    ThrottlingException,
};
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use kinesis_connectors_core::{Batch, EmitOutcome, Emitter, RetryPolicy};
use kinesis_connectors_dynamodb::{
    ConditionalPut, DynamoDbEmitter, DynamoDbError, Item, MAX_REQUEST_BYTES, RequestErrorKind,
};
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, InFlightProbe, batch, emitter_conformance,
    shard_context, unreachable_sdk_config,
};
use serde::Serialize;

const TABLE: &str = "events";

#[derive(Debug, Clone, Serialize)]
struct Event {
    id: String,
    value: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
}

fn event(id: &str, value: u64) -> Event {
    Event {
        id: id.to_owned(),
        value,
        payload: None,
    }
}

fn with_payload(id: &str, payload: String) -> Event {
    Event {
        id: id.to_owned(),
        value: 0,
        payload: Some(payload),
    }
}

fn client(mode: RuleMode, rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, mode, rules, |conf| conf
        .retry_config(RetryConfig::disabled()))
}

/// Fast retries, so tests with paused time stay short even in logs.
const FAST_RETRY: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_millis(10))
    .with_max_delay(Duration::from_millis(100))
    .with_max_attempts(5);

fn emitter(client: Client) -> DynamoDbEmitter<Event> {
    DynamoDbEmitter::builder(client, TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .build()
        .unwrap()
}

fn events_batch(events: Vec<Event>) -> Batch<Event> {
    batch(shard_context("shardId-000000000000"), events, 100)
}

/// The write requests of a `BatchWriteItem` input for [`TABLE`].
fn requests(input: &BatchWriteItemInput) -> Vec<WriteRequest> {
    input
        .request_items()
        .and_then(|tables| tables.get(TABLE))
        .cloned()
        .unwrap_or_default()
}

fn items(requests: &[WriteRequest]) -> Vec<Item> {
    requests
        .iter()
        .map(|r| r.put_request().expect("a put request").item().clone())
        .collect()
}

fn id_of(item: &Item) -> String {
    match item.get("id") {
        Some(AttributeValue::S(id)) => id.clone(),
        other => panic!("item without a string id: {other:?}"),
    }
}

fn value_of(item: &Item) -> u64 {
    match item.get("value") {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("item without a numeric value: {other:?}"),
    }
}

fn ok_output() -> BatchWriteItemOutput {
    BatchWriteItemOutput::builder().build()
}

/// Records every `BatchWriteItem` input and answers with `answer(call, input)`.
#[allow(clippy::type_complexity)]
fn recording_rule(
    answer: impl Fn(usize, &BatchWriteItemInput) -> BatchWriteItemOutput + Send + Sync + 'static,
) -> (Rule, Arc<Mutex<Vec<Vec<WriteRequest>>>>) {
    let calls: Arc<Mutex<Vec<Vec<WriteRequest>>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let rule = mock!(Client::batch_write_item).then_compute_output(move |input| {
        let mut calls = seen.lock().unwrap();
        calls.push(requests(input));
        answer(calls.len() - 1, input)
    });
    (rule, calls)
}

fn throttling_error(code: &str) -> BatchWriteItemError {
    let meta = ErrorMetadata::builder()
        .code(code)
        .message("slow down")
        .build();
    match code {
        "ProvisionedThroughputExceededException" => {
            BatchWriteItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(meta)
                    .build(),
            )
        }
        "ThrottlingException" => BatchWriteItemError::ThrottlingException(
            ThrottlingException::builder()
                .message("slow down")
                .meta(meta)
                .build(),
        ),
        "RequestLimitExceeded" => BatchWriteItemError::RequestLimitExceeded(
            RequestLimitExceeded::builder()
                .message("slow down")
                .meta(meta)
                .build(),
        ),
        other => panic!("not a throttling code: {other}"),
    }
}

const THROTTLING_CODES: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

const INVALID: &str = "One or more parameter values were invalid";

fn validation_error() -> BatchWriteItemError {
    BatchWriteItemError::generic(
        ErrorMetadata::builder()
            .code("ValidationException")
            .message(INVALID)
            .build(),
    )
}

/// A permanent failure that is not about the items (no isolation).
fn access_denied() -> BatchWriteItemError {
    BatchWriteItemError::generic(
        ErrorMetadata::builder()
            .code("AccessDeniedException")
            .message("not authorized to perform dynamodb:BatchWriteItem")
            .build(),
    )
}

/// The emitter's own error inside the core's `Error::Emit`.
fn dynamodb_error(error: &kinesis_connectors_core::Error) -> &DynamoDbError {
    match error {
        kinesis_connectors_core::Error::Emit { source, .. } => source
            .downcast_ref::<DynamoDbError>()
            .unwrap_or_else(|| panic!("not a DynamoDbError: {source}")),
        other => panic!("not an emit error: {other}"),
    }
}

// ---------------------------------------------------------------------------
// UnprocessedItems
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn unprocessed_items_are_sent_again_until_written() {
    // The first two answers leave the last 3 items of the request unprocessed.
    let (rule, calls) = recording_rule(|call, input| {
        let sent = requests(input);
        if call < 2 {
            let left = sent[sent.len() - 3..].to_vec();
            BatchWriteItemOutput::builder()
                .unprocessed_items(TABLE, left)
                .build()
        } else {
            ok_output()
        }
    });
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events: Vec<Event> = (0..10).map(|i| event(&format!("e{i}"), i)).collect();
    let started = tokio::time::Instant::now();
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert_eq!(outcome, EmitOutcome::delivered());

    let calls = calls.lock().unwrap();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [10, 3, 3],
        "resends carry only the unprocessed items"
    );
    let resent: Vec<String> = items(&calls[2]).iter().map(id_of).collect();
    assert_eq!(resent, ["e7", "e8", "e9"]);
    // Two backoff sleeps: at least the initial delay, then at least double it.
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "{:?}",
        started.elapsed()
    );
    let stats = emitter.stats();
    assert_eq!(stats.items_written, 10);
    assert_eq!(stats.requests_retried, 2);
}

#[tokio::test(start_paused = true)]
async fn unprocessed_items_past_the_limit_fail_retryable_naming_how_many() {
    let (rule, calls) = recording_rule(|_, input| {
        let sent = requests(input);
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, sent[..2.min(sent.len())].to_vec())
            .build()
    });
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events: Vec<Event> = (0..5).map(|i| event(&format!("e{i}"), i)).collect();
    let error = emitter.emit(&events_batch(events)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(
        dynamodb_error(&error).to_string(),
        "2 of 5 item(s) not confirmed written to table `events`: \
         DynamoDB left 2 unprocessed after 5 BatchWriteItem attempt(s)"
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        FAST_RETRY.max_attempts as usize
    );
    assert_eq!(emitter.stats().items_written, 3);
}

/// Leaves the items with these ids unprocessed in every answer.
fn never_processing(ids: &'static [&'static str]) -> (Rule, Arc<Mutex<Vec<Vec<WriteRequest>>>>) {
    recording_rule(move |_, input| {
        let left: Vec<WriteRequest> = requests(input)
            .into_iter()
            .filter(|r| ids.contains(&id_of(r.put_request().unwrap().item()).as_str()))
            .collect();
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, left)
            .build()
    })
}

fn sixty_events() -> Vec<Event> {
    (0..60).map(|i| event(&format!("e{i:02}"), i)).collect()
}

/// Whether a recorded request carried the item with this id.
fn carries(call: &[WriteRequest], id: &str) -> bool {
    items(call).iter().any(|item| id_of(item) == id)
}

#[tokio::test(start_paused = true)]
async fn unprocessed_items_error_counts_the_chunks_never_sent() {
    // Chunks e00..e24, e25..e49, e50..e59, one at a time: the second keeps
    // two items unprocessed, so the third is never sent.
    let (rule, calls) = never_processing(&["e25", "e26"]);
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .max_in_flight(1)
        .build()
        .unwrap();
    let error = emitter
        .emit(&events_batch(sixty_events()))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    match dynamodb_error(&error) {
        DynamoDbError::UnprocessedItems {
            not_written,
            batch_items,
            left,
            attempts,
            ..
        } => assert_eq!(
            (*not_written, *batch_items, *left, *attempts),
            (12, 60, 2, 5)
        ),
        other => panic!("not UnprocessedItems: {other}"),
    }
    assert_eq!(
        dynamodb_error(&error).to_string(),
        "12 of 60 item(s) not confirmed written to table `events`: \
         DynamoDB left 2 unprocessed after 5 BatchWriteItem attempt(s)"
    );
    let calls = calls.lock().unwrap();
    assert_eq!(
        calls.len(),
        1 + 5,
        "the first chunk once, the second five times"
    );
    assert!(
        !calls.iter().any(|c| carries(c, "e50")),
        "no chunk starts after a failure"
    );
    assert_eq!(emitter.stats().items_written, 25 + 23);
}

#[tokio::test(start_paused = true)]
async fn unprocessed_items_error_counts_only_what_is_left_when_every_chunk_was_sent() {
    // All three chunks in flight at once (default max_in_flight 4); the first
    // keeps two items unprocessed, the others are written.
    let (rule, calls) = never_processing(&["e00", "e01"]);
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let error = emitter
        .emit(&events_batch(sixty_events()))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(
        dynamodb_error(&error)
            .to_string()
            .starts_with("2 of 60 item(s) not confirmed written"),
        "{error}"
    );
    assert_eq!(calls.lock().unwrap().len(), 5 + 1 + 1);
    assert_eq!(emitter.stats().items_written, 58);
}

#[tokio::test(start_paused = true)]
async fn chunks_in_flight_finish_after_another_fails() {
    // Two chunks in flight: the first fails for good at once; the second,
    // already started, has 3 items left unprocessed and finishes by sending
    // them again. The third chunk is never sent.
    let calls: Arc<Mutex<Vec<Vec<WriteRequest>>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let rule = mock!(Client::batch_write_item).then_compute_response(move |input| {
        let sent = requests(input);
        let mut calls = seen.lock().unwrap();
        let resend = calls.iter().any(|c| carries(c, "e49"));
        calls.push(sent.clone());
        if carries(&sent, "e00") {
            MockResponse::Error(access_denied())
        } else if carries(&sent, "e49") && !resend {
            MockResponse::Output(
                BatchWriteItemOutput::builder()
                    .unprocessed_items(TABLE, sent[sent.len() - 3..].to_vec())
                    .build(),
            )
        } else {
            MockResponse::Output(ok_output())
        }
    });
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .max_in_flight(2)
        .build()
        .unwrap();
    let error = emitter
        .emit(&events_batch(sixty_events()))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error.to_string().contains("AccessDeniedException"),
        "{error}"
    );
    let calls = calls.lock().unwrap();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [25, 25, 3],
        "the second chunk finished; the third never started"
    );
    assert!(!calls.iter().any(|c| carries(c, "e50")));
    assert_eq!(emitter.stats().items_written, 25);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_hidden_behind_a_retryable_one() {
    // The first chunk keeps items unprocessed (retryable once its attempts
    // run out); the second is throttled, then refused for good on its last
    // attempt. Whichever ends first, the batch must fail for good.
    let second_calls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&second_calls);
    let rule = mock!(Client::batch_write_item).then_compute_response(move |input| {
        let sent = requests(input);
        if carries(&sent, "e00") {
            return MockResponse::Output(
                BatchWriteItemOutput::builder()
                    .unprocessed_items(TABLE, sent[..1].to_vec())
                    .build(),
            );
        }
        let mut calls = counted.lock().unwrap();
        *calls += 1;
        if *calls < FAST_RETRY.max_attempts {
            MockResponse::Error(throttling_error("ThrottlingException"))
        } else {
            MockResponse::Error(access_denied())
        }
    });
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .build()
        .unwrap();
    let events: Vec<Event> = sixty_events().into_iter().take(50).collect();
    let error = emitter.emit(&events_batch(events)).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error.to_string().contains("AccessDeniedException"),
        "{error}"
    );
    assert_eq!(*second_calls.lock().unwrap(), FAST_RETRY.max_attempts);
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_grow_and_stay_capped() {
    let (rule, _) = recording_rule(|_, input| {
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, requests(input))
            .build()
    });
    let retry = RetryPolicy::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(400))
        .with_max_attempts(6);
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(retry)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let _ = emitter.emit(&events_batch(vec![event("a", 1)])).await;
    let waited = started.elapsed();
    // Five sleeps: 100, 200, 400, 400, 400 ms before jitter, at most double with it.
    assert!(
        waited >= Duration::from_millis(1_500) && waited <= Duration::from_millis(3_000),
        "{waited:?}"
    );
}

// ---------------------------------------------------------------------------
// Throttling and other request errors
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_then_succeeds() {
    for code in THROTTLING_CODES {
        let rule = mock!(Client::batch_write_item)
            .sequence()
            .error(move || throttling_error(code))
            .times(2)
            .output(ok_output)
            .build();
        let emitter = emitter(client(RuleMode::Sequential, &[&rule]));
        let outcome = emitter
            .emit(&events_batch(vec![event("a", 1), event("b", 2)]))
            .await
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        assert!(outcome.rejected.is_empty());
        assert_eq!(
            rule.num_calls(),
            3,
            "{code}: two throttled attempts, then success"
        );
        assert_eq!(emitter.stats().items_written, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_past_the_limit_is_a_retryable_error() {
    for code in THROTTLING_CODES {
        let rule = mock!(Client::batch_write_item).then_error(move || throttling_error(code));
        let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
        let error = emitter
            .emit(&events_batch(vec![event("a", 1)]))
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{code}: {error}");
        let text = error.to_string();
        assert!(text.contains(code) && text.contains("throttled"), "{text}");
        assert_eq!(rule.num_calls(), FAST_RETRY.max_attempts as usize, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_item_chunk_refused_as_invalid_fails_for_good() {
    // Alone in its chunk, before the table ever accepted a write, the item
    // cannot be told from a table-level problem: the batch fails for good.
    let rule = mock!(Client::batch_write_item).then_error(validation_error);
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let error = emitter
        .emit(&events_batch(vec![event("a", 1)]))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("ValidationException"), "{error}");
    assert_eq!(rule.num_calls(), 1);
    assert_eq!(emitter.stats().items_rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried() {
    let rule = mock!(Client::batch_write_item)
        .sequence()
        .error(|| {
            BatchWriteItemError::generic(
                ErrorMetadata::builder()
                    .code("InternalServerError")
                    .message("oops")
                    .build(),
            )
        })
        .output(ok_output)
        .build();
    let emitter = emitter(client(RuleMode::Sequential, &[&rule]));
    let outcome = emitter
        .emit(&events_batch(vec![event("a", 1)]))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn gateway_answers_without_a_code_are_retried() {
    // A proxy or load balancer in front of the endpoint: no DynamoDB code.
    for (status, body) in [
        (502, Some("<html>Bad Gateway</html>".to_owned())),
        (503, None),
        (504, Some("upstream timed out".to_owned())),
        (429, None),
    ] {
        let rule = mock!(Client::batch_write_item)
            .sequence()
            .http_status(status, body)
            .output(ok_output)
            .build();
        let emitter = emitter(client(RuleMode::Sequential, &[&rule]));
        let outcome = emitter
            .emit(&events_batch(vec![event("a", 1)]))
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert!(outcome.rejected.is_empty());
        assert_eq!(rule.num_calls(), 2, "{status}: retried once");
        assert_eq!(emitter.stats().requests_retried, 1, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn client_errors_without_a_code_are_permanent() {
    let rule = mock!(Client::batch_write_item)
        .sequence()
        .http_status(403, Some("<html>Forbidden</html>".to_owned()))
        .output(ok_output)
        .build();
    let emitter = emitter(client(RuleMode::Sequential, &[&rule]));
    let error = emitter
        .emit(&events_batch(vec![event("a", 1)]))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert_eq!(
        dynamodb_error(&error).request_kind(),
        Some(RequestErrorKind::Permanent)
    );
    assert_eq!(rule.num_calls(), 1);
}

/// A client whose endpoint is a local port nobody listens on (see
/// [`unreachable_sdk_config`]).
fn unreachable_client() -> Client {
    Client::new(&unreachable_sdk_config().unwrap())
}

/// Real time: the emitter's own retries, kept short.
const TINY_RETRY: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_millis(1))
    .with_max_delay(Duration::from_millis(5))
    .with_max_attempts(2);

#[tokio::test]
async fn connection_failures_are_retried_then_retryable() {
    let plain = DynamoDbEmitter::<Event>::builder(unreachable_client(), TABLE)
        .key_attributes(["id"])
        .retry(TINY_RETRY);
    let conditional = DynamoDbEmitter::<Event>::builder(unreachable_client(), TABLE)
        .key_attributes(["id"])
        .retry(TINY_RETRY)
        .conditional_put(ConditionalPut::newer_version("value"));
    for (builder, operation) in [(plain, "BatchWriteItem"), (conditional, "PutItem")] {
        let emitter = builder.build().unwrap();
        let error = emitter
            .emit(&events_batch(vec![event("a", 1)]))
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{operation}: {error}");
        let own = dynamodb_error(&error);
        assert!(own.is_retryable(), "{operation}: {own}");
        match own {
            DynamoDbError::Request {
                operation: op,
                kind,
                attempts,
                ..
            } => {
                assert_eq!(*op, operation);
                assert_eq!(*kind, RequestErrorKind::Transient, "{own}");
                assert_eq!(*attempts, TINY_RETRY.max_attempts, "{own}");
            }
            other => panic!("{operation}: not a request error: {other}"),
        }
        let stats = emitter.stats();
        assert_eq!((stats.requests_retried, stats.items_written), (1, 0));
    }
}

// ---------------------------------------------------------------------------
// Requests in flight
// ---------------------------------------------------------------------------

/// A mock client whose requests pass through `probe`.
fn probed_client(probe: &InFlightProbe, rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |conf| conf
        .retry_config(RetryConfig::disabled())
        .http_client(probe.wrap(aws_smithy_mocks::create_mock_http_client())))
}

fn two_hundred_events() -> Vec<Event> {
    (0..200).map(|i| event(&format!("e{i:03}"), i)).collect()
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_bounds_batch_write_requests() {
    for max_in_flight in [1, 2, 4] {
        let probe = InFlightProbe::new(Duration::from_millis(50));
        let rule = mock!(Client::batch_write_item).then_output(ok_output);
        let emitter = DynamoDbEmitter::<Event>::builder(probed_client(&probe, &[&rule]), TABLE)
            .key_attributes(["id"])
            .max_in_flight(max_in_flight)
            .build()
            .unwrap();
        let outcome = emitter
            .emit(&events_batch(two_hundred_events()))
            .await
            .unwrap();
        assert!(outcome.rejected.is_empty());
        assert_eq!(probe.requests(), 8, "200 items, 25 per request");
        assert_eq!(
            probe.peak(),
            max_in_flight,
            "max_in_flight({max_in_flight})"
        );
        assert_eq!(emitter.stats().items_written, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_holds_while_unprocessed_items_are_sent_again() {
    // Every first request of a chunk leaves 5 items unprocessed.
    let (rule, _) = recording_rule(|_, input| {
        let sent = requests(input);
        let left = if sent.len() == 25 {
            sent[..5].to_vec()
        } else {
            Vec::new()
        };
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, left)
            .build()
    });
    let probe = InFlightProbe::new(Duration::from_millis(50));
    let emitter = DynamoDbEmitter::<Event>::builder(probed_client(&probe, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .max_in_flight(2)
        .build()
        .unwrap();
    let outcome = emitter
        .emit(&events_batch(two_hundred_events()))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(probe.requests(), 16);
    assert_eq!(probe.peak(), 2);
    assert_eq!(emitter.stats().items_written, 200);
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_bounds_conditional_puts() {
    let rule = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
    let conditional = |probe: &InFlightProbe| {
        DynamoDbEmitter::<Event>::builder(probed_client(probe, &[&rule]), TABLE)
            .key_attributes(["id"])
            .conditional_put(ConditionalPut::newer_version("value"))
            .max_in_flight(3)
            .build()
            .unwrap()
    };

    let probe = InFlightProbe::new(Duration::from_millis(50));
    let emitter = conditional(&probe);
    let distinct: Vec<Event> = (0..30).map(|i| event(&format!("k{i:02}"), i)).collect();
    let outcome = emitter.emit(&events_batch(distinct)).await.unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(probe.requests(), 30);
    assert_eq!(probe.peak(), 3, "distinct keys: max_in_flight puts at once");
    assert_eq!(emitter.stats().items_written, 30);

    let probe = InFlightProbe::new(Duration::from_millis(50));
    let emitter = conditional(&probe);
    let one_key: Vec<Event> = (0..10).map(|i| event("same", i)).collect();
    let outcome = emitter.emit(&events_batch(one_key)).await.unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(probe.requests(), 10);
    assert_eq!(probe.peak(), 1, "puts of one key go one after the other");
}

// ---------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chunks_hold_at_most_25_items() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .max_in_flight(3)
        .build()
        .unwrap();
    let events: Vec<Event> = (0..60).map(|i| event(&format!("e{i:02}"), i)).collect();
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert!(outcome.rejected.is_empty());

    let calls = calls.lock().unwrap();
    let mut sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [10, 25, 25]);
    let mut ids: Vec<String> = calls
        .iter()
        .flat_map(|c| items(c))
        .map(|i| id_of(&i))
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..60).map(|i| format!("e{i:02}")).collect();
    assert_eq!(ids, expected, "every item exactly once");
}

#[tokio::test]
async fn chunks_stay_under_the_request_size_limit() {
    // Control characters take 6 bytes each in the JSON body (\u0001):
    // 25 items of 150,000 of them (150 KB each as DynamoDB counts them)
    // would make a 22 MB request.
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events: Vec<Event> = (0..25)
        .map(|i| with_payload(&format!("e{i:02}"), "\u{1}".repeat(150_000)))
        .collect();
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);

    let calls = calls.lock().unwrap();
    let per_request = MAX_REQUEST_BYTES / (150_000 * 6);
    assert!(calls.len() >= 2, "{} requests", calls.len());
    for call in calls.iter() {
        assert!(
            call.len() <= per_request,
            "a request of {} items",
            call.len()
        );
    }
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 25);
}

// ---------------------------------------------------------------------------
// Duplicate keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_keys_collapse_to_the_last_item() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events = vec![
        event("a", 1),
        event("b", 2),
        event("a", 3),
        event("c", 4),
        event("b", 5),
    ];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert!(outcome.rejected.is_empty());

    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    let written: Vec<(String, u64)> = items(&calls[0])
        .iter()
        .map(|i| (id_of(i), value_of(i)))
        .collect();
    assert_eq!(
        written,
        [
            ("a".to_owned(), 3),
            ("c".to_owned(), 4),
            ("b".to_owned(), 5)
        ]
    );
    assert_eq!(emitter.stats().duplicates_collapsed, 2);
}

#[tokio::test]
async fn composite_keys_and_equal_numbers() {
    #[derive(Debug, Clone, Serialize)]
    struct Reading {
        sensor: String,
        at: f64,
        celsius: f64,
    }
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = DynamoDbEmitter::<Reading>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["sensor", "at"])
        .build()
        .unwrap();
    let r = |sensor: &str, at: f64, celsius: f64| Reading {
        sensor: sensor.to_owned(),
        at,
        celsius,
    };
    // Same sensor at another time is another item; 1.0 and 1.00 are one number.
    let readings = vec![r("s1", 1.0, 20.0), r("s1", 2.0, 21.0), r("s2", 1.0, 5.0)];
    let outcome = emitter
        .emit(&batch(shard_context("s"), readings, 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(calls.lock().unwrap()[0].len(), 3);
    assert_eq!(emitter.stats().duplicates_collapsed, 0);

    let mapped = DynamoDbEmitter::<(String, String)>::builder_with_mapper(
        client(RuleMode::MatchAny, &[&rule]),
        TABLE,
        |(id, n): &(String, String)| {
            Ok(Item::from([
                ("id".to_owned(), AttributeValue::S(id.clone())),
                ("n".to_owned(), AttributeValue::N(n.clone())),
            ]))
        },
    )
    .key_attributes(["id", "n"])
    .build()
    .unwrap();
    let pairs = vec![
        ("x".to_owned(), "1".to_owned()),
        ("x".to_owned(), "1.00".to_owned()),
        ("x".to_owned(), "10e-1".to_owned()),
    ];
    let outcome = mapped
        .emit(&batch(shard_context("s"), pairs, 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    let calls = calls.lock().unwrap();
    assert_eq!(calls[1].len(), 1);
    assert_eq!(
        items(&calls[1])[0].get("n"),
        Some(&AttributeValue::N("10e-1".into())),
        "the last spelling wins"
    );
}

// ---------------------------------------------------------------------------
// Items rejected one by one
// ---------------------------------------------------------------------------

#[tokio::test]
async fn oversized_item_is_rejected_and_the_rest_written() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events = vec![
        event("small-1", 1),
        with_payload("huge", "x".repeat(410 * 1024)),
        event("small-2", 2),
    ];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].index, 1);
    assert!(
        outcome.rejected[0].reason.contains("400 KB"),
        "{}",
        outcome.rejected[0].reason
    );
    let calls = calls.lock().unwrap();
    let ids: Vec<String> = items(&calls[0]).iter().map(id_of).collect();
    assert_eq!(ids, ["small-1", "small-2"]);
    assert_eq!(emitter.stats().items_rejected, 1);
}

#[tokio::test]
async fn an_item_just_under_400_kb_is_written() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    // "id" + "big" + "value" + "payload" names, id "big", value 0 (2 bytes).
    let payload = "x".repeat(400 * 1024 - 2 - 3 - 5 - 2 - 7);
    let outcome = emitter
        .emit(&events_batch(vec![with_payload("big", payload)]))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unconvertible_items_and_bad_keys_are_rejected() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .item_mapper(|e: &Event| {
            if e.value == 666 {
                return Err("cannot map value 666".into());
            }
            Ok(serde_dynamo::aws_sdk_dynamodb_1::to_item(e)?)
        })
        .build()
        .unwrap();
    let events = vec![
        event("ok", 1),
        event("bad", 666),
        event("", 2), // empty key
    ];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    let rejected: Vec<(usize, bool)> = outcome
        .rejected
        .iter()
        .map(|r| {
            (
                r.index,
                r.reason.contains("666") || r.reason.contains("empty"),
            )
        })
        .collect();
    assert_eq!(rejected, [(1, true), (2, true)], "{:?}", outcome.rejected);
    assert_eq!(calls.lock().unwrap()[0].len(), 1);

    // serde_dynamo cannot make an item out of a bare string.
    let strings = DynamoDbEmitter::<String>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .build()
        .unwrap();
    let outcome = strings
        .emit(&batch(shard_context("s"), vec!["just text".to_owned()], 1))
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert!(
        outcome.rejected[0].reason.contains("cannot be converted"),
        "{}",
        outcome.rejected[0].reason
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "nothing left to write: no request"
    );
}

#[tokio::test]
async fn empty_batches_send_nothing() {
    let (rule, calls) = recording_rule(|_, _| ok_output());
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let outcome = emitter.emit(&events_batch(Vec::new())).await.unwrap();
    assert_eq!(outcome, EmitOutcome::delivered());
    assert!(calls.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Items DynamoDB refuses (ValidationException): isolated and rejected
// ---------------------------------------------------------------------------

/// Records every `BatchWriteItem` input; refuses with `ValidationException`
/// each request carrying an item `bad` picks out (DynamoDB refuses the whole
/// request for one invalid item) and writes the others.
fn refusing(
    bad: impl Fn(&Item) -> bool + Send + Sync + 'static,
) -> (Rule, Arc<Mutex<Vec<Vec<WriteRequest>>>>) {
    let calls: Arc<Mutex<Vec<Vec<WriteRequest>>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let rule = mock!(Client::batch_write_item).then_compute_response(move |input| {
        let sent = requests(input);
        let refused = items(&sent).iter().any(&bad);
        seen.lock().unwrap().push(sent);
        if refused {
            MockResponse::Error(validation_error())
        } else {
            MockResponse::Output(ok_output())
        }
    });
    (rule, calls)
}

/// The ids of each recorded request.
fn ids_per_call(calls: &[Vec<WriteRequest>]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|call| items(call).iter().map(id_of).collect())
        .collect()
}

fn ten_events() -> Vec<Event> {
    (0..10).map(|i| event(&format!("e{i}"), i)).collect()
}

#[tokio::test(start_paused = true)]
async fn an_item_dynamodb_refuses_is_isolated_and_rejected() {
    let (rule, calls) = refusing(|item| id_of(item) == "e6");
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let outcome = emitter.emit(&events_batch(ten_events())).await.unwrap();

    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    let rejected = &outcome.rejected[0];
    assert_eq!(rejected.index, 6);
    assert_eq!(
        rejected.reason,
        format!("table `events` refused the item (ValidationException): {INVALID}")
    );
    // The chunk, then each of its items alone, in order.
    let calls = ids_per_call(&calls.lock().unwrap());
    assert_eq!(calls.len(), 1 + 10);
    assert_eq!(calls[0].len(), 10);
    let alone: Vec<String> = calls[1..].iter().flatten().cloned().collect();
    let all: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(alone, all);
    assert!(calls[1..].iter().all(|call| call.len() == 1));
    let stats = emitter.stats();
    assert_eq!(
        (
            stats.items_written,
            stats.items_rejected,
            stats.requests_retried
        ),
        (9, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_refused_item_in_the_last_chunk_is_rejected_like_in_a_big_chunk() {
    // 26 items: a chunk of 25 that is written, then item 25 alone, refused.
    let (rule, calls) = refusing(|item| id_of(item) == "e25");
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events: Vec<Event> = (0..26).map(|i| event(&format!("e{i}"), i)).collect();
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    assert_eq!(outcome.rejected[0].index, 25);
    assert!(
        outcome.rejected[0].reason.contains("ValidationException"),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(calls.lock().unwrap().len(), 2, "no isolation round needed");
    let stats = emitter.stats();
    assert_eq!((stats.items_written, stats.items_rejected), (25, 1));

    // Once the table took writes, a batch of one refused item is rejected
    // too, instead of failing the shard on every restart.
    let outcome = emitter
        .emit(&events_batch(vec![event("e25", 25)]))
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(emitter.stats().items_rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn every_item_refused_alone_fails_the_batch_for_good() {
    // E.g. the table's key schema does not match `key_attributes`: rejecting
    // every item would silently drop the batch.
    let (rule, calls) = refusing(|_| true);
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let error = emitter.emit(&events_batch(ten_events())).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    match dynamodb_error(&error) {
        DynamoDbError::Request {
            operation,
            kind,
            code,
            ..
        } => {
            assert_eq!(*operation, "BatchWriteItem");
            assert_eq!(*kind, RequestErrorKind::Permanent);
            assert_eq!(code.as_deref(), Some("ValidationException"));
        }
        other => panic!("not a request error: {other}"),
    }
    assert_eq!(
        calls.lock().unwrap().len(),
        1 + 10,
        "every item tried alone"
    );
    let stats = emitter.stats();
    assert_eq!((stats.items_written, stats.items_rejected), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_refused_item_keeps_its_batch_index_after_rejections_and_collapsing() {
    // Index 0 is rejected before writing (too large), items 2 and 5 share
    // key "c" and collapse to 5, which DynamoDB refuses.
    let (rule, calls) = refusing(|item| value_of(item) == 99);
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events = vec![
        with_payload("huge", "x".repeat(410 * 1024)),
        event("a", 1),
        event("c", 2),
        event("b", 3),
        event("d", 4),
        event("c", 99),
        event("e", 6),
    ];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    let rejected: Vec<(usize, bool)> = outcome
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.contains("ValidationException")))
        .collect();
    assert_eq!(rejected, [(0, false), (5, true)], "{:?}", outcome.rejected);
    let calls = ids_per_call(&calls.lock().unwrap());
    assert_eq!(calls[0], ["a", "b", "d", "c", "e"]);
    assert_eq!(calls.len(), 1 + 5);
    let stats = emitter.stats();
    assert_eq!(
        (
            stats.items_written,
            stats.items_rejected,
            stats.duplicates_collapsed
        ),
        (4, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_send_while_isolating_is_retried() {
    // e1 is refused; e2 is throttled once when sent alone.
    let throttled = Arc::new(Mutex::new(false));
    let rule = mock!(Client::batch_write_item).then_compute_response(move |input| {
        let ids: Vec<String> = items(&requests(input)).iter().map(id_of).collect();
        let mut throttled = throttled.lock().unwrap();
        if ids.iter().any(|id| id == "e1") {
            MockResponse::Error(validation_error())
        } else if ids == ["e2"] && !*throttled {
            *throttled = true;
            MockResponse::Error(throttling_error("ThrottlingException"))
        } else {
            MockResponse::Output(ok_output())
        }
    });
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let events: Vec<Event> = (0..4).map(|i| event(&format!("e{i}"), i)).collect();
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    let indexes: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [1]);
    assert_eq!(rule.num_calls(), 1 + 4 + 1);
    let stats = emitter.stats();
    assert_eq!((stats.items_written, stats.requests_retried), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn a_send_that_gives_up_while_isolating_fails_the_batch_retryable() {
    // e1 is refused; e2, sent alone, stays unprocessed until the retries run
    // out; e3 is never sent alone. Only e0 was written.
    let (rule, calls) = recording_rule(|_, input| {
        let sent = requests(input);
        let ids: Vec<String> = items(&sent).iter().map(id_of).collect();
        if ids == ["e2"] {
            BatchWriteItemOutput::builder()
                .unprocessed_items(TABLE, sent)
                .build()
        } else {
            ok_output()
        }
    });
    let refuse_e1 = mock!(Client::batch_write_item)
        .match_requests(|input| items(&requests(input)).iter().any(|i| id_of(i) == "e1"))
        .then_error(validation_error);
    let emitter = emitter(client(RuleMode::MatchAny, &[&refuse_e1, &rule]));
    let events: Vec<Event> = (0..4).map(|i| event(&format!("e{i}"), i)).collect();
    let error = emitter.emit(&events_batch(events)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(
        dynamodb_error(&error).to_string(),
        "3 of 4 item(s) not confirmed written to table `events`: \
         DynamoDB left 1 unprocessed after 5 BatchWriteItem attempt(s)"
    );
    assert_eq!(refuse_e1.num_calls(), 2, "the chunk, then e1 alone");
    let calls = ids_per_call(&calls.lock().unwrap());
    assert!(!calls.iter().flatten().any(|id| id == "e3"), "{calls:?}");
    assert_eq!(emitter.stats().items_written, 1);
}

// ---------------------------------------------------------------------------
// Conditional puts
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn conditional_puts_skip_stale_versions() {
    // A table holding version 5 of every key: older or equal versions fail
    // their condition.
    let puts: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let seen = Arc::clone(&puts);
    let rule = mock!(Client::put_item).then_compute_response(move |input| {
        assert_eq!(input.table_name(), Some(TABLE));
        assert_eq!(
            input.condition_expression(),
            Some("attribute_not_exists(#kc_version) OR #kc_version < :kc_version")
        );
        let names = input.expression_attribute_names().unwrap();
        assert_eq!(names["#kc_version"], "value");
        let values = input.expression_attribute_values().unwrap();
        let item = input.item().unwrap();
        assert_eq!(values[":kc_version"], item["value"]);
        let version = value_of(item);
        seen.lock().unwrap().push((id_of(item), version));
        if version <= 5 {
            MockResponse::Error(PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .meta(
                        ErrorMetadata::builder()
                            .code("ConditionalCheckFailedException")
                            .build(),
                    )
                    .build(),
            ))
        } else {
            MockResponse::Output(PutItemOutput::builder().build())
        }
    });
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .conditional_put(ConditionalPut::newer_version("value"))
        .max_in_flight(1)
        .build()
        .unwrap();
    let events = vec![
        event("a", 3),
        event("b", 7),
        event("a", 9),
        event("c", 5),
        event("a", 4),
    ];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert!(outcome.rejected.is_empty(), "stale items are not errors");
    let stats = emitter.stats();
    assert_eq!((stats.items_written, stats.stale_skipped), (2, 3));
    // Items of one key go in batch order (no collapsing in conditional mode).
    let puts = puts.lock().unwrap();
    let a: Vec<u64> = puts
        .iter()
        .filter(|(id, _)| id == "a")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(a, [3, 9, 4]);
    assert_eq!(puts.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn conditional_puts_retry_throttling_and_reject_items_without_the_version() {
    let rule = mock!(Client::put_item)
        .sequence()
        .error(|| {
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .meta(
                        ErrorMetadata::builder()
                            .code("ProvisionedThroughputExceededException")
                            .build(),
                    )
                    .build(),
            )
        })
        .output(|| PutItemOutput::builder().build())
        .build();
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::Sequential, &[&rule]), TABLE)
        .key_attributes(["id"])
        .retry(FAST_RETRY)
        .conditional_put(ConditionalPut::newer_version("version"))
        .build()
        .unwrap();
    // `Event` has no `version` attribute: the condition cannot be filled.
    let outcome = emitter
        .emit(&events_batch(vec![event("a", 1)]))
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert!(outcome.rejected[0].reason.contains("`version`"));
    assert_eq!(rule.num_calls(), 0);

    let versioned =
        DynamoDbEmitter::<Event>::builder(client(RuleMode::Sequential, &[&rule]), TABLE)
            .key_attributes(["id"])
            .retry(FAST_RETRY)
            .conditional_put(ConditionalPut::newer_version("value"))
            .build()
            .unwrap();
    let outcome = versioned
        .emit(&events_batch(vec![event("a", 1)]))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(versioned.stats().requests_retried, 1);
}

#[tokio::test(start_paused = true)]
async fn conditional_puts_reject_an_item_dynamodb_refuses_unless_the_table_never_took_a_write() {
    // DynamoDB refuses every put of an item with value 99.
    let rule = mock!(Client::put_item).then_compute_response(|input| {
        if value_of(input.item().unwrap()) == 99 {
            MockResponse::Error(PutItemError::generic(
                ErrorMetadata::builder()
                    .code("ValidationException")
                    .message(INVALID)
                    .build(),
            ))
        } else {
            MockResponse::Output(PutItemOutput::builder().build())
        }
    });
    let emitter = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .conditional_put(ConditionalPut::newer_version("value"))
        .build()
        .unwrap();

    let events = vec![event("a", 1), event("b", 99), event("c", 3), event("b", 4)];
    let outcome = emitter.emit(&events_batch(events)).await.unwrap();
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    assert_eq!(outcome.rejected[0].index, 1);
    assert_eq!(
        outcome.rejected[0].reason,
        format!("table `events` refused the item (ValidationException): {INVALID}")
    );
    assert_eq!(rule.num_calls(), 4, "the next put of key b still goes");
    let stats = emitter.stats();
    assert_eq!((stats.items_written, stats.items_rejected), (3, 1));

    // The table took writes: a batch whose items are all refused, even a
    // single item, is the items' fault and they are rejected.
    let outcome = emitter
        .emit(&events_batch(vec![event("z", 99)]))
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    assert_eq!(emitter.stats().items_rejected, 2);

    // Every item refused by a table that never took a write: a table-level
    // problem, the batch fails for good.
    let fresh = DynamoDbEmitter::<Event>::builder(client(RuleMode::MatchAny, &[&rule]), TABLE)
        .key_attributes(["id"])
        .conditional_put(ConditionalPut::newer_version("value"))
        .build()
        .unwrap();
    let error = fresh
        .emit(&events_batch(vec![event("x", 99), event("y", 99)]))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert_eq!(
        dynamodb_error(&error).request_kind(),
        Some(RequestErrorKind::Permanent)
    );
    assert!(error.to_string().contains("ValidationException"), "{error}");
    assert_eq!(fresh.stats().items_rejected, 0, "nothing rejected");
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn bad_configuration_is_named() {
    let rule = mock!(Client::batch_write_item).then_output(ok_output);
    let c = || client(RuleMode::MatchAny, &[&rule]);
    let config_error = |result: Result<DynamoDbEmitter<Event>, DynamoDbError>| match result {
        Err(DynamoDbError::Config(message)) => message,
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("accepted a bad configuration"),
    };
    let no_keys = config_error(DynamoDbEmitter::builder(c(), TABLE).build());
    assert!(no_keys.contains("key_attributes"), "{no_keys}");
    let three = config_error(
        DynamoDbEmitter::builder(c(), TABLE)
            .key_attributes(["a", "b", "c"])
            .build(),
    );
    assert!(three.contains("1 or 2"), "{three}");
    let zero = config_error(
        DynamoDbEmitter::builder(c(), TABLE)
            .key_attributes(["id"])
            .max_in_flight(0)
            .build(),
    );
    assert!(zero.contains("max_in_flight"), "{zero}");
    let table = config_error(
        DynamoDbEmitter::builder(c(), "no spaces please")
            .key_attributes(["id"])
            .build(),
    );
    assert!(table.contains("table name"), "{table}");
    let retry = config_error(
        DynamoDbEmitter::builder(c(), TABLE)
            .key_attributes(["id"])
            .retry(FAST_RETRY.with_max_attempts(0))
            .build(),
    );
    assert!(retry.contains("max_attempts"), "{retry}");
    let condition = config_error(
        DynamoDbEmitter::builder(c(), TABLE)
            .key_attributes(["id"])
            .conditional_put(ConditionalPut::new("#v < :v").name("#w", "w"))
            .build(),
    );
    assert!(condition.contains("#w"), "{condition}");

    // And it converts into the core's configuration error for `?`.
    let core: kinesis_connectors_core::Error = DynamoDbError::Config(no_keys).into();
    assert!(matches!(core, kinesis_connectors_core::Error::Config(_)));
}

// ---------------------------------------------------------------------------
// Conformance on an in-memory mock table
// ---------------------------------------------------------------------------

#[tokio::test]
async fn passes_emitter_conformance_on_a_mock_table() {
    let table: Arc<Mutex<HashMap<String, Item>>> = Arc::default();
    let stored = Arc::clone(&table);
    let rule = mock!(Client::batch_write_item).then_compute_output(move |input| {
        let sent = requests(input);
        assert!(sent.len() <= 25, "a request of {} items", sent.len());
        let mut table = stored.lock().unwrap();
        let mut ids = std::collections::HashSet::new();
        for item in items(&sent) {
            let id = id_of(&item);
            assert!(ids.insert(id.clone()), "duplicate key {id} in one request");
            table.insert(id, item);
        }
        ok_output()
    });
    let emitter = emitter(client(RuleMode::MatchAny, &[&rule]));
    let counted = Arc::clone(&table);
    let suite = EmitterConformance::new(&emitter, |i| event(&format!("item-{i}"), i as u64))
        .delivered_count(move || {
            let n = counted.lock().unwrap().len();
            Box::pin(async move { n })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    assert!(table.lock().unwrap().len() >= 2_000);
}
