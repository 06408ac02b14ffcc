//! The store against scripted DynamoDB answers (`aws-smithy-mocks`): error
//! classification, the KCL attribute mapping, and the exact requests each
//! operation sends (condition expressions included). Timeouts and connection
//! failures use a real client against a local socket.
//!
//! SDK retries are disabled in every mock client, so each scripted answer
//! is one attempt.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::create_table::CreateTableOutput;
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::update_item::{
    UpdateItemError, UpdateItemInput, UpdateItemOutput,
};
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, InternalServerError, ProvisionedThroughputExceededException,
    RequestLimitExceeded, ResourceNotFoundException, ThrottlingException,
};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableDescription, TableStatus,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use kinesis_checkpoint_dynamodb::{
    DynamoDbCheckpointError, DynamoDbCheckpointStore, RequestErrorKind,
};
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, Lease, LeaseStore, Position, SequenceNumber, ShardKey,
};

const APP: &str = "orders-app";
const STREAM: &str = "orders";
const SHARD: &str = "shardId-000000000000";
const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

type Item = HashMap<String, AttributeValue>;

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |conf| conf
        .retry_config(RetryConfig::disabled()))
}

async fn store(client: Client) -> DynamoDbCheckpointStore {
    DynamoDbCheckpointStore::builder(client, APP, STREAM)
        .check_table(false)
        .build()
        .await
        .unwrap()
}

fn key() -> ShardKey {
    ShardKey::new(APP, STREAM, SHARD)
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn at(sequence: &str, sub: Option<u64>) -> Checkpoint {
    Checkpoint::At(Position {
        sequence: SequenceNumber::parse(sequence).unwrap(),
        sub_sequence: sub,
    })
}

/// An item as the KCL writes it.
fn kcl_item(checkpoint: &str, sub: u64, owner: Option<&str>, counter: u64) -> Item {
    let mut item = HashMap::from([
        ("leaseKey".to_owned(), s(SHARD)),
        ("checkpoint".to_owned(), s(checkpoint)),
        ("checkpointSubSequenceNumber".to_owned(), n(sub)),
        ("leaseCounter".to_owned(), n(counter)),
        ("ownerSwitchesSinceCheckpoint".to_owned(), n(0)),
    ]);
    if let Some(owner) = owner {
        item.insert("leaseOwner".to_owned(), s(owner));
    }
    item
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("scripted")
        .build()
}

fn get_returns(item: Option<Item>) -> Rule {
    mock!(Client::get_item)
        .then_output(move || GetItemOutput::builder().set_item(item.clone()).build())
}

fn condition_failed(item: Option<Item>) -> UpdateItemError {
    UpdateItemError::ConditionalCheckFailedException(
        ConditionalCheckFailedException::builder()
            .message("The conditional request failed")
            .set_item(item)
            .meta(meta("ConditionalCheckFailedException"))
            .build(),
    )
}

/// An `UpdateItem` rule that records every request and answers with
/// `answer(call index, request)`.
fn update_rule(
    answer: impl Fn(usize, &UpdateItemInput) -> MockResponse<UpdateItemOutput, UpdateItemError>
    + Send
    + Sync
    + 'static,
) -> (Rule, Arc<Mutex<Vec<UpdateItemInput>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = AtomicUsize::new(0);
    let record = Arc::clone(&seen);
    let rule = mock!(Client::update_item).then_compute_response(move |input| {
        record.lock().unwrap().push(input.clone());
        answer(calls.fetch_add(1, Ordering::SeqCst), input)
    });
    (rule, seen)
}

fn updated_counter(counter: u64) -> UpdateItemOutput {
    UpdateItemOutput::builder()
        .attributes("leaseCounter", n(counter))
        .build()
}

/// The retryable flag and this crate's error behind a core error.
fn classify(error: &Error) -> (bool, Option<&DynamoDbCheckpointError>) {
    match error {
        Error::Checkpoint { retryable, source } => {
            (*retryable, source.downcast_ref::<DynamoDbCheckpointError>())
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

fn lease_table(status: TableStatus, key: &str) -> DescribeTableOutput {
    DescribeTableOutput::builder()
        .table(
            TableDescription::builder()
                .table_name(APP)
                .table_status(status)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(key)
                        .key_type(KeyType::Hash)
                        .build()
                        .unwrap(),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
}

fn table_not_found() -> DescribeTableError {
    DescribeTableError::ResourceNotFoundException(
        ResourceNotFoundException::builder()
            .message("Requested resource not found")
            .meta(meta("ResourceNotFoundException"))
            .build(),
    )
}

#[tokio::test]
async fn the_builder_checks_the_table_which_defaults_to_the_application_name() {
    let describe = mock!(Client::describe_table)
        .match_requests(|input| input.table_name() == Some(APP))
        .then_output(|| lease_table(TableStatus::Active, "leaseKey"));
    let store = DynamoDbCheckpointStore::builder(client(&[&describe]), APP, STREAM)
        .build()
        .await
        .unwrap();
    assert_eq!(store.table(), APP);
    assert_eq!(store.application(), APP);
    assert_eq!(store.stream(), STREAM);
    assert_eq!(describe.num_calls(), 1);
}

#[tokio::test]
async fn a_table_with_another_key_is_a_config_error() {
    let describe =
        mock!(Client::describe_table).then_output(|| lease_table(TableStatus::Active, "id"));
    let error = DynamoDbCheckpointStore::builder(client(&[&describe]), APP, STREAM)
        .table("orders-table")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, DynamoDbCheckpointError::Config(_)),
        "{error}"
    );
    assert!(error.to_string().contains("leaseKey"), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn bad_names_are_config_errors_before_any_request() {
    let describe =
        mock!(Client::describe_table).then_output(|| lease_table(TableStatus::Active, "leaseKey"));
    let client = client(&[&describe]);
    for (app, stream, table) in [
        ("", STREAM, None),
        (APP, "", None),
        (APP, STREAM, Some("a b")),
    ] {
        let mut builder = DynamoDbCheckpointStore::builder(client.clone(), app, stream);
        if let Some(table) = table {
            builder = builder.table(table);
        }
        let error = builder.build().await.unwrap_err();
        assert!(
            matches!(error, DynamoDbCheckpointError::Config(_)),
            "{error}"
        );
    }
    let error = DynamoDbCheckpointStore::builder(client.clone(), APP, STREAM)
        .max_write_attempts(0)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, DynamoDbCheckpointError::Config(_)),
        "{error}"
    );
    let error = DynamoDbCheckpointStore::builder(client, APP, STREAM)
        .check_table(false)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, DynamoDbCheckpointError::Config(_)),
        "{error}"
    );
    assert_eq!(describe.num_calls(), 0);
}

#[tokio::test]
async fn a_missing_table_is_an_error_unless_it_may_be_created() {
    let describe = mock!(Client::describe_table).then_error(table_not_found);
    let error = DynamoDbCheckpointStore::builder(client(&[&describe]), APP, STREAM)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DynamoDbCheckpointError::TableNotFound { table } if table == APP),
        "{error}"
    );
    assert!(
        error.to_string().contains("create_table_if_missing"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn a_missing_table_is_created_on_demand_and_waited_for() {
    let describe = mock!(Client::describe_table)
        .sequence()
        .error(table_not_found)
        .output(|| lease_table(TableStatus::Creating, "leaseKey"))
        .times(2)
        .output(|| lease_table(TableStatus::Active, "leaseKey"))
        .build();
    let create = mock!(Client::create_table)
        .match_requests(|input| {
            input.table_name() == Some("leases")
                && input.billing_mode() == Some(&BillingMode::PayPerRequest)
                && input.key_schema().len() == 1
                && input.key_schema()[0].attribute_name() == "leaseKey"
                && input.key_schema()[0].key_type() == &KeyType::Hash
                && input.attribute_definitions().len() == 1
                && input.attribute_definitions()[0].attribute_type() == &ScalarAttributeType::S
        })
        .then_output(|| CreateTableOutput::builder().build());
    let store = DynamoDbCheckpointStore::builder(client(&[&describe, &create]), APP, STREAM)
        .table("leases")
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    assert_eq!(store.table(), "leases");
    assert_eq!(create.num_calls(), 1);
    assert_eq!(describe.num_calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_table_that_stays_creating_times_out_retryably() {
    let describe = mock!(Client::describe_table)
        .then_output(|| lease_table(TableStatus::Creating, "leaseKey"));
    let error = DynamoDbCheckpointStore::builder(client(&[&describe]), APP, STREAM)
        .table_ready_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DynamoDbCheckpointError::TableNotActive { status, .. } if status == "CREATING"),
        "{error}"
    );
    assert!(error.is_retryable());
}

// ---------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------

#[tokio::test]
async fn throttling_and_server_errors_are_retryable() {
    let cases: Vec<(&str, Rule, RequestErrorKind)> = vec![
        (
            "ProvisionedThroughputExceeded",
            mock!(Client::get_item).then_error(|| {
                GetItemError::ProvisionedThroughputExceededException(
                    ProvisionedThroughputExceededException::builder()
                        .meta(meta("ProvisionedThroughputExceededException"))
                        .build(),
                )
            }),
            RequestErrorKind::Throttled,
        ),
        (
            "ThrottlingException",
            mock!(Client::get_item).then_error(|| {
                GetItemError::ThrottlingException(
                    ThrottlingException::builder()
                        .meta(meta("ThrottlingException"))
                        .build(),
                )
            }),
            RequestErrorKind::Throttled,
        ),
        (
            "RequestLimitExceeded",
            mock!(Client::get_item).then_error(|| {
                GetItemError::RequestLimitExceeded(
                    RequestLimitExceeded::builder()
                        .meta(meta("RequestLimitExceeded"))
                        .build(),
                )
            }),
            RequestErrorKind::Throttled,
        ),
        (
            "InternalServerError",
            mock!(Client::get_item).then_error(|| {
                GetItemError::InternalServerError(
                    InternalServerError::builder()
                        .meta(meta("InternalServerError"))
                        .build(),
                )
            }),
            RequestErrorKind::Transient,
        ),
        (
            "HTTP 503 without a code",
            mock!(Client::get_item)
                .sequence()
                .http_status(503, None)
                .build(),
            RequestErrorKind::Transient,
        ),
    ];
    for (name, rule, kind) in cases {
        let store = store(client(&[&rule])).await;
        let error = store.get(&key()).await.unwrap_err();
        let (retryable, inner) = classify(&error);
        assert!(retryable, "{name}: {error}");
        assert_eq!(
            inner.and_then(|e| e.request_kind()),
            Some(kind),
            "{name}: {error}"
        );
        assert!(error.is_retryable(), "{name}");
    }
}

#[tokio::test]
async fn validation_errors_and_missing_tables_are_permanent() {
    let validation =
        mock!(Client::get_item).then_error(|| GetItemError::generic(meta("ValidationException")));
    let store1 = store(client(&[&validation])).await;
    let error = store1.get(&key()).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(!retryable, "{error}");
    assert_eq!(
        inner.and_then(|e| e.request_kind()),
        Some(RequestErrorKind::Permanent)
    );
    assert!(error.to_string().contains("ValidationException"), "{error}");

    let missing = mock!(Client::get_item).then_error(|| {
        GetItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .meta(meta("ResourceNotFoundException"))
                .build(),
        )
    });
    let store2 = store(client(&[&missing])).await;
    let error = store2.get(&key()).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(!retryable);
    assert!(
        matches!(inner, Some(DynamoDbCheckpointError::TableNotFound { .. })),
        "{error}"
    );
}

/// A real client (no mocks) for an endpoint, with SDK retries off.
fn real_client(endpoint: &str, timeout: Duration) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn an_unreachable_store_gives_retryable_errors() {
    // Connection refused: a port that was free a moment ago.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let refused = store(real_client(
        &format!("http://{closed}"),
        Duration::from_secs(2),
    ))
    .await;
    let error = refused.get(&key()).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(retryable, "{error}");
    assert_eq!(
        inner.and_then(|e| e.request_kind()),
        Some(RequestErrorKind::Transient)
    );
    let error = refused.set(&key(), &at("5", None)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    let error = refused.list_leases(APP, STREAM).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");

    // A server that accepts connections and never answers: a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let hanging = store(real_client(
        &format!("http://{address}"),
        Duration::from_millis(300),
    ))
    .await;
    let error = hanging.get(&key()).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(retryable, "{error}");
    assert_eq!(
        inner.and_then(|e| e.request_kind()),
        Some(RequestErrorKind::Transient)
    );
    let lease = Lease::unfenced(SHARD, "w");
    assert!(
        hanging
            .renew_lease(&key(), &lease)
            .await
            .unwrap_err()
            .is_retryable()
    );
    // The builder's table check is classified the same way.
    let error = DynamoDbCheckpointStore::builder(
        real_client(&format!("http://{address}"), Duration::from_millis(300)),
        APP,
        STREAM,
    )
    .build()
    .await
    .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    held.abort();
}

// ---------------------------------------------------------------------------
// Reading the KCL layout
// ---------------------------------------------------------------------------

#[tokio::test]
async fn kcl_items_are_read_as_checkpoints() {
    let mut whole = kcl_item(SEQ, 0, None, 3);
    whole.insert("wholeRecordCheckpoint".to_owned(), s(SEQ));
    let cases = [
        (None, None),
        (Some(kcl_item("TRIM_HORIZON", 0, Some("kcl"), 1)), None),
        (Some(kcl_item("LATEST", 0, None, 0)), None),
        (Some(kcl_item("AT_TIMESTAMP", 0, None, 0)), None),
        (
            Some(kcl_item("SHARD_END", 0, None, 7)),
            Some(Checkpoint::ShardEnd),
        ),
        // The KCL's (seq, 0) may be sub-record 0 of an aggregated record.
        (
            Some(kcl_item(SEQ, 0, Some("kcl"), 42)),
            Some(at(SEQ, Some(0))),
        ),
        (
            Some(kcl_item(SEQ, 5, Some("kcl"), 42)),
            Some(at(SEQ, Some(5))),
        ),
        (Some(whole), Some(at(SEQ, None))),
    ];
    for (item, expected) in cases {
        let rule = get_returns(item.clone());
        let store = store(client(&[&rule])).await;
        assert_eq!(store.get(&key()).await.unwrap(), expected, "{item:?}");
    }
}

#[tokio::test]
async fn malformed_items_are_permanent_errors_naming_the_attribute() {
    let rule = get_returns(Some(kcl_item("0x1F", 0, None, 0)));
    let store = store(client(&[&rule])).await;
    let error = store.get(&key()).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(!retryable);
    assert!(
        matches!(
            inner,
            Some(DynamoDbCheckpointError::MalformedItem {
                attribute: "checkpoint",
                ..
            })
        ),
        "{error}"
    );
}

#[tokio::test]
async fn keys_of_another_application_or_stream_are_config_errors() {
    let get = get_returns(None);
    let (update, _) = update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    let lease = Lease::unfenced(SHARD, "w");
    for other in [
        ShardKey::new("other-app", STREAM, SHARD),
        ShardKey::new(APP, "other-stream", SHARD),
    ] {
        let error = store.get(&other).await.unwrap_err();
        let Error::Config(message) = &error else {
            panic!("expected a config error, got {error:?}");
        };
        assert!(
            message.contains(APP) && message.contains(STREAM),
            "{message}"
        );
        assert!(matches!(
            store.set(&other, &at("1", None)).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.set_fenced(&other, &at("1", None), &lease).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.create_lease(&other, &[]).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.take_lease(&other, 0, "w").await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.renew_lease(&other, &lease).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.release_lease(&other, &lease).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.list_leases(&other.application, &other.stream).await,
            Err(Error::Config(_))
        ));
    }
    assert_eq!(get.num_calls(), 0);
    assert_eq!(update.num_calls(), 0);
}

// ---------------------------------------------------------------------------
// Checkpoint writes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_older_checkpoint_is_not_written() {
    let get = get_returns(Some(kcl_item("100", 2, None, 0)));
    let (update, _) = update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    // 99 < 100; (100, 1) < (100, 2); equal is not newer either.
    store.set(&key(), &at("99", None)).await.unwrap();
    store.set(&key(), &at("100", Some(1))).await.unwrap();
    store.set(&key(), &at("100", Some(2))).await.unwrap();
    // Numerically older, though larger as a string.
    store.set(&key(), &at("99999", None)).await.unwrap();
    assert_eq!(update.num_calls(), 1, "only 99999 > 100 is written");
}

#[tokio::test]
async fn a_newer_checkpoint_is_written_on_condition_of_what_was_read() {
    let mut stored = kcl_item("100", 0, None, 0);
    stored.insert("wholeRecordCheckpoint".to_owned(), s("100"));
    let get = get_returns(Some(stored));
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    store.set(&key(), &at(SEQ, None)).await.unwrap();
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.table_name(), Some(APP));
    assert_eq!(
        request.key().and_then(|k| k.get("leaseKey")),
        Some(&s(SHARD))
    );
    assert_eq!(
        request.update_expression(),
        Some(
            "SET #checkpoint = :checkpoint, #checkpointSubSequenceNumber = :subSequenceNumber, \
             #ownerSwitchesSinceCheckpoint = :zero, #leaseCounter = if_not_exists(#leaseCounter, :zero), \
             #wholeRecordCheckpoint = :checkpoint"
        )
    );
    assert_eq!(
        request.condition_expression(),
        Some(
            "#checkpoint = :expectedCheckpoint AND #checkpointSubSequenceNumber = :expectedSubSequenceNumber \
             AND #wholeRecordCheckpoint = :expectedWholeRecord"
        )
    );
    let values = request.expression_attribute_values().unwrap();
    assert_eq!(values.get(":checkpoint"), Some(&s(SEQ)));
    assert_eq!(values.get(":subSequenceNumber"), Some(&n(0)));
    assert_eq!(values.get(":expectedCheckpoint"), Some(&s("100")));
    assert_eq!(values.get(":expectedSubSequenceNumber"), Some(&n(0)));
    assert_eq!(values.get(":expectedWholeRecord"), Some(&s("100")));
    assert_eq!(
        request.return_values_on_condition_check_failure(),
        Some(&ReturnValuesOnConditionCheckFailure::AllOld)
    );
}

#[tokio::test]
async fn a_first_checkpoint_expects_no_checkpoint_and_writes_sub_records_without_marker() {
    let get = get_returns(None);
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    store.set(&key(), &at(SEQ, Some(0))).await.unwrap();
    let requests = seen.lock().unwrap();
    let request = &requests[0];
    assert_eq!(
        request.condition_expression(),
        Some(
            "attribute_not_exists(#checkpoint) AND attribute_not_exists(#checkpointSubSequenceNumber) \
             AND attribute_not_exists(#wholeRecordCheckpoint)"
        )
    );
    assert!(
        request
            .update_expression()
            .unwrap()
            .ends_with(" REMOVE #wholeRecordCheckpoint")
    );
}

#[tokio::test]
async fn a_write_that_lost_a_race_reads_again() {
    // Read 100, lose the conditional write, read 300 (someone wrote it): 200
    // is older now, so nothing more is written.
    let get = mock!(Client::get_item)
        .sequence()
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(kcl_item("100", 0, None, 0)))
                .build()
        })
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(kcl_item("300", 0, None, 0)))
                .build()
        })
        .build();
    let (update, _) = update_rule(|_, _| MockResponse::Error(condition_failed(None)));
    let store = store(client(&[&get, &update])).await;
    store.set(&key(), &at("200", None)).await.unwrap();
    assert_eq!(get.num_calls(), 2);
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn endless_contention_ends_in_a_retryable_error() {
    let get = get_returns(Some(kcl_item("100", 0, None, 0)));
    let (update, _) = update_rule(|_, _| MockResponse::Error(condition_failed(None)));
    let store = DynamoDbCheckpointStore::builder(client(&[&get, &update]), APP, STREAM)
        .check_table(false)
        .max_write_attempts(3)
        .build()
        .await
        .unwrap();
    let error = store.set(&key(), &at("200", None)).await.unwrap_err();
    let (retryable, inner) = classify(&error);
    assert!(retryable, "{error}");
    assert!(
        matches!(
            inner,
            Some(DynamoDbCheckpointError::Contention { attempts: 3, .. })
        ),
        "{error}"
    );
    assert_eq!(update.num_calls(), 3);
}

// ---------------------------------------------------------------------------
// Fenced writes and leases
// ---------------------------------------------------------------------------

fn lease(owner: &str, counter: u64) -> Lease {
    Lease {
        shard_id: SHARD.to_owned(),
        owner: owner.to_owned(),
        counter,
        expires_at: None,
    }
}

#[tokio::test]
async fn a_fenced_write_with_a_lost_lease_writes_nothing() {
    let get = get_returns(Some(kcl_item("100", 0, Some("thief"), 8)));
    let (update, _) = update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    for stale in [lease("me", 7), lease("thief", 7), lease("me", 8)] {
        let error = store
            .set_fenced(&key(), &at("200", None), &stale)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::LeaseLost { owner: Some(owner), .. } if owner == "thief"),
            "{error:?}"
        );
        // Also for an older checkpoint: the lease is checked first.
        assert!(matches!(
            store.set_fenced(&key(), &at("50", None), &stale).await,
            Err(Error::LeaseLost { .. })
        ));
    }
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn a_fenced_write_pins_owner_and_counter() {
    let get = get_returns(Some(kcl_item("100", 0, Some("me"), 8)));
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    store
        .set_fenced(&key(), &at("200", None), &lease("me", 8))
        .await
        .unwrap();
    let requests = seen.lock().unwrap();
    let request = &requests[0];
    assert!(
        request
            .condition_expression()
            .unwrap()
            .ends_with("AND #leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter"),
        "{:?}",
        request.condition_expression()
    );
    let values = request.expression_attribute_values().unwrap();
    assert_eq!(values.get(":expectedOwner"), Some(&s("me")));
    assert_eq!(values.get(":expectedCounter"), Some(&n(8)));
    // The checkpoint write never bumps the counter: the writer's lease stays valid.
    assert!(
        !request
            .update_expression()
            .unwrap()
            .contains("#leaseCounter + ")
    );
}

#[tokio::test]
async fn a_fenced_write_that_loses_the_lease_meanwhile_is_refused() {
    // Read: held by me. Then a takeover bumps the counter before my write.
    let get = mock!(Client::get_item)
        .sequence()
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(kcl_item("100", 0, Some("me"), 8)))
                .build()
        })
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(kcl_item("100", 0, Some("thief"), 9)))
                .build()
        })
        .build();
    let (update, _) = update_rule(|_, _| MockResponse::Error(condition_failed(None)));
    let store = store(client(&[&get, &update])).await;
    let error = store
        .set_fenced(&key(), &at("200", None), &lease("me", 8))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::LeaseLost { .. }), "{error:?}");
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn a_single_worker_writes_fenced_checkpoints_to_items_that_are_no_leases() {
    let get = get_returns(Some(kcl_item("100", 0, None, 0)));
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    store
        .set_fenced(
            &key(),
            &at("200", None),
            &Lease::unfenced(SHARD, "single-worker"),
        )
        .await
        .unwrap();
    let requests = seen.lock().unwrap();
    let condition = requests[0].condition_expression().unwrap();
    assert!(
        condition
            .ends_with("attribute_not_exists(#leaseOwner) AND #leaseCounter = :expectedCounter"),
        "{condition}"
    );
}

// ---------------------------------------------------------------------------
// Pending batches
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_pending_batch_is_one_update_fenced_by_owner_and_counter() {
    let get = get_returns(None);
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&get, &update])).await;
    assert!(store.keeps_pending_batches());
    let end = Position {
        sequence: SequenceNumber::parse(SEQ).unwrap(),
        sub_sequence: Some(3),
    };
    store
        .set_pending_batch(&key(), &end, &lease("me", 8))
        .await
        .unwrap();
    let whole = Position::new(SequenceNumber::parse(SEQ).unwrap());
    store
        .set_pending_batch(&key(), &whole, &lease("me", 8))
        .await
        .unwrap();
    // No read first: the pending batch replaces the earlier one, whatever it was.
    assert_eq!(get.num_calls(), 0);
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let request = &requests[0];
    assert_eq!(
        request.condition_expression(),
        Some(
            "(#leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter) OR \
             (attribute_not_exists(#leaseOwner) AND (attribute_not_exists(#leaseCounter) OR #leaseCounter = :zero))"
        )
    );
    let names = request.expression_attribute_names().unwrap();
    assert_eq!(
        names.get("#pendingBatchEnd").map(String::as_str),
        Some("pendingBatchEnd")
    );
    assert_eq!(
        names
            .get("#pendingBatchEndSubSequenceNumber")
            .map(String::as_str),
        Some("pendingBatchEndSubSequenceNumber")
    );
    // Never the KCL's own pending checkpoint, nor the checkpoint itself.
    assert!(
        names
            .values()
            .all(|name| !name.starts_with("pendingCheckpoint")),
        "{names:?}"
    );
    let update_expression = request.update_expression().unwrap();
    assert!(
        update_expression.starts_with("SET #pendingBatchEnd = :pendingBatchEnd, ")
            && update_expression
                .contains("#checkpoint = if_not_exists(#checkpoint, :initialCheckpoint)")
            && update_expression.ends_with(
                ", #pendingBatchEndSubSequenceNumber = :pendingBatchEndSubSequenceNumber"
            ),
        "{update_expression}"
    );
    let values = request.expression_attribute_values().unwrap();
    assert_eq!(values.get(":pendingBatchEnd"), Some(&s(SEQ)));
    assert_eq!(values.get(":pendingBatchEndSubSequenceNumber"), Some(&n(3)));
    assert_eq!(values.get(":expectedOwner"), Some(&s("me")));
    assert_eq!(values.get(":expectedCounter"), Some(&n(8)));
    assert_eq!(values.get(":initialCheckpoint"), Some(&s("TRIM_HORIZON")));
    assert_eq!(
        request.return_values_on_condition_check_failure(),
        Some(&ReturnValuesOnConditionCheckFailure::AllOld)
    );
    // A whole record: no sub-sequence number, so it never reads as sub-record 0.
    let whole_update = requests[1].update_expression().unwrap();
    assert!(
        whole_update.ends_with(" REMOVE #pendingBatchEndSubSequenceNumber"),
        "{whole_update}"
    );
    assert!(
        !requests[1]
            .expression_attribute_values()
            .unwrap()
            .contains_key(":pendingBatchEndSubSequenceNumber")
    );
}

#[tokio::test]
async fn a_pending_batch_with_a_lost_lease_is_lease_lost_naming_the_owner() {
    let (update, _) = update_rule(|_, _| {
        MockResponse::Error(condition_failed(Some(kcl_item("100", 0, Some("thief"), 9))))
    });
    let store = store(client(&[&update])).await;
    let end = Position::new(SequenceNumber::parse(SEQ).unwrap());
    let error = store
        .set_pending_batch(&key(), &end, &lease("me", 8))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::LeaseLost { owner: Some(owner), shard_id } if owner == "thief" && shard_id == SHARD),
        "{error:?}"
    );
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn pending_batches_are_read_from_their_own_attributes() {
    let mut whole = kcl_item("100", 0, Some("me"), 8);
    whole.insert("pendingBatchEnd".to_owned(), s(SEQ));
    let mut inside = whole.clone();
    inside.insert("pendingBatchEndSubSequenceNumber".to_owned(), n(0));
    let mut malformed = whole.clone();
    malformed.insert("pendingBatchEnd".to_owned(), n(5));
    let get = mock!(Client::get_item)
        .sequence()
        .output(|| GetItemOutput::builder().build())
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(kcl_item("100", 0, Some("me"), 8)))
                .build()
        })
        .output(move || {
            GetItemOutput::builder()
                .set_item(Some(whole.clone()))
                .build()
        })
        .output(move || {
            GetItemOutput::builder()
                .set_item(Some(inside.clone()))
                .build()
        })
        .output(move || {
            GetItemOutput::builder()
                .set_item(Some(malformed.clone()))
                .build()
        })
        .build();
    let store = store(client(&[&get])).await;
    // No item, and an item without a pending batch (a KCL lease).
    assert_eq!(store.pending_batch(&key()).await.unwrap(), None);
    assert_eq!(store.pending_batch(&key()).await.unwrap(), None);
    let sequence = SequenceNumber::parse(SEQ).unwrap();
    assert_eq!(
        store.pending_batch(&key()).await.unwrap(),
        Some(Position::new(sequence.clone()))
    );
    assert_eq!(
        store.pending_batch(&key()).await.unwrap(),
        Some(Position {
            sequence,
            sub_sequence: Some(0)
        })
    );
    let error = store.pending_batch(&key()).await.unwrap_err();
    let (retryable, source) = classify(&error);
    assert!(!retryable);
    assert!(
        matches!(source, Some(DynamoDbCheckpointError::MalformedItem { attribute, .. }) if *attribute == "pendingBatchEnd"),
        "{error:?}"
    );
}

#[tokio::test]
async fn pending_batches_of_another_application_are_config_errors() {
    let (update, _) = update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = store(client(&[&update])).await;
    let other = ShardKey::new("other-app", STREAM, SHARD);
    let end = Position::new(SequenceNumber::parse(SEQ).unwrap());
    assert!(matches!(
        store.set_pending_batch(&other, &end, &lease("me", 8)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        store.pending_batch(&other).await,
        Err(Error::Config(_))
    ));
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn take_lease_returns_the_new_counter_or_none() {
    let (update, seen) = update_rule(|call, _| match call {
        0 => MockResponse::Output(updated_counter(43)),
        _ => MockResponse::Error(condition_failed(None)),
    });
    let store = store(client(&[&update])).await;
    let taken = store.take_lease(&key(), 42, "me").await.unwrap();
    assert_eq!(taken, Some(lease("me", 43)));
    assert_eq!(store.take_lease(&key(), 42, "other").await.unwrap(), None);
    let requests = seen.lock().unwrap();
    assert_eq!(
        requests[0].condition_expression(),
        Some("#leaseCounter = :expectedCounter")
    );
    let values = requests[0].expression_attribute_values().unwrap();
    assert_eq!(values.get(":expectedCounter"), Some(&n(42)));
    assert_eq!(values.get(":owner"), Some(&s("me")));
}

#[tokio::test]
async fn renewing_a_lost_lease_names_the_new_owner() {
    let (update, seen) = update_rule(|call, _| match call {
        0 => MockResponse::Output(updated_counter(9)),
        _ => MockResponse::Error(condition_failed(Some(kcl_item("1", 0, Some("thief"), 12)))),
    });
    let store = store(client(&[&update])).await;
    let renewed = store.renew_lease(&key(), &lease("me", 8)).await.unwrap();
    assert_eq!(renewed, lease("me", 9));
    let error = store.renew_lease(&key(), &renewed).await.unwrap_err();
    assert!(
        matches!(&error, Error::LeaseLost { owner: Some(owner), shard_id } if owner == "thief" && shard_id == SHARD),
        "{error:?}"
    );
    let requests = seen.lock().unwrap();
    assert_eq!(
        requests[0].condition_expression(),
        Some("#leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter")
    );
}

#[tokio::test]
async fn releasing_frees_the_lease_and_a_lost_one_is_a_no_op() {
    let (update, seen) = update_rule(|call, _| match call {
        0 => MockResponse::Output(UpdateItemOutput::builder().build()),
        _ => MockResponse::Error(condition_failed(None)),
    });
    let store = store(client(&[&update])).await;
    store.release_lease(&key(), &lease("me", 8)).await.unwrap();
    store.release_lease(&key(), &lease("me", 8)).await.unwrap();
    let requests = seen.lock().unwrap();
    assert_eq!(
        requests[0].update_expression(),
        Some("REMOVE #leaseOwner SET #leaseCounter = #leaseCounter + :one")
    );
}

#[tokio::test]
async fn create_lease_fills_only_missing_attributes_and_children_start_at_trim_horizon() {
    let (update, seen) =
        update_rule(|_, _| MockResponse::Output(UpdateItemOutput::builder().build()));
    let store = DynamoDbCheckpointStore::builder(client(&[&update]), APP, STREAM)
        .check_table(false)
        .new_lease_position(kinesis_connectors_core::InitialPosition::Latest)
        .build()
        .await
        .unwrap();
    store
        .create_lease(
            &key(),
            &[
                "shardId-000000000002".to_owned(),
                "shardId-000000000001".to_owned(),
            ],
        )
        .await
        .unwrap();
    store.create_lease(&key(), &[]).await.unwrap();
    let requests = seen.lock().unwrap();
    let request = &requests[0];
    assert_eq!(request.condition_expression(), None);
    let values = request.expression_attribute_values().unwrap();
    // A child of a resharding starts at its first record, whatever the
    // consumer's initial position; a shard without parents gets that position.
    assert_eq!(values.get(":initialCheckpoint"), Some(&s("TRIM_HORIZON")));
    let root = requests[1].expression_attribute_values().unwrap();
    assert_eq!(root.get(":initialCheckpoint"), Some(&s("LATEST")));
    assert_eq!(
        values.get(":parentShardIds"),
        Some(&AttributeValue::Ss(vec![
            "shardId-000000000001".to_owned(),
            "shardId-000000000002".to_owned()
        ]))
    );
    assert!(
        request
            .update_expression()
            .unwrap()
            .contains("#leaseCounter = if_not_exists(#leaseCounter, :zero)")
    );
}

#[tokio::test]
async fn list_leases_pages_through_a_consistent_scan() {
    let scan = mock!(Client::scan)
        .match_requests(|input| input.consistent_read() == Some(true))
        .sequence()
        .output(|| {
            let mut child = kcl_item("TRIM_HORIZON", 0, None, 0);
            child.insert("leaseKey".to_owned(), s("shardId-000000000002"));
            child.insert(
                "parentShardIds".to_owned(),
                AttributeValue::Ss(vec!["shardId-000000000000".to_owned()]),
            );
            ScanOutput::builder()
                .items(child)
                .last_evaluated_key("leaseKey", s("shardId-000000000002"))
                .build()
        })
        .output(|| {
            ScanOutput::builder()
                .items(kcl_item("SHARD_END", 0, Some("w1"), 17))
                .build()
        })
        .build();
    let store = store(client(&[&scan])).await;
    let leases = store.list_leases(APP, STREAM).await.unwrap();
    assert_eq!(scan.num_calls(), 2);
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].shard_id, SHARD);
    assert_eq!(leases[0].owner.as_deref(), Some("w1"));
    assert_eq!(leases[0].counter, 17);
    assert_eq!(leases[0].checkpoint, Some(Checkpoint::ShardEnd));
    assert_eq!(leases[1].shard_id, "shardId-000000000002");
    assert_eq!(leases[1].owner, None);
    assert_eq!(leases[1].checkpoint, None);
    assert_eq!(leases[1].parent_shard_ids, vec![SHARD.to_owned()]);
}
