//! Every external call has a time limit: hung emitters, checkpoint stores and
//! sources turn into retried errors, a lost lease interrupts a running emit,
//! and shutdown has a grace period.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    Batch, BufferLimits, CancellationToken, Checkpoint, CheckpointStore, EmitOutcome, Emitter,
    Error, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline, Result, RetryPolicy, ShardConfig,
    ShardConsumer, ShardContext, ShardEnv, ShardInfo, ShardKey, ShardOutcome, StreamConsumer,
    Utf8Transformer, async_trait,
};
use kinesis_connectors_testkit::{
    HookedSource, RecordingEmitter, ScriptedSource, SourceHooks, shard_context,
};
use tokio::time::Instant;

use support::{InterceptedStore, Write};

const SHARD: &str = "shard-0";

fn key() -> ShardKey {
    ShardKey::new("test-app", "test-stream", SHARD)
}

/// Short limits, so paused time reaches them quickly.
fn config() -> ShardConfig {
    ShardConfig::default()
        .with_retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1))
                .with_max_attempts(4),
        )
        .with_emit_timeout(Duration::from_secs(10))
        .with_checkpoint_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(5))
}

fn source_with(n: usize) -> ScriptedSource {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    source.append(
        SHARD,
        (0..n)
            .map(|i| (format!("pk-{i}"), Bytes::from(format!("r{i}"))))
            .collect(),
    );
    source
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

/// Never answers its first `hangs` calls; then delivers to `inner`.
struct Hangs {
    inner: RecordingEmitter<String>,
    hangs: usize,
    calls: AtomicUsize,
}

impl Hangs {
    fn new(inner: &RecordingEmitter<String>, hangs: usize) -> Self {
        Self {
            inner: inner.clone(),
            hangs,
            calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Emitter<String> for Hangs {
    async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.hangs {
            std::future::pending::<()>().await;
        }
        self.inner.emit(batch).await
    }
}

fn shard_consumer(
    source: &ScriptedSource,
    store: Arc<dyn CheckpointStore>,
    emitter: Arc<dyn Emitter<String>>,
    lease: LeaseHandle,
) -> ShardConsumer<Utf8Transformer> {
    let pipeline = Pipeline::builder(Utf8Transformer, emitter)
        .buffer_limits(BufferLimits::default().with_max_records(5))
        .build()
        .unwrap();
    ShardConsumer::new(
        ShardEnv::new(Arc::new(source.clone()), store, config()),
        shard_context(SHARD),
        lease,
        pipeline,
    )
}

/// Runs `consumer` until `emitter` holds `n` items, then shuts it down.
async fn run_until(
    consumer: ShardConsumer<Utf8Transformer>,
    emitter: &RecordingEmitter<String>,
    n: usize,
) -> ShardOutcome {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    assert!(
        emitter.wait_for_items(n, Duration::from_secs(3_600)).await,
        "only {} of {n} items arrived",
        emitter.item_count()
    );
    cancel.cancel();
    task.await.unwrap().outcome
}

#[tokio::test(start_paused = true)]
async fn a_hung_emit_times_out_and_is_retried() {
    let source = source_with(10);
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::new();
    let started = Instant::now();
    let consumer = shard_consumer(
        &source,
        Arc::new(store.clone()),
        Arc::new(Hangs::new(&delivered, 2)),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
    );
    let outcome = run_until(consumer, &delivered, 10).await;
    assert!(matches!(outcome, ShardOutcome::Shutdown), "{outcome:?}");
    assert_eq!(delivered.items(), expected(10));
    // Two attempts waited out the 10 s limit.
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert!(matches!(
        store.get(&key()).await.unwrap(),
        Some(Checkpoint::At(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_interrupts_a_running_emit() {
    let source = source_with(10);
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::new();
    let lease = LeaseHandle::new(Lease::unfenced(SHARD, "w"));
    let consumer = shard_consumer(
        &source,
        Arc::new(store.clone()),
        Arc::new(Hangs::new(&delivered, usize::MAX)),
        lease.clone(),
    );
    let task = tokio::spawn(consumer.run(CancellationToken::new()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost_at = Instant::now();
    lease.mark_lost();
    let report = task.await.unwrap();
    assert!(
        matches!(report.outcome, ShardOutcome::LeaseLost),
        "{:?}",
        report.outcome
    );
    assert!(
        lost_at.elapsed() < Duration::from_secs(1),
        "stopped at once"
    );
    assert_eq!(store.get(&key()).await.unwrap(), None, "nothing written");
}

#[tokio::test(start_paused = true)]
async fn a_hung_checkpoint_write_times_out_and_is_retried() {
    let source = source_with(10);
    let memory = MemoryCheckpointStore::new();
    // The first two writes never answer.
    let store = Arc::new(InterceptedStore::new(&memory, |write| {
        if write < 2 { Write::Hang } else { Write::Pass }
    }));
    let delivered = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        store.clone(),
        Arc::new(delivered.clone()),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
    );
    let outcome = run_until(consumer, &delivered, 10).await;
    assert!(matches!(outcome, ShardOutcome::Shutdown), "{outcome:?}");
    assert!(store.writes() >= 3);
    let stored = memory.get(&key()).await.unwrap();
    let last = source.shard_records(SHARD).last().unwrap().position();
    assert_eq!(stored, Some(Checkpoint::At(last)));
}

/// The first `GetRecords` call never answers.
#[derive(Default)]
struct StallsOnce {
    calls: AtomicUsize,
}

#[async_trait]
impl SourceHooks for StallsOnce {
    async fn before_get_records(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_read_times_out_and_is_retried() {
    let scripted = source_with(10);
    let stalls = Arc::new(HookedSource::new(scripted, StallsOnce::default()));
    let delivered = RecordingEmitter::new();
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(delivered.clone()))
        .buffer_limits(BufferLimits::default().with_max_records(5))
        .build()
        .unwrap();
    let consumer = ShardConsumer::new(
        ShardEnv::new(
            stalls.clone(),
            Arc::new(MemoryCheckpointStore::new()),
            config(),
        ),
        shard_context(SHARD),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
        pipeline,
    );
    let outcome = run_until(consumer, &delivered, 10).await;
    assert!(matches!(outcome, ShardOutcome::Shutdown), "{outcome:?}");
    assert_eq!(delivered.items(), expected(10));
    assert!(stalls.hooks().calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_busy_shard_after_the_grace_period() {
    let source = source_with(3);
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::new();
    let emitter: Arc<dyn Emitter<String>> = Arc::new(Hangs::new(&delivered, usize::MAX));
    let consumer = StreamConsumer::builder(
        "test-app",
        "test-stream",
        Arc::new(source.clone()),
        Arc::new(store.clone()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(BufferLimits::default().with_max_records(3))
                .build()
        },
    )
    // The emit limit is far beyond the grace period: only the grace ends it.
    .shard_config(config().with_emit_timeout(Duration::from_secs(3_600)))
    .shutdown_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    let waited = cancelled_at.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(35),
        "{waited:?}"
    );
    let failures: Vec<String> = report.failures().map(|(_, e)| e.to_string()).collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("shutdown grace period"),
        "{failures:?}"
    );
    assert!(matches!(
        report.unrecovered().as_slice(),
        [(SHARD, Error::ShutdownTimedOut { .. })]
    ));
    assert_eq!(
        store.get(&key()).await.unwrap(),
        None,
        "nothing acknowledged"
    );
}

#[test]
fn zero_time_limits_are_rejected() {
    assert!(
        ShardConfig::default()
            .with_emit_timeout(Duration::ZERO)
            .validate()
            .is_err()
    );
    assert!(
        ShardConfig::default()
            .with_checkpoint_timeout(Duration::ZERO)
            .validate()
            .is_err()
    );
    assert!(
        ShardConfig::default()
            .with_read_timeout(Duration::ZERO)
            .validate()
            .is_err()
    );
}
