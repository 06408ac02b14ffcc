//! The core consumer (`StreamConsumer` with `PollingSource`, and again with
//! the fan-out `FanOutSource`) against the local Kinesis of the stack
//! (kinesis-local, or LocalStack's): a clean run delivers every record
//! exactly once in per-key order, a restart from the checkpoint store loses
//! nothing and replays only what was delivered but not checkpointed, and
//! resharding (split, then merge) while records are written loses nothing and
//! keeps every partition key in order across parent and child shards.
//!
//! Run with `cargo xtask it core_consumer`. Every test uses its own stream, so
//! they may run in parallel with the other integration tests.
//!
//! Each record's data is `"<id> <partition key> <counter>"`: `id` is unique in
//! the stream, `counter` increases per partition key in write order. Records
//! are written with `PutRecords` (the emulator takes ~450 records/s); an entry
//! the service refused is replaced by a fresh record (new id, next counter of
//! its key), so the counters of what was written still increase per key.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use integration_tests::consumer::{
    Retrieval, STOP_WAIT, Utf8ConsumerSpec, assert_no_failures, utf8_consumer,
};
use integration_tests::{RunningConsumer, create_stream, kinesis_client, unique_name, wait_until};
use kinesis_connectors_core::{
    BadRecordPolicy, Batch, BufferLimits, CancellationToken, Checkpoint, EmitOutcome, Emitter,
    MemoryCheckpointStore, Position, SequenceNumber, ShardFailurePolicy, ShardKey, ShardOutcome,
    StreamConsumer, StreamReport, Utf8Transformer, async_trait,
};
use kinesis_connectors_testkit::{RecordedBatch, RecordingEmitter};
use tokio::task::JoinHandle;

/// The checkpoint namespace of every consumer here.
const APP: &str = "core-consumer-it";
/// The bound of every wait for records to be emitted.
const WAIT: Duration = Duration::from_secs(120);
/// Records per `PutRecords` call.
const PUT_BATCH: usize = 100;
/// At most one `PutRecords` call per `PACE` in paced writing (≤ 400 records/s).
const PACE: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------
// Records and the producer
// ---------------------------------------------------------------------------

/// What a record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Payload {
    id: u64,
    key: String,
    counter: u64,
}

impl Payload {
    fn encode(&self) -> String {
        format!("{} {} {}", self.id, self.key, self.counter)
    }

    fn parse(text: &str) -> Self {
        let mut parts = text.split(' ');
        let (Some(id), Some(key), Some(counter), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("record data `{text}` is not `<id> <key> <counter>`");
        };
        Self {
            id: id.parse().expect("id"),
            key: key.to_owned(),
            counter: counter.parse().expect("counter"),
        }
    }
}

/// A record the service accepted, and where it went.
#[derive(Debug, Clone)]
struct Written {
    payload: Payload,
    shard_id: String,
    sequence: SequenceNumber,
}

/// Writes records with `PutRecords`, spreading them over `keys` partition
/// keys, and remembers every record the service accepted.
struct Producer {
    client: aws_sdk_kinesis::Client,
    stream: String,
    keys: usize,
    next_id: u64,
    counters: HashMap<String, u64>,
    written: Vec<Written>,
    /// Entries the service refused (replaced by fresh records).
    refused: usize,
}

impl Producer {
    fn new(client: aws_sdk_kinesis::Client, stream: &str, keys: usize) -> Self {
        Self {
            client,
            stream: stream.to_owned(),
            keys,
            next_id: 0,
            counters: HashMap::new(),
            written: Vec::new(),
            refused: 0,
        }
    }

    /// A new record for `key` (default: the next key round robin).
    fn fresh(&mut self, key: Option<String>) -> Payload {
        let id = self.next_id;
        self.next_id += 1;
        let key = key.unwrap_or_else(|| format!("pk-{:03}", id % self.keys as u64));
        let counter = self.counters.entry(key.clone()).or_default();
        *counter += 1;
        Payload {
            id,
            key,
            counter: *counter,
        }
    }

    /// Writes `count` new records, `PUT_BATCH` per `PutRecords` call.
    async fn put(&mut self, count: usize) -> Result<()> {
        let mut left = count;
        while left > 0 {
            let n = left.min(PUT_BATCH);
            let batch = (0..n).map(|_| self.fresh(None)).collect();
            self.put_batch(batch).await?;
            left -= n;
        }
        Ok(())
    }

    /// Like [`put`](Self::put), at most `PUT_BATCH` records per `PACE`, so
    /// the records keep coming for a predictable time.
    async fn put_paced(&mut self, count: usize) -> Result<()> {
        let mut left = count;
        let mut next = tokio::time::Instant::now();
        while left > 0 {
            tokio::time::sleep_until(next).await;
            next += PACE;
            let n = left.min(PUT_BATCH);
            self.put(n).await?;
            left -= n;
        }
        Ok(())
    }

    /// Writes one batch; refused entries are replaced by fresh records of the
    /// same key and written again, until every entry is accepted.
    async fn put_batch(&mut self, mut pending: Vec<Payload>) -> Result<()> {
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            ensure!(
                attempt <= 30,
                "PutRecords to {} kept failing ({} entries left)",
                self.stream,
                pending.len()
            );
            let entries = pending
                .iter()
                .map(|p| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(p.encode()))
                        .partition_key(&p.key)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(output) => output,
                // A service error means the request was refused as a whole
                // (throttled, stream updating): nothing was written.
                Err(SdkError::ServiceError(error)) => {
                    eprintln!(
                        "PutRecords refused ({:?}); retrying",
                        error.err().meta().code()
                    );
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    continue;
                }
                Err(error) => bail!("PutRecords: {}", DisplayErrorContext(error)),
            };
            ensure!(
                output.records().len() == pending.len(),
                "PutRecords answered {} entries for {}",
                output.records().len(),
                pending.len()
            );
            let mut refused = Vec::new();
            for (payload, entry) in pending.iter().zip(output.records()) {
                match (
                    entry.shard_id(),
                    entry.sequence_number(),
                    entry.error_code(),
                ) {
                    (Some(shard_id), Some(sequence), None) => self.written.push(Written {
                        payload: payload.clone(),
                        shard_id: shard_id.to_owned(),
                        sequence: SequenceNumber::parse(sequence)?,
                    }),
                    _ => refused.push(payload.key.clone()),
                }
            }
            self.refused += refused.len();
            pending = refused
                .into_iter()
                .map(|key| self.fresh(Some(key)))
                .collect();
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
        Ok(())
    }

    /// Writes `PUT_BATCH` records per `PACE` until `stop` fires.
    async fn put_until(mut self, stop: CancellationToken) -> Result<Self> {
        let mut next = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            tokio::time::sleep_until(next).await;
            next += PACE;
            self.put(PUT_BATCH).await?;
        }
        Ok(self)
    }

    fn ids(&self) -> HashSet<u64> {
        self.written.iter().map(|w| w.payload.id).collect()
    }
}

// ---------------------------------------------------------------------------
// The consumer
// ---------------------------------------------------------------------------

/// A consumer of `stream` with a short idle delay, a small age limit and a
/// 1 s discovery interval, so the tests finish fast.
fn consumer(
    client: &aws_sdk_kinesis::Client,
    retrieval: &Retrieval,
    stream: &str,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
    max_records: usize,
) -> StreamConsumer<Utf8Transformer> {
    utf8_consumer(Utf8ConsumerSpec {
        kinesis: client,
        retrieval: retrieval.clone(),
        application: APP,
        stream,
        store: Arc::new(store.clone()),
        emitter,
        limits: BufferLimits::default()
            .with_max_records(max_records)
            .with_max_age(Duration::from_secs(1)),
        // Every record here is valid UTF-8: a bad one is a bug, stop loudly.
        bad_records: BadRecordPolicy::Stop,
        on_shard_failure: ShardFailurePolicy::default(),
    })
}

/// After a graceful stop every record a shard task read was emitted (the
/// buffer was flushed; nothing is filtered here).
fn assert_all_read_emitted(report: &StreamReport) {
    for shard in &report.shards {
        assert_eq!(
            shard.stats.records_read, shard.stats.records_emitted,
            "shard {} read {} records but emitted {} before stopping: {:?}",
            shard.shard_id, shard.stats.records_read, shard.stats.records_emitted, shard.stats
        );
    }
}

/// Records each batch at once (the sink has it), then waits `ack_delay`
/// before reporting success, like a sink whose acknowledgement is slow.
/// While it waits, the batch is "in flight": delivered, not yet
/// checkpointed; a consumer killed then must replay it after a restart.
/// [`hold`](Self::hold) keeps every acknowledgement waiting, so a test can
/// kill the consumer while batches are surely in flight.
#[derive(Clone)]
struct SlowAck {
    recording: RecordingEmitter<String>,
    ack_delay: Duration,
    /// Shard id → `first` of the batch delivered and not yet acknowledged.
    in_flight: Arc<Mutex<HashMap<String, Position>>>,
    held: Arc<AtomicBool>,
}

impl SlowAck {
    fn new(ack_delay: Duration) -> Self {
        Self {
            recording: RecordingEmitter::new(),
            ack_delay,
            in_flight: Arc::default(),
            held: Arc::default(),
        }
    }

    fn in_flight(&self) -> HashMap<String, Position> {
        self.in_flight.lock().unwrap().clone()
    }

    /// From now on no batch is acknowledged (emits wait forever).
    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Emitter<String> for SlowAck {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        // Recording and marking happen in one poll: no abort in between.
        let outcome = self.recording.emit(batch).await?;
        self.in_flight
            .lock()
            .unwrap()
            .insert(batch.context.shard_id.to_string(), batch.first.clone());
        tokio::time::sleep(self.ack_delay).await;
        while self.held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.in_flight
            .lock()
            .unwrap()
            .remove(&*batch.context.shard_id);
        Ok(outcome)
    }

    async fn shutdown(&self) -> kinesis_connectors_core::Result<()> {
        self.recording.shutdown().await
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Every emitted item, in emit order, with the shard it came from.
fn emitted(batches: &[RecordedBatch<String>]) -> Vec<(String, Payload)> {
    batches
        .iter()
        .flat_map(|batch| {
            batch
                .items
                .iter()
                .zip(&batch.sources)
                .map(move |(item, source)| {
                    let payload = Payload::parse(item);
                    assert_eq!(
                        payload.key, source.partition_key,
                        "record {} came back with another partition key",
                        payload.id
                    );
                    (batch.context.shard_id.to_string(), payload)
                })
        })
        .collect()
}

/// Waits until every id in `expected` is among `emitted()`; panics after
/// `WAIT` saying how many records are missing.
async fn wait_for_all(
    what: &str,
    expected: &HashSet<u64>,
    emitted: impl Fn() -> HashSet<u64>,
) -> Duration {
    let started = Instant::now();
    loop {
        let seen = emitted();
        let missing: Vec<u64> = expected.difference(&seen).copied().collect();
        if missing.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > WAIT {
            let mut sample = missing.clone();
            sample.sort_unstable();
            sample.truncate(20);
            panic!(
                "{what}: {} of {} records were not emitted within {WAIT:?} (first missing ids: {sample:?})",
                missing.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Distinct ids among `items`.
fn ids(items: &[(String, Payload)]) -> HashSet<u64> {
    items.iter().map(|(_, p)| p.id).collect()
}

/// How many times each id was emitted, for ids emitted more than once.
fn duplicates(items: &[(String, Payload)]) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, payload) in items {
        *counts.entry(payload.id).or_default() += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

/// Per partition key, counters must strictly increase in emit order.
fn assert_key_order(what: &str, items: &[(String, Payload)]) {
    let mut last: HashMap<&str, (u64, &str)> = HashMap::new();
    let mut violations = Vec::new();
    for (shard, payload) in items {
        if let Some((previous, previous_shard)) = last.get(payload.key.as_str())
            && payload.counter <= *previous
        {
            violations.push(format!(
                "key {}: counter {} (shard {shard}) emitted after {previous} (shard {previous_shard})",
                payload.key, payload.counter
            ));
        }
        last.insert(&payload.key, (payload.counter, shard));
    }
    assert!(
        violations.is_empty(),
        "{what}: {} records out of per-key order, e.g. {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}

/// Per shard, each batch must start after the previous one ended.
fn assert_shard_order(what: &str, batches: &[RecordedBatch<String>]) {
    let mut last: HashMap<&str, &Position> = HashMap::new();
    for batch in batches {
        let shard = &*batch.context.shard_id;
        assert!(
            batch.first <= batch.last,
            "{what}: batch {batch:?} is reversed"
        );
        if let Some(previous) = last.get(shard) {
            assert!(
                batch.first > **previous,
                "{what}: shard {shard} emitted {}..={} after {previous}",
                batch.first,
                batch.last
            );
        }
        last.insert(shard, &batch.last);
    }
}

/// Every id emitted must have been written (nothing invented or corrupted).
fn assert_known(what: &str, emitted: &HashSet<u64>, written: &HashSet<u64>) {
    let unknown: Vec<&u64> = emitted.difference(written).take(20).collect();
    assert!(
        unknown.is_empty(),
        "{what}: emitted ids that were never written: {unknown:?}"
    );
}

/// The position of the last record written to each shard.
fn last_written(written: &[Written]) -> HashMap<String, Position> {
    let mut last: HashMap<String, Position> = HashMap::new();
    for w in written {
        let position = Position::new(w.sequence.clone());
        match last.get(&w.shard_id) {
            Some(p) if *p >= position => {}
            _ => {
                last.insert(w.shard_id.clone(), position);
            }
        }
    }
    last
}

fn checkpoints(store: &MemoryCheckpointStore, stream: &str) -> HashMap<String, Checkpoint> {
    store
        .snapshot()
        .into_iter()
        .filter(|(key, _)| key.application == APP && key.stream == stream)
        .map(|(key, checkpoint)| (key.shard_id, checkpoint))
        .collect()
}

// ---------------------------------------------------------------------------
// Kinesis control plane
// ---------------------------------------------------------------------------

/// A stream of this test run, deleted when dropped (also when the test
/// fails): the emulator allows 50 open shards per account, so streams must
/// not pile up on a shared stack.
struct TestStream {
    name: String,
}

impl TestStream {
    /// Creates a stream named after `prefix` and waits until it is ACTIVE.
    async fn create(client: &aws_sdk_kinesis::Client, prefix: &str, shards: i32) -> Self {
        let name = unique_name(prefix);
        create_stream(client, &name, shards).await.unwrap();
        Self { name }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // `drop` cannot await: a thread with its own runtime (and its own
        // client, whose connections belong to that runtime) deletes it.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = kinesis_client().await;
                let request = client
                    .delete_stream()
                    .stream_name(&name)
                    .enforce_consumer_deletion(true)
                    .send();
                match tokio::time::timeout(Duration::from_secs(10), request).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        eprintln!("deleting stream {name}: {}", DisplayErrorContext(error));
                    }
                    Err(_) => eprintln!("deleting stream {name}: no answer within 10 s"),
                }
            });
        })
        .join();
        if deleted.is_err() {
            eprintln!("deleting a test stream panicked");
        }
    }
}

/// An open shard and its hash key range.
#[derive(Debug, Clone)]
struct OpenShard {
    id: String,
    start: u128,
    end: u128,
}

async fn open_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<OpenShard>> {
    let output = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| anyhow!("ListShards {stream}: {}", DisplayErrorContext(e)))?;
    ensure!(output.next_token().is_none(), "more shards than one page");
    let mut open = Vec::new();
    for shard in output.shards() {
        let closed = shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some();
        if closed {
            continue;
        }
        let range = shard.hash_key_range().context("shard without hash range")?;
        open.push(OpenShard {
            id: shard.shard_id().to_owned(),
            start: range.starting_hash_key().parse()?,
            end: range.ending_hash_key().parse()?,
        });
    }
    open.sort_by_key(|s| s.start);
    Ok(open)
}

async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| anyhow!("DescribeStreamSummary {stream}: {}", DisplayErrorContext(e)))?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "stream {stream} still {status:?} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. A clean run
// ---------------------------------------------------------------------------

/// 4 shards, 5,000 records written while the consumer runs: every record is
/// emitted exactly once, from the shard it was written to, each shard's
/// batches in sequence order and each key's records in write order; after
/// the graceful stop every shard's checkpoint is its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_clean_run_emits_every_record_once_in_order() {
    clean_run(false).await;
}

/// The same with enhanced fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_fan_out_clean_run_emits_every_record_once_in_order() {
    clean_run(true).await;
}

async fn clean_run(fan_out: bool) {
    const SHARDS: usize = 4;
    const RECORDS: usize = 5_000;
    let started = Instant::now();
    let client = kinesis_client().await;
    let guard = TestStream::create(&client, "core-clean", SHARDS as i32).await;
    let stream = guard.name.clone();
    let retrieval = Retrieval::on(fan_out, &client, &stream, APP).await;

    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::<String>::new();
    let running = RunningConsumer::start(consumer(
        &client,
        &retrieval,
        &stream,
        &store,
        Arc::new(emitter.clone()),
        500,
    ));

    let mut producer = Producer::new(client.clone(), &stream, 64);
    producer.put(RECORDS).await.unwrap();
    let put_time = started.elapsed();
    let written = producer.ids();
    assert_eq!(written.len(), RECORDS);

    let waited = wait_for_all("clean run", &written, || ids(&emitted(&emitter.batches()))).await;
    let report = running.stop_within(STOP_WAIT).await;

    assert_no_failures(&report);
    assert_all_read_emitted(&report);
    assert_eq!(report.shards.len(), SHARDS, "one report per shard");
    assert!(
        report
            .shards
            .iter()
            .all(|r| matches!(r.outcome, ShardOutcome::Shutdown)),
        "every shard stops for shutdown: {report:?}"
    );
    let batches = emitter.batches();
    let items = emitted(&batches);
    assert_known("clean run", &ids(&items), &written);
    let dups = duplicates(&items);
    assert!(
        dups.is_empty(),
        "a clean run emitted {} records more than once: {dups:?}",
        dups.len()
    );
    assert_eq!(items.len(), RECORDS);
    assert_eq!(report.records_emitted(), RECORDS as u64);
    assert_shard_order("clean run", &batches);
    assert_key_order("clean run", &items);

    // Each record came from the shard PutRecords put it in.
    let shard_of: HashMap<u64, &str> = producer
        .written
        .iter()
        .map(|w| (w.payload.id, w.shard_id.as_str()))
        .collect();
    for (shard, payload) in &items {
        assert_eq!(
            shard_of[&payload.id], shard,
            "record {} emitted from the wrong shard",
            payload.id
        );
    }

    // The graceful stop checkpointed every shard at its last record.
    let expected: HashMap<String, Checkpoint> = last_written(&producer.written)
        .into_iter()
        .map(|(shard, position)| (shard, Checkpoint::At(position)))
        .collect();
    assert_eq!(expected.len(), SHARDS, "every shard got records");
    assert_eq!(checkpoints(&store, &stream), expected);
    assert!(emitter.shutdown_called());
    eprintln!(
        "clean run: {RECORDS} records ({} refused and rewritten) written in {put_time:?}, all emitted {waited:?} after the last write; {} batches; total {:?}",
        producer.refused,
        batches.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 2. Restart from the checkpoint store
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// Cancel the token and wait for the report.
    Graceful,
    /// `JoinHandle::abort()`: no flush, no checkpoint.
    Abort,
}

const RESTART_SHARDS: usize = 4;
const RESTART_RECORDS: usize = 4_000;
const RESTART_MAX_RECORDS: usize = 100;

/// Writes `RESTART_RECORDS` while a first consumer runs, stops it mid-stream
/// while a batch is delivered but not yet acknowledged, starts a second
/// consumer on the same checkpoint store and waits until the union of both
/// runs holds every record. Returns what the checks need.
async fn restart(kind: StopKind, fan_out: bool) {
    let started = Instant::now();
    let client = kinesis_client().await;
    let guard = TestStream::create(
        &client,
        &format!("core-restart-{kind:?}"),
        RESTART_SHARDS as i32,
    )
    .await;
    let stream = guard.name.clone();
    let retrieval = Retrieval::on(fan_out, &client, &stream, APP).await;
    let store = MemoryCheckpointStore::new();
    // A slow acknowledgement keeps batches in flight long enough to stop
    // the consumer while one is delivered and not yet checkpointed.
    let first = SlowAck::new(Duration::from_millis(200));
    let second = SlowAck::new(Duration::from_millis(200));

    let running = RunningConsumer::start(consumer(
        &client,
        &retrieval,
        &stream,
        &store,
        Arc::new(first.clone()),
        RESTART_MAX_RECORDS,
    ));
    let producer = Producer::new(client.clone(), &stream, 64);
    let producing = tokio::spawn(async move {
        let mut producer = producer;
        producer.put_paced(RESTART_RECORDS).await.map(|()| producer)
    });

    // Mid-stream: a third of the records emitted, and a batch in flight.
    let third = RESTART_RECORDS / 3;
    assert!(
        first.recording.wait_for_items(third, WAIT).await,
        "{kind:?}: the first run did not emit {third} records within {WAIT:?} (it emitted {})",
        first.recording.item_count()
    );
    assert!(!producing.is_finished(), "the producer finished too early");
    if kind == StopKind::Abort {
        // Batches delivered from now on stay unacknowledged: the abort
        // surely catches some in flight.
        first.hold();
    }
    wait_until(
        "a batch in flight",
        Duration::from_secs(30),
        Duration::from_millis(2),
        || std::future::ready(!first.in_flight().is_empty()),
    )
    .await;
    if kind == StopKind::Abort {
        // Let the other shards deliver (and hang on) a batch too.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let in_flight_at_stop = first.in_flight();
    let first_report = match kind {
        StopKind::Graceful => Some(running.stop_within(STOP_WAIT).await),
        StopKind::Abort => {
            let (_cancel, handle) = running.into_parts();
            handle.abort();
            let joined = tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("an aborted consumer ends at once");
            assert!(
                joined.as_ref().is_err_and(|e| e.is_cancelled()),
                "the consumer was aborted: {joined:?}"
            );
            // Shard tasks are aborted when the consumer's task set drops;
            // give any that was running on the other worker time to stop.
            tokio::time::sleep(Duration::from_millis(300)).await;
            None
        }
    };
    let stopped_at = started.elapsed();
    let unacknowledged = first.in_flight();
    let first_batches = first.recording.batches();
    let checkpoints_at_stop = checkpoints(&store, &stream);

    let running = RunningConsumer::start(consumer(
        &client,
        &retrieval,
        &stream,
        &store,
        Arc::new(second.clone()),
        RESTART_MAX_RECORDS,
    ));
    let producer = producing
        .await
        .expect("producer task")
        .expect("producer failed");
    let written = producer.ids();
    assert_eq!(written.len(), RESTART_RECORDS);
    let waited = wait_for_all(&format!("restart ({kind:?})"), &written, || {
        let mut seen = ids(&emitted(&first_batches));
        seen.extend(ids(&emitted(&second.recording.batches())));
        seen
    })
    .await;
    let second_report = running.stop_within(STOP_WAIT).await;
    assert_no_failures(&second_report);
    assert_all_read_emitted(&second_report);

    // What each run emitted, and the union.
    let first_items = emitted(&first_batches);
    let second_batches = second.recording.batches();
    let second_items = emitted(&second_batches);
    let union: Vec<(String, Payload)> = first_items.iter().chain(&second_items).cloned().collect();
    assert_known(&format!("{kind:?}"), &ids(&union), &written);
    for (what, batches, items) in [
        ("first run", &first_batches, &first_items),
        ("second run", &second_batches, &second_items),
    ] {
        assert_shard_order(what, batches);
        assert_key_order(what, items);
        let dups = duplicates(items);
        assert!(dups.is_empty(), "{what} emitted records twice: {dups:?}");
    }
    let dups = duplicates(&union);
    let duplicated = dups.values().map(|n| n - 1).sum::<usize>();

    // The batches delivered but not acknowledged when the first run stopped.
    let unacknowledged_ids: HashSet<u64> = first_batches
        .iter()
        .filter(|b| unacknowledged.get(&*b.context.shard_id) == Some(&b.first))
        .flat_map(|b| b.items.iter().map(|item| Payload::parse(item).id))
        .collect();

    match kind {
        StopKind::Graceful => {
            let report = first_report.expect("graceful stop has a report");
            assert_no_failures(&report);
            assert_all_read_emitted(&report);
            assert!(
                report
                    .shards
                    .iter()
                    .all(|r| matches!(r.outcome, ShardOutcome::Shutdown)),
                "every shard stops for shutdown: {report:?}"
            );
            assert!(
                unacknowledged.is_empty(),
                "a graceful stop waits for the batch in flight ({in_flight_at_stop:?}), still in flight: {unacknowledged:?}"
            );
            assert_eq!(
                duplicated,
                0,
                "a graceful stop checkpoints everything it emitted, yet {} records were emitted again: {dups:?}",
                dups.len()
            );
            // Every shard is checkpointed at the last record it emitted.
            let mut last_emitted: HashMap<String, Checkpoint> = HashMap::new();
            for batch in &first_batches {
                last_emitted.insert(
                    batch.context.shard_id.to_string(),
                    Checkpoint::At(batch.last.clone()),
                );
            }
            assert_eq!(checkpoints_at_stop, last_emitted);
        }
        StopKind::Abort => {
            assert!(
                !unacknowledged.is_empty(),
                "the abort was meant to catch a batch in flight ({in_flight_at_stop:?})"
            );
            // Exactly the delivered-but-unacknowledged batches are replayed.
            let replayed: HashSet<u64> = dups.keys().copied().collect();
            assert_eq!(
                replayed, unacknowledged_ids,
                "only the batches in flight at the abort may be emitted again"
            );
            assert!(
                dups.values().all(|n| *n == 2),
                "a record was emitted more than twice: {dups:?}"
            );
            assert!(
                duplicated <= RESTART_SHARDS * RESTART_MAX_RECORDS,
                "{duplicated} duplicates, more than {RESTART_SHARDS} shards × {RESTART_MAX_RECORDS} records"
            );
            // The checkpoint of each shard is the end of its last acknowledged batch.
            let mut acknowledged: HashMap<String, Checkpoint> = HashMap::new();
            for batch in &first_batches {
                let shard = batch.context.shard_id.to_string();
                if unacknowledged.get(&shard) != Some(&batch.first) {
                    acknowledged.insert(shard, Checkpoint::At(batch.last.clone()));
                }
            }
            assert_eq!(checkpoints_at_stop, acknowledged);
        }
    }
    // Across both runs, each key's first emissions follow write order.
    let mut seen = HashSet::new();
    let firsts: Vec<(String, Payload)> = union
        .into_iter()
        .filter(|(_, p)| seen.insert(p.id))
        .collect();
    assert_key_order(&format!("{kind:?}, both runs"), &firsts);
    eprintln!(
        "restart ({kind:?}): stopped after {stopped_at:?} with {} records emitted and {} in flight; second run emitted {}; {duplicated} duplicates; all emitted {waited:?} after the last write; total {:?}",
        first_items.len(),
        unacknowledged_ids.len(),
        second_items.len(),
        started.elapsed()
    );
}

/// Graceful stop (cancel) mid-stream, then a new consumer on the same
/// checkpoint store: nothing lost, nothing emitted twice, and the stop
/// checkpointed each shard at the last record it emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_restart_after_graceful_stop_loses_and_repeats_nothing() {
    restart(StopKind::Graceful, false).await;
}

/// The same with enhanced fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_fan_out_restart_after_graceful_stop_loses_and_repeats_nothing() {
    restart(StopKind::Graceful, true).await;
}

/// `JoinHandle::abort()` mid-stream while batches are delivered but not
/// acknowledged, then a new consumer on the same checkpoint store: nothing
/// lost; exactly the unacknowledged batches are emitted again (at most
/// shards × max_records records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_restart_after_abort_replays_only_unacknowledged_batches() {
    restart(StopKind::Abort, false).await;
}

/// The same with enhanced fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_fan_out_restart_after_abort_replays_only_unacknowledged_batches() {
    restart(StopKind::Abort, true).await;
}

// ---------------------------------------------------------------------------
// 3. Resharding while consuming
// ---------------------------------------------------------------------------

/// A 2-shard stream consumed while a producer writes: split one shard at the
/// middle of its hash range, then merge two adjacent open shards. Every
/// record is emitted exactly once, each key's records in write order across
/// parents and children, each child only after its parents were finished,
/// and every closed shard is checkpointed at SHARD_END.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_follows_split_and_merge_without_loss_or_reordering() {
    split_and_merge(false).await;
}

/// The same with enhanced fan-out: each closed shard's last event carries
/// its children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_consumer_fan_out_follows_split_and_merge_without_loss_or_reordering() {
    split_and_merge(true).await;
}

async fn split_and_merge(fan_out: bool) {
    let started = Instant::now();
    let client = kinesis_client().await;
    let guard = TestStream::create(&client, "core-reshard", 2).await;
    let stream = guard.name.clone();
    let retrieval = Retrieval::on(fan_out, &client, &stream, APP).await;

    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::<String>::new();
    let running = RunningConsumer::start(consumer(
        &client,
        &retrieval,
        &stream,
        &store,
        Arc::new(emitter.clone()),
        100,
    ));
    let stop_producing = CancellationToken::new();
    let producing =
        tokio::spawn(Producer::new(client.clone(), &stream, 64).put_until(stop_producing.clone()));
    // Fail fast (with the producer's error) if the producer dies.
    let producer_alive = |producing: &JoinHandle<Result<Producer>>| {
        assert!(!producing.is_finished(), "the producer stopped early");
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    producer_alive(&producing);
    let before = open_shards(&client, &stream).await.unwrap();
    assert_eq!(before.len(), 2, "{before:?}");
    let parent = before[0].clone();
    let middle = parent.start + (parent.end - parent.start) / 2 + 1;
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent.id)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .map_err(|e| anyhow!("SplitShard: {}", DisplayErrorContext(e)))
        .unwrap();
    wait_active(&client, &stream).await.unwrap();
    let after_split = open_shards(&client, &stream).await.unwrap();
    assert_eq!(after_split.len(), 3, "{after_split:?}");
    let split_at = started.elapsed();

    tokio::time::sleep(Duration::from_secs(3)).await;
    producer_alive(&producing);
    // Merge a child of the split with its neighbour that is not its sibling
    // when there is one: the last adjacent pair in hash order.
    let (left, right) = after_split
        .windows(2)
        .filter(|pair| pair[0].end + 1 == pair[1].start)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .next_back()
        .expect("two adjacent open shards");
    client
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&left.id)
        .adjacent_shard_to_merge(&right.id)
        .send()
        .await
        .map_err(|e| anyhow!("MergeShards: {}", DisplayErrorContext(e)))
        .unwrap();
    wait_active(&client, &stream).await.unwrap();
    let after_merge = open_shards(&client, &stream).await.unwrap();
    assert_eq!(after_merge.len(), 2, "{after_merge:?}");
    let merged_at = started.elapsed();

    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_producing.cancel();
    let producer = producing
        .await
        .expect("producer task")
        .expect("producer failed");
    let written = producer.ids();
    let waited = wait_for_all("resharding", &written, || ids(&emitted(&emitter.batches()))).await;
    let report = running.stop_within(STOP_WAIT).await;
    assert_no_failures(&report);
    assert_all_read_emitted(&report);

    let batches = emitter.batches();
    let items = emitted(&batches);
    assert_known("resharding", &ids(&items), &written);
    let dups = duplicates(&items);
    assert!(dups.is_empty(), "records emitted more than once: {dups:?}");
    assert_shard_order("resharding", &batches);
    assert_key_order("resharding", &items);

    // Each record came from the shard PutRecords put it in.
    let shard_of: HashMap<u64, &str> = producer
        .written
        .iter()
        .map(|w| (w.payload.id, w.shard_id.as_str()))
        .collect();
    let misplaced: Vec<String> = items
        .iter()
        .filter(|(shard, p)| shard_of[&p.id] != shard.as_str())
        .take(10)
        .map(|(shard, p)| {
            format!(
                "{} written to {}, emitted from {shard}",
                p.id, shard_of[&p.id]
            )
        })
        .collect();
    assert!(
        misplaced.is_empty(),
        "records emitted from the wrong shard: {misplaced:#?}"
    );
    let mut written_to: HashMap<&str, usize> = HashMap::new();
    for w in &producer.written {
        *written_to.entry(w.shard_id.as_str()).or_default() += 1;
    }

    // Closed shards are finished; children start after their parents' last batch.
    let closed = [parent.id.clone(), left.id.clone(), right.id.clone()];
    let stored = checkpoints(&store, &stream);
    for shard in &closed {
        assert_eq!(
            stored.get(shard),
            Some(&Checkpoint::ShardEnd),
            "closed shard {shard} is checkpointed at SHARD_END: {stored:?}"
        );
        let key = ShardKey::new(APP, &*stream, shard.as_str());
        assert!(store.snapshot().contains_key(&key));
    }
    let ended: HashSet<&str> = report
        .shards
        .iter()
        .filter(|r| matches!(r.outcome, ShardOutcome::ShardEnd { .. }))
        .map(|r| r.shard_id.as_str())
        .collect();
    assert_eq!(
        ended,
        closed.iter().map(String::as_str).collect::<HashSet<_>>(),
        "the shards that reached SHARD_END"
    );
    let last_batch = |shard: &str| batches.iter().rposition(|b| &*b.context.shard_id == shard);
    let first_batch = |shard: &str| batches.iter().position(|b| &*b.context.shard_id == shard);
    let children: Vec<(&str, Vec<&str>)> = vec![
        (after_split[0].id.as_str(), vec![parent.id.as_str()]),
        (after_split[1].id.as_str(), vec![parent.id.as_str()]),
        (
            after_merge
                .iter()
                .find(|s| s.start == left.start)
                .map(|s| s.id.as_str())
                .expect("merged shard"),
            vec![left.id.as_str(), right.id.as_str()],
        ),
    ];
    for (child, parents) in children {
        let Some(child_first) = first_batch(child) else {
            continue;
        };
        for parent in parents {
            if let Some(parent_last) = last_batch(parent) {
                assert!(
                    parent_last < child_first,
                    "child {child} emitted (batch {child_first}) before parent {parent} finished (batch {parent_last})"
                );
            }
        }
    }

    let mut per_shard: Vec<(&str, usize)> = written_to.into_iter().collect();
    per_shard.sort_unstable();
    eprintln!(
        "resharding: {} records ({} refused and rewritten); split at {split_at:?}, merged at {merged_at:?}; per shard {per_shard:?}; all emitted {waited:?} after the last write; total {:?}",
        written.len(),
        producer.refused,
        started.elapsed()
    );
}
