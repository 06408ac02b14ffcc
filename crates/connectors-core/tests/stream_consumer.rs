//! The stream consumer: discovery, resharding order, assignment, shutdown.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, Checkpoint, CheckpointStore, Emitter, Error, Lease,
    MemoryCheckpointStore, Pipeline, Result, ShardAssigner, ShardConfig, ShardContext, ShardInfo,
    ShardKey, ShardOutcome, StreamConsumer, StreamConsumerBuilder, StreamReport, Utf8Transformer,
    async_trait,
};
use kinesis_connectors_testkit::{RecordingEmitter, ScriptedSource};

const STREAM: &str = "test-stream";

fn key(shard: &str) -> ShardKey {
    ShardKey::new("test-app", STREAM, shard)
}

fn put(source: &ScriptedSource, shard: &str, prefix: &str, n: usize) {
    source.append(
        shard,
        (0..n)
            .map(|i| (format!("pk-{i}"), Bytes::from(format!("{prefix}-{i}"))))
            .collect(),
    );
}

fn consumer(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: &RecordingEmitter<String>,
) -> StreamConsumerBuilder<Utf8Transformer> {
    let limits = BufferLimits::default()
        .with_max_records(10)
        .with_max_age(Duration::from_secs(2));
    consumer_with(source, store, Arc::new(emitter.clone()), limits)
}

/// A consumer whose every shard's pipeline emits through `emitter`, with
/// batches cut by `limits`.
fn consumer_with(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
    limits: BufferLimits,
) -> StreamConsumerBuilder<Utf8Transformer> {
    StreamConsumer::builder(
        "test-app",
        STREAM,
        Arc::new(source.clone()),
        Arc::new(store.clone()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(limits)
                .build()
        },
    )
}

async fn run_until_items(
    consumer: StreamConsumer<Utf8Transformer>,
    emitter: &RecordingEmitter<String>,
    items: usize,
) -> StreamReport {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    assert!(
        emitter
            .wait_for_items(items, Duration::from_secs(3_600))
            .await,
        "only {} of {items} items arrived",
        emitter.item_count()
    );
    cancel.cancel();
    task.await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_shard_is_consumed_in_order() {
    let source = ScriptedSource::new();
    for shard in ["s0", "s1", "s2", "s3"] {
        source.add_shard(ShardInfo::open(shard));
        put(&source, shard, shard, 25);
    }
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let report = run_until_items(
        consumer(&source, &store, &emitter).build().unwrap(),
        &emitter,
        100,
    )
    .await;
    assert_eq!(report.shards.len(), 4);
    assert!(
        report
            .shards
            .iter()
            .all(|r| matches!(r.outcome, ShardOutcome::Shutdown))
    );
    let mut per_shard: HashMap<String, Vec<String>> = HashMap::new();
    for item in emitter.items() {
        let (shard, _) = item.split_once('-').unwrap();
        per_shard
            .entry(shard.to_owned())
            .or_default()
            .push(item.clone());
    }
    for shard in ["s0", "s1", "s2", "s3"] {
        let expected: Vec<String> = (0..25).map(|i| format!("{shard}-{i}")).collect();
        assert_eq!(
            per_shard[shard], expected,
            "shard {shard} out of order or incomplete"
        );
        assert!(matches!(
            store.get(&key(shard)).await.unwrap(),
            Some(Checkpoint::At(_))
        ));
    }
    assert_eq!(report.records_emitted(), 100);
    let totals = report.totals();
    assert_eq!((totals.records_read, totals.records_emitted), (100, 100));
    assert_eq!(
        totals.batches_emitted,
        report
            .shards
            .iter()
            .map(|r| r.stats.batches_emitted)
            .sum::<u64>()
    );
    assert!(totals.batches_emitted >= 4, "{totals:?}");
}

#[tokio::test(start_paused = true)]
async fn children_start_only_after_their_parents_reached_shard_end() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("parent-a"));
    source.add_shard(ShardInfo::open("parent-b"));
    put(&source, "parent-a", "a", 30);
    put(&source, "parent-b", "b", 30);
    // A merge: one child, two parents; parent-b closes only later.
    let mut child = ShardInfo::open("child");
    child.parent_shard_id = Some("parent-a".into());
    child.adjacent_parent_shard_id = Some("parent-b".into());
    source.close_shard("parent-a", vec![child.clone()]);
    put(&source, "child", "c", 30);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = consumer(&source, &store, &emitter).build().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    assert!(emitter.wait_for_items(60, Duration::from_secs(60)).await);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        store.get(&key("parent-a")).await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );
    assert!(
        source.iterator_requests("child").is_empty(),
        "the child started while parent-b was still open"
    );
    source.close_shard("parent-b", vec![]);
    assert!(emitter.wait_for_items(90, Duration::from_secs(120)).await);
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    let items = emitter.items();
    let first_child = items.iter().position(|i| i.starts_with("c-")).unwrap();
    let last_parent = items.iter().rposition(|i| !i.starts_with("c-")).unwrap();
    assert!(
        last_parent < first_child,
        "a child record was emitted before its parents finished"
    );
    assert_eq!(
        store.get(&key("parent-b")).await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );
    let ended = report
        .shards
        .iter()
        .filter(|r| matches!(r.outcome, ShardOutcome::ShardEnd { .. }))
        .count();
    assert_eq!(ended, 2);
}

/// Shard "parent" closed into one "child", each holding `(prefix, n)`
/// records (`{prefix}-{i}`), and a store in which an earlier run finished
/// the parent.
async fn parent_finished_by_an_earlier_run(
    (parent_prefix, parent_records): (&str, usize),
    (child_prefix, child_records): (&str, usize),
) -> (ScriptedSource, MemoryCheckpointStore) {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("parent"));
    put(&source, "parent", parent_prefix, parent_records);
    let mut child = ShardInfo::open("child");
    child.parent_shard_id = Some("parent".into());
    source.close_shard("parent", vec![child]);
    put(&source, "child", child_prefix, child_records);
    let store = MemoryCheckpointStore::new();
    store
        .set(&key("parent"), &Checkpoint::ShardEnd)
        .await
        .unwrap();
    (source, store)
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_the_parent_check_uses_the_checkpoint_store() {
    let (source, store) = parent_finished_by_an_earlier_run(("p", 5), ("c", 5)).await;
    let emitter = RecordingEmitter::new();
    run_until_items(
        consumer(&source, &store, &emitter).build().unwrap(),
        &emitter,
        5,
    )
    .await;
    let expected: Vec<String> = (0..5).map(|i| format!("c-{i}")).collect();
    assert_eq!(
        emitter.items(),
        expected,
        "the finished parent was read again"
    );
}

#[tokio::test(start_paused = true)]
async fn periodic_discovery_picks_up_new_shards() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s0"));
    put(&source, "s0", "s0", 3);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = consumer(&source, &store, &emitter)
        .discovery_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    assert!(emitter.wait_for_items(3, Duration::from_secs(20)).await);
    source.add_shard(ShardInfo::open("s1"));
    put(&source, "s1", "s1", 3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        emitter.item_count(),
        3,
        "a new shard was read before the next discovery"
    );
    assert!(emitter.wait_for_items(6, Duration::from_secs(60)).await);
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.shards.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_shard_does_not_stop_the_others() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("good"));
    source.add_shard(ShardInfo::open("bad"));
    put(&source, "good", "good", 5);
    source.inject("bad", kinesis_connectors_testkit::Fault::Fatal);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let report = run_until_items(
        consumer(&source, &store, &emitter).build().unwrap(),
        &emitter,
        5,
    )
    .await;
    let failures: Vec<_> = report
        .failures()
        .map(|(shard, _)| shard.to_owned())
        .collect();
    assert_eq!(failures, vec!["bad".to_owned()]);
}

/// Takes every shard, but reports each lease lost at the first renewal.
struct LosingAssigner {
    renewals: Mutex<u32>,
}

#[async_trait]
impl ShardAssigner for LosingAssigner {
    fn worker_id(&self) -> &str {
        "loser"
    }
    async fn acquire(&self, _: &str, shards: &[ShardInfo], held: &[Lease]) -> Result<Vec<Lease>> {
        Ok(shards
            .iter()
            .filter(|s| held.iter().all(|l| l.shard_id != s.shard_id))
            .map(|s| Lease::unfenced(s.shard_id.clone(), "loser"))
            .collect())
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        *self.renewals.lock().unwrap() += 1;
        Err(Error::LeaseLost {
            shard_id: lease.shard_id.clone(),
            owner: Some("thief".into()),
        })
    }
    async fn release(&self, _: &Lease) -> Result<()> {
        Ok(())
    }
    fn renew_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_its_shard_without_a_checkpoint() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s0"));
    put(&source, "s0", "s0", 3);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let assigner = Arc::new(LosingAssigner {
        renewals: Mutex::new(0),
    });
    // Buffer age (2 s) would flush before the renewal (5 s); make it longer.
    let limits = BufferLimits::default().with_max_age(Duration::from_secs(60));
    let consumer = consumer_with(&source, &store, Arc::new(emitter.clone()), limits)
        .assigner(assigner.clone())
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(8)).await;
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    assert!(*assigner.renewals.lock().unwrap() >= 1);
    assert!(matches!(report.shards[0].outcome, ShardOutcome::LeaseLost));
    assert_eq!(emitter.item_count(), 0);
    assert_eq!(store.get(&key("s0")).await.unwrap(), None);
}

#[test]
fn bad_consumer_configuration_is_rejected() {
    let source = ScriptedSource::new();
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let too_often = consumer(&source, &store, &emitter)
        .discovery_interval(Duration::from_millis(10))
        .build();
    assert!(matches!(too_often, Err(Error::Config(_))));
    let bad_shard_config = consumer(&source, &store, &emitter)
        .shard_config(ShardConfig::default().with_max_records_per_call(0))
        .build();
    assert!(matches!(bad_shard_config, Err(Error::Config(_))));
}

#[tokio::test(start_paused = true)]
async fn a_child_without_checkpoint_starts_at_trim_horizon_even_at_latest_after_a_restart() {
    // A worker read the parent to SHARD_END and stopped before the child's
    // first checkpoint; the next run lists the child at its first discovery.
    let (source, store) = parent_finished_by_an_earlier_run(("parent", 3), ("child", 5)).await;

    let emitter = RecordingEmitter::new();
    let consumer = consumer(&source, &store, &emitter)
        .initial_position(kinesis_connectors_core::InitialPosition::Latest)
        .build()
        .unwrap();
    run_until_items(consumer, &emitter, 5).await;
    let expected: Vec<String> = (0..5).map(|i| format!("child-{i}")).collect();
    assert_eq!(emitter.items(), expected);
}

/// Builds a consumer over one shard `s0` with 20 records whose pipeline
/// emits through `emitter`.
fn supervised(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
) -> StreamConsumerBuilder<Utf8Transformer> {
    source.add_shard(ShardInfo::open("s0"));
    put(source, "s0", "s0", 20);
    let limits = BufferLimits::default().with_max_records(10);
    consumer_with(source, store, emitter, limits).shard_config(
        ShardConfig::default().with_retry(
            kinesis_connectors_core::RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(100))
                .with_max_attempts(2),
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn a_shard_whose_emits_ran_out_of_retries_is_restarted_from_its_checkpoint() {
    // Six failed calls: the first batch fails twice (2 attempts) three times
    // in a row, longer than the emit retry budget; then the sink is back.
    let source = ScriptedSource::new();
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::<String>::new();
    let flaky = Arc::new(kinesis_connectors_testkit::FailingEmitter::fail_times(
        delivered.clone(),
        6,
        true,
    ));
    let started = tokio::time::Instant::now();
    let consumer = supervised(&source, &store, flaky.clone())
        .restart_backoff(
            kinesis_connectors_core::RetryPolicy::new()
                .with_initial_delay(Duration::from_secs(5))
                .with_max_delay(Duration::from_secs(20)),
        )
        .build()
        .unwrap();
    let report = run_until_items(consumer, &delivered, 20).await;
    let expected: Vec<String> = (0..20).map(|i| format!("s0-{i}")).collect();
    assert_eq!(delivered.items(), expected, "every record exactly once");
    let failures: Vec<String> = report.failures().map(|(_, e)| e.to_string()).collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].contains("after 2 attempt(s)"), "{failures:?}");
    // Two restarts waited at least 5 s and 10 s (jitter only adds).
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        store.get(&key("s0")).await.unwrap(),
        Some(Checkpoint::At(_))
    ));
}

/// Panics on its first call, then delivers.
struct PanicsOnce {
    inner: RecordingEmitter<String>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl kinesis_connectors_core::Emitter<String> for PanicsOnce {
    async fn emit(
        &self,
        batch: &kinesis_connectors_core::Batch<String>,
    ) -> Result<kinesis_connectors_core::EmitOutcome> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("emitter bug");
        }
        self.inner.emit(batch).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_shard_whose_emitter_panics_is_restarted_and_the_panic_reported() {
    let source = ScriptedSource::new();
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::<String>::new();
    let emitter = Arc::new(PanicsOnce {
        inner: delivered.clone(),
        calls: Default::default(),
    });
    let consumer = supervised(&source, &store, emitter).build().unwrap();
    let report = run_until_items(consumer, &delivered, 20).await;
    let expected: Vec<String> = (0..20).map(|i| format!("s0-{i}")).collect();
    assert_eq!(delivered.items(), expected);
    let failures: Vec<(String, String)> = report
        .failures()
        .map(|(shard, e)| (shard.to_owned(), e.to_string()))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "s0");
    assert!(
        failures[0].1.contains("panicked: emitter bug"),
        "{failures:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_failure_policy_can_stop_the_consumer_on_permanent_or_any_failure() {
    use kinesis_connectors_core::ShardFailurePolicy;
    let run = |policy: ShardFailurePolicy, retryable: bool| async move {
        let source = ScriptedSource::new();
        let store = MemoryCheckpointStore::new();
        let emitter = Arc::new(kinesis_connectors_testkit::FailingEmitter::fail_forever(
            RecordingEmitter::<String>::new(),
            retryable,
        ));
        let consumer = supervised(&source, &store, emitter)
            .on_shard_failure(policy)
            .build()
            .unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(consumer.run(cancel.clone()));
        // Long enough for several restarts at the default backoff.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let finished = task.is_finished();
        cancel.cancel();
        (finished, task.await.unwrap())
    };

    let (stopped, result) = run(ShardFailurePolicy::StopOnPermanent, false).await;
    assert!(stopped, "a permanent failure must stop the consumer");
    match result {
        Err(Error::ShardFailed { shard_id, source }) => {
            assert_eq!(shard_id, "s0");
            assert!(source.to_string().contains("attempt"), "{source}");
        }
        other => panic!("expected ShardFailed, got {other:?}"),
    }

    // A transient failure under StopOnPermanent keeps restarting.
    let (stopped, result) = run(ShardFailurePolicy::StopOnPermanent, true).await;
    assert!(!stopped, "a transient failure must not stop the consumer");
    let report = result.unwrap();
    assert!(report.failures().count() >= 3, "restarted several times");
    assert_eq!(report.unrecovered().len(), 1, "still failing at shutdown");

    let (stopped, result) = run(ShardFailurePolicy::StopOnAny, true).await;
    assert!(stopped);
    assert!(matches!(result, Err(Error::ShardFailed { .. })));

    // The default keeps restarting even a permanent failure.
    let (stopped, result) = run(ShardFailurePolicy::default(), false).await;
    assert!(!stopped);
    assert!(result.unwrap().failures().count() >= 3);
}

#[tokio::test(start_paused = true)]
async fn the_status_shows_each_shard_while_the_consumer_runs() {
    use kinesis_connectors_core::ShardState;
    // "parent" cannot be emitted (the sink is down), so "child" waits on it;
    // "other" reads and checkpoints normally.
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("parent"));
    source.add_shard(ShardInfo::open("other"));
    put(&source, "parent", "parent", 3);
    put(&source, "other", "other", 3);
    let mut child = ShardInfo::open("child");
    child.parent_shard_id = Some("parent".into());
    source.close_shard("parent", vec![child]);
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::<String>::new();
    let sink = Arc::new(kinesis_connectors_testkit::RejectingEmitter::new(
        delivered.clone(),
        |_: &String| None,
    ));
    let down = Arc::new(kinesis_connectors_testkit::FailingEmitter::fail_forever(
        RecordingEmitter::<String>::new(),
        true,
    ));
    let consumer = StreamConsumer::builder(
        "test-app",
        STREAM,
        Arc::new(source.clone()),
        Arc::new(store.clone()),
        move |context: &ShardContext| {
            let emitter: Arc<dyn kinesis_connectors_core::Emitter<String>> =
                if &*context.shard_id == "parent" {
                    down.clone()
                } else {
                    sink.clone()
                };
            Pipeline::builder(Utf8Transformer, emitter)
                .buffer_limits(
                    kinesis_connectors_core::BufferLimits::default()
                        .with_max_records(3)
                        .with_max_age(Duration::from_secs(1)),
                )
                .build()
        },
    )
    .shard_config(
        ShardConfig::default().with_retry(
            kinesis_connectors_core::RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(100))
                .with_max_attempts(3),
        ),
    )
    .restart_backoff(
        kinesis_connectors_core::RetryPolicy::new()
            .with_initial_delay(Duration::from_secs(600))
            .with_max_delay(Duration::from_secs(600)),
    )
    .build()
    .unwrap();
    let status = consumer.status();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;

    let parent = status.shard("parent").expect("parent listed");
    assert_eq!(parent.state, ShardState::Restarting, "{parent:?}");
    assert!(!parent.lease_held);
    assert_eq!(parent.restarts, 1);
    assert_eq!(parent.consecutive_emit_failures, 3, "{parent:?}");
    assert!(
        parent
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("attempt")
    );
    assert!(parent.restart_at.is_some());

    let child = status.shard("child").expect("child listed");
    assert_eq!(child.state, ShardState::WaitingOnParents, "{child:?}");
    assert!(child.lease_held);

    let other = status.shard("other").expect("other listed");
    assert_eq!(other.state, ShardState::Reading, "{other:?}");
    assert!(other.last_checkpoint.is_some());
    assert_eq!(other.consecutive_emit_failures, 0);

    cancel.cancel();
    task.await.unwrap().unwrap();
    assert!(status.shards().is_empty(), "{:?}", status.shards());
}

/// A single-worker consumer on a store that holds leases (a run with a
/// `LeaseCoordinator` left them, held or released) stops with an error
/// that says so, under the default restart policy too, instead of
/// re-emitting its first batch every round and never checkpointing.
#[tokio::test(start_paused = true)]
async fn a_single_worker_on_a_store_with_leases_stops_with_a_clear_error() {
    use kinesis_connectors_core::LeaseStore;
    for released in [false, true] {
        let source = ScriptedSource::new();
        source.add_shard(ShardInfo::open("s0"));
        put(&source, "s0", "a", 5);
        let store = MemoryCheckpointStore::new();
        store.create_lease(&key("s0"), &[]).await.unwrap();
        let lease = store
            .take_lease(&key("s0"), 0, "old-worker")
            .await
            .unwrap()
            .unwrap();
        if released {
            store.release_lease(&key("s0"), &lease).await.unwrap();
        }
        let emitter = RecordingEmitter::new();
        let consumer = consumer(&source, &store, &emitter).build().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(consumer.run(cancel.clone()));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(task.is_finished(), "the consumer must stop by itself");
        match task.await.unwrap() {
            Err(Error::ShardFailed { shard_id, source }) => {
                assert_eq!(shard_id, "s0");
                let text = source.to_string();
                for needle in ["has a lease", "SingleWorker", "LeaseCoordinator"] {
                    assert!(text.contains(needle), "{needle:?} in {text}");
                }
                let owner = if released {
                    "released"
                } else {
                    "held by \"old-worker\""
                };
                assert!(text.contains(owner), "{owner:?} in {text}");
            }
            other => panic!("expected ShardFailed, got {other:?}"),
        }
        // The batch is cut by age, so its pending-batch write comes first
        // and is refused: nothing is emitted.
        assert_eq!(emitter.item_count(), 0);
        assert_eq!(store.get(&key("s0")).await.unwrap(), None);
    }
}
