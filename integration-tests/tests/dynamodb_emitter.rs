//! `DynamoDbEmitter` against the local stack: a pipeline from a 2-shard
//! Kinesis stream (kinesis-local) of JSON events into a DynamoDB table
//! (moto), a restart that resumes from its checkpoints and a replay from
//! TRIM_HORIZON that create no extra items, an item the table refuses
//! rejected alone, the
//! testkit's emitter conformance suite, and conditional puts.
//!
//! Run with `cargo xtask it dynamodb_emitter` (every test name starts with
//! `dynamodb_emitter_`, so the filter selects them). Every test creates its own
//! stream and table, so they may run in parallel with the other tests.
//!
//! What moto cannot show (it never answers with `UnprocessedItems`, never
//! throttles and accepts 26-item batches) is covered by the mock-based tests
//! in `crates/connectors-dynamodb/tests/mocked.rs`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, Select, TableStatus,
};
use integration_tests::consumer::fast;
use integration_tests::{
    PutOptions, RunningConsumer, create_stream, dynamodb_client, kinesis_client, put_records,
    unique_name, wait_for_progress,
};
use kinesis_connectors_core::{
    BadRecordPolicy, Batch, BufferLimits, EmitOutcome, Emitter, JsonTransformer,
    MemoryCheckpointStore, Pipeline, ShardContext, StreamConsumer, async_trait,
};
use kinesis_connectors_dynamodb::{ConditionalPut, DynamoDbEmitter};
use kinesis_connectors_kinesis::PollingSource;
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, batch, emitter_conformance, shard_context,
};
use serde::{Deserialize, Serialize};

/// The checkpoint namespace of every consumer here.
const APP: &str = "dynamodb-emitter-it";
/// The bound of every wait for the table to reach the expected state.
const WAIT: Duration = Duration::from_secs(120);
/// Records per `PutRecords` call.
const PUT_BATCH: usize = 100;
/// How the producer writes: `PUT_BATCH` records per call, 30 attempts.
const PUT_OPTIONS: PutOptions = PutOptions {
    per_call: PUT_BATCH,
    max_attempts: 30,
};

/// One JSON event on the stream, and one item in the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Event {
    id: String,
    version: u64,
    user: String,
    amount_cents: i64,
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl Event {
    fn new(n: u64, version: u64) -> Self {
        Self {
            id: format!("evt-{n:05}"),
            version,
            user: format!("user-{}", n % 37),
            amount_cents: (n as i64 * 7919) % 100_000 - 50_000,
            tags: (0..n % 3).map(|t| format!("tag-{t}")).collect(),
            note: (version > 1).then(|| format!("updated to v{version}")),
        }
    }
}

// ---------------------------------------------------------------------------
// DynamoDB helpers
// ---------------------------------------------------------------------------

/// Creates an on-demand table keyed by `id` (string) and waits (at most
/// 30 s) until it is `ACTIVE`.
async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .with_context(|| format!("CreateTable {table}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("DescribeTable {table}"))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "table {table} is still {status:?} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many items the table holds: Scan with `Select::Count`, every page.
async fn count_items(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<usize> {
    let mut pages = client
        .scan()
        .table_name(table)
        .select(Select::Count)
        .consistent_read(true)
        .into_paginator()
        .send();
    let mut total = 0;
    while let Some(page) = pages.next().await {
        total += usize::try_from(page.with_context(|| format!("Scan {table}"))?.count)?;
    }
    Ok(total)
}

/// Every item of the table, by id.
async fn scan_events(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<BTreeMap<String, Event>> {
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    let mut events = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let items = page
            .with_context(|| format!("Scan {table}"))?
            .items
            .unwrap_or_default();
        for event in serde_dynamo::aws_sdk_dynamodb_1::from_items::<Event>(items)? {
            events.insert(event.id.clone(), event);
        }
    }
    Ok(events)
}

/// Waits until the table holds exactly `expected`; fails after [`WAIT`]
/// saying how it differs.
async fn wait_for_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    expected: &BTreeMap<String, Event>,
) -> Duration {
    let started = Instant::now();
    loop {
        let actual = scan_events(client, table).await.unwrap();
        if &actual == expected {
            return started.elapsed();
        }
        if started.elapsed() > WAIT {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|id| !actual.contains_key(*id))
                .take(10)
                .collect();
            let extra: Vec<&String> = actual
                .keys()
                .filter(|id| !expected.contains_key(*id))
                .take(10)
                .collect();
            let different: Vec<(&Event, &Event)> = expected
                .iter()
                .filter_map(|(id, e)| actual.get(id).filter(|a| *a != e).map(|a| (e, a)))
                .take(5)
                .collect();
            panic!(
                "table {table} did not reach the expected {} items within {WAIT:?}: it holds {}; \
                 missing e.g. {missing:?}; unexpected e.g. {extra:?}; different (expected, actual) e.g. {different:#?}",
                expected.len(),
                actual.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------

fn json(event: &Event) -> (String, Vec<u8>) {
    (event.id.clone(), serde_json::to_vec(event).unwrap())
}

// ---------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------

/// The DynamoDB emitter, counting the items of every batch it delivered.
struct Counting {
    inner: DynamoDbEmitter<Event>,
    items: AtomicUsize,
}

#[async_trait]
impl Emitter<Event> for Counting {
    async fn emit(&self, batch: &Batch<Event>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let outcome = self.inner.emit(batch).await?;
        self.items.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(outcome)
    }
}

fn counting_emitter(client: &aws_sdk_dynamodb::Client, table: &str) -> Arc<Counting> {
    Arc::new(Counting {
        inner: DynamoDbEmitter::builder(client.clone(), table)
            .key_attributes(["id"])
            .max_in_flight(4)
            .build()
            .expect("emitter configuration"),
        items: AtomicUsize::new(0),
    })
}

/// Starts a consumer of `stream` from TRIM_HORIZON (the store is empty)
/// with small batches, a 1 s age limit and short idle delays.
fn start(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    store: MemoryCheckpointStore,
    emitter: Arc<Counting>,
) -> RunningConsumer {
    let limits = BufferLimits::default()
        .with_max_records(300)
        .with_max_age(Duration::from_secs(1));
    let consumer = fast(StreamConsumer::builder(
        APP,
        stream,
        Arc::new(PollingSource::new(kinesis.clone())),
        Arc::new(store),
        move |_: &ShardContext| {
            Pipeline::builder(JsonTransformer::<Event>::new(), emitter.clone())
                .buffer_limits(limits)
                // The bad JSON record and the oversized item are skipped and counted.
                .bad_records(BadRecordPolicy::Skip)
                .build()
        },
    ))
    .build()
    .expect("consumer configuration");
    RunningConsumer::start(consumer)
}

/// Waits (at most [`WAIT`]) until `counter` reaches `target`.
async fn wait_for_count(what: &str, counter: &AtomicUsize, target: usize) -> Duration {
    wait_for_progress(what, WAIT, Duration::from_millis(200), || async {
        let seen = counter.load(Ordering::SeqCst);
        Ok((seen >= target, format!("{seen} of {target} items emitted")))
    })
    .await
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Events written: 1,000 fresh ones, then 100 updates (version 2) of every
/// tenth one, one record that is not JSON and one event over DynamoDB's
/// 400 KB item limit. The table must end with one item per id, holding its
/// last version; the bad record and the oversized item are skipped. While
/// the consumer is stopped, 40 more updates (version 3) arrive; a restart
/// with the same checkpoint store emits exactly those 40 and nothing twice.
/// Finally a consumer with an empty checkpoint store replays the whole stream
/// from TRIM_HORIZON: the table is unchanged afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_emitter_pipeline_from_two_shards_restart_and_replay_add_no_items() {
    let total = Instant::now();
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("dyn-emitter");
    let table = unique_name("dyn-emitter");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    create_table(&dynamodb, &table).await.unwrap();

    let fresh: Vec<Event> = (0..1_000).map(|n| Event::new(n, 1)).collect();
    let updates: Vec<Event> = (0..1_000).step_by(10).map(|n| Event::new(n, 2)).collect();
    let mut oversized = Event::new(5_000, 1);
    oversized.note = Some("x".repeat(420 * 1024));
    let mut expected: BTreeMap<String, Event> = BTreeMap::new();
    for event in fresh.iter().chain(&updates) {
        expected.insert(event.id.clone(), event.clone());
    }
    // Items the transformer produces in the first run: all events, the
    // oversized one included.
    let first_items = fresh.len() + updates.len() + 1;

    let produced = Instant::now();
    let mut first_phase: Vec<(String, Vec<u8>)> = fresh.iter().map(json).collect();
    first_phase.push(("not-json".to_owned(), b"{this is not json".to_vec()));
    put_records(&kinesis, &stream, first_phase, PUT_OPTIONS)
        .await
        .unwrap();
    // Updates go after every fresh event was accepted: same key, same shard, later.
    put_records(&kinesis, &stream, updates.iter().map(json), PUT_OPTIONS)
        .await
        .unwrap();
    put_records(&kinesis, &stream, vec![json(&oversized)], PUT_OPTIONS)
        .await
        .unwrap();
    let produced = produced.elapsed();

    // First run.
    let store = MemoryCheckpointStore::new();
    let first_emitter = counting_emitter(&dynamodb, &table);
    let running = start(&kinesis, &stream, store.clone(), Arc::clone(&first_emitter));
    let filled = wait_for_table(&dynamodb, &table, &expected).await;
    wait_for_count("first run", &first_emitter.items, first_items).await;
    let report = running.stop().await;
    let failed = report.totals().records_failed;
    assert_eq!(failed, 2, "the bad JSON record and the oversized item");
    assert_eq!(report.shards.len(), 2, "both shards ran");
    let stats = first_emitter.inner.stats();
    assert_eq!(stats.items_rejected, 1, "{stats:?}");
    assert_eq!(
        count_items(&dynamodb, &table).await.unwrap(),
        expected.len()
    );

    // Restart with the same checkpoint store after more updates arrived:
    // only those are emitted (a graceful stop checkpointed everything).
    let later: Vec<Event> = (0..1_000).step_by(25).map(|n| Event::new(n, 3)).collect();
    for event in &later {
        expected.insert(event.id.clone(), event.clone());
    }
    put_records(&kinesis, &stream, later.iter().map(json), PUT_OPTIONS)
        .await
        .unwrap();
    let restart_emitter = counting_emitter(&dynamodb, &table);
    let running = start(&kinesis, &stream, store, Arc::clone(&restart_emitter));
    let resumed = wait_for_table(&dynamodb, &table, &expected).await;
    wait_for_count("restart", &restart_emitter.items, later.len()).await;
    let report = running.stop().await;
    assert_eq!(
        restart_emitter.items.load(Ordering::SeqCst),
        later.len(),
        "the restart emitted only what arrived while it was stopped"
    );
    assert_eq!(report.totals().records_failed, 0, "nothing failed again");
    assert_eq!(
        count_items(&dynamodb, &table).await.unwrap(),
        expected.len(),
        "the restart created extra items"
    );
    let emitted_items = first_items + later.len();

    // Replay: a fresh checkpoint store, so both shards start at TRIM_HORIZON.
    let replay_emitter = counting_emitter(&dynamodb, &table);
    let running = start(
        &kinesis,
        &stream,
        MemoryCheckpointStore::new(),
        Arc::clone(&replay_emitter),
    );
    let replayed = wait_for_count("replay", &replay_emitter.items, emitted_items).await;
    running.stop().await;
    assert_eq!(
        replay_emitter.items.load(Ordering::SeqCst),
        emitted_items,
        "the replay emitted the whole stream once"
    );
    assert_eq!(
        count_items(&dynamodb, &table).await.unwrap(),
        expected.len(),
        "the replay created extra items"
    );
    assert_eq!(
        scan_events(&dynamodb, &table).await.unwrap(),
        expected,
        "the replay left other values"
    );
    eprintln!(
        "{} records produced in {produced:?}; table filled in {filled:?}; restart caught up in {resumed:?}; replay of {emitted_items} items in {replayed:?}; total {:?}",
        emitted_items + 1,
        total.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_emitter_conformance_against_the_table() {
    let client = dynamodb_client().await;
    let table = unique_name("dyn-conformance");
    create_table(&client, &table).await.unwrap();
    let emitter = DynamoDbEmitter::<Event>::builder(client.clone(), &table)
        .key_attributes(["id"])
        .build()
        .unwrap();
    let started = Instant::now();
    let suite =
        EmitterConformance::new(&emitter, |i| Event::new(i as u64, 1)).delivered_count(|| {
            let client = client.clone();
            let table = table.clone();
            Box::pin(async move { count_items(&client, &table).await.unwrap() })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    eprintln!("conformance suite on moto in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_emitter_conditional_puts_keep_the_newest_version() {
    let client = dynamodb_client().await;
    let table = unique_name("dyn-conditional");
    create_table(&client, &table).await.unwrap();
    let emitter = DynamoDbEmitter::<Event>::builder(client.clone(), &table)
        .key_attributes(["id"])
        .conditional_put(ConditionalPut::newer_version("version"))
        .build()
        .unwrap();
    let context = kinesis_connectors_testkit::shard_context("shardId-000000000000");
    let a = |version| Event::new(1, version);
    let b = |version| Event::new(2, version);

    let first = kinesis_connectors_testkit::batch(context.clone(), vec![a(2), b(1)], 10);
    let outcome = emitter.emit(&first).await.unwrap();
    assert!(outcome.rejected.is_empty());
    // a: v1 is older, v3 newer; b: v1 again is not newer; a v2 after v3 is older.
    let second =
        kinesis_connectors_testkit::batch(context.clone(), vec![a(1), a(3), b(1), a(2)], 20);
    let outcome = emitter.emit(&second).await.unwrap();
    assert!(outcome.rejected.is_empty());

    let stored = scan_events(&client, &table).await.unwrap();
    let versions: Vec<(&str, u64)> = stored
        .values()
        .map(|e| (e.id.as_str(), e.version))
        .collect();
    assert_eq!(versions, [("evt-00001", 3), ("evt-00002", 1)]);
    let stats = emitter.stats();
    assert_eq!(
        (stats.items_written, stats.stale_skipped),
        (3, 3),
        "{stats:?}"
    );
}

/// A custom mapper gives item 3 a number where the table's key is a string:
/// the local checks cannot know the table's key types, and the table refuses
/// the item (`ValidationException`, type mismatch for key). The emitter
/// rejects that item alone, for the bad-record policy, and writes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_emitter_an_item_the_table_refuses_is_rejected_alone() {
    let client = dynamodb_client().await;
    let table = unique_name("dyn-refused");
    create_table(&client, &table).await.unwrap();
    let emitter = DynamoDbEmitter::<u64>::builder_with_mapper(client.clone(), &table, |n| {
        let id = if *n == 3 {
            AttributeValue::N(n.to_string())
        } else {
            AttributeValue::S(format!("evt-{n:05}"))
        };
        Ok(HashMap::from([
            ("id".to_owned(), id),
            ("n".to_owned(), AttributeValue::N(n.to_string())),
        ]))
    })
    .key_attributes(["id"])
    .build()
    .unwrap();

    let outcome = emitter
        .emit(&batch(
            shard_context("shardId-000000000000"),
            (0..10).collect(),
            1,
        ))
        .await
        .unwrap();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![3], "{:?}", outcome.rejected);
    let reason = &outcome.rejected[0].reason;
    assert!(reason.contains("ValidationException"), "{reason}");
    assert!(reason.contains(&table), "{reason}");
    assert_eq!(count_items(&client, &table).await.unwrap(), 9);
    assert_eq!(emitter.stats().items_rejected, 1);
}
