//! Replay-stable batches: after a crash between emit and checkpoint, the
//! first batch of the next run covers exactly what the unacknowledged batch
//! covered, however it was cut (age, shutdown) and whatever arrived since.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, Checkpoint, CheckpointStore, Error, Lease, LeaseHandle,
    MemoryCheckpointStore, Pipeline, Position, ShardConfig, ShardConsumer, ShardEnv, ShardInfo,
    ShardKey, ShardOutcome, Utf8Transformer,
};
use kinesis_connectors_testkit::{RecordedBatch, RecordingEmitter, ScriptedSource, shard_context};

use support::{InterceptedStore, Write, sub_records};

const SHARD: &str = "shard-0";

fn key() -> ShardKey {
    ShardKey::new("test-app", "test-stream", SHARD)
}

fn append(source: &ScriptedSource, from: usize, n: usize) {
    source.append(
        SHARD,
        (from..from + n)
            .map(|i| (format!("pk-{i}"), Bytes::from(format!("r{i}"))))
            .collect(),
    );
}

/// A store that "crashes" the worker once: its first checkpoint write fails
/// for good, as if the process died right after the emit.
fn crash_before_checkpoint(memory: &MemoryCheckpointStore) -> Arc<InterceptedStore> {
    let store = InterceptedStore::new(memory, |write| match write {
        0 => Write::Fail(Error::checkpoint_permanent("the worker died here")),
        _ => Write::Pass,
    });
    Arc::new(store.keeping_pending_batches())
}

/// The lease of a worker that holds `SHARD` for good.
fn unfenced() -> LeaseHandle {
    LeaseHandle::new(Lease::unfenced(SHARD, "w"))
}

fn consumer(
    lease: LeaseHandle,
    source: &ScriptedSource,
    store: Arc<dyn CheckpointStore>,
    emitter: &RecordingEmitter<String>,
    config: ShardConfig,
    limits: BufferLimits,
) -> ShardConsumer<Utf8Transformer> {
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .buffer_limits(limits)
        .build()
        .unwrap();
    ShardConsumer::new(
        ShardEnv::new(Arc::new(source.clone()), store, config),
        shard_context(SHARD),
        lease,
        pipeline,
    )
}

/// Runs `consumer` until `emitter` holds `items` items, then shuts it down.
async fn run_until_items(
    consumer: ShardConsumer<Utf8Transformer>,
    emitter: &RecordingEmitter<String>,
    items: usize,
) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    assert!(
        emitter
            .wait_for_items(items, Duration::from_secs(600))
            .await
    );
    cancel.cancel();
    task.await.unwrap();
}

fn ranges(batches: &[RecordedBatch<String>]) -> Vec<(Position, Position)> {
    batches
        .iter()
        .map(|b| (b.first.clone(), b.last.clone()))
        .collect()
}

/// Run 1 emits an age-cut batch of 5 records and dies before its
/// checkpoint; 7 more records arrive; run 2 starts from the same store with
/// smaller limits. Returns the batches of both runs.
async fn crash_then_replay(
    config: ShardConfig,
) -> (Vec<RecordedBatch<String>>, Vec<RecordedBatch<String>>) {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    append(&source, 0, 5);
    let memory = MemoryCheckpointStore::new();
    let crashing = crash_before_checkpoint(&memory);
    let age_cut = BufferLimits::default()
        .with_max_records(100)
        .with_max_age(Duration::from_secs(2));
    let first_run = RecordingEmitter::new();
    let report = consumer(
        unfenced(),
        &source,
        crashing.clone(),
        &first_run,
        config,
        age_cut,
    )
    .run(CancellationToken::new())
    .await;
    assert!(
        matches!(report.outcome, ShardOutcome::Failed(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        memory.get(&key()).await.unwrap(),
        None,
        "nothing acknowledged"
    );

    // Live traffic while the worker is down; the restart also reads with
    // other limits (a count of 3), which must not cut the replayed batch.
    append(&source, 5, 7);
    let second_run = RecordingEmitter::new();
    let limits = BufferLimits::default()
        .with_max_records(3)
        .with_max_age(Duration::from_secs(2));
    let consumer = consumer(unfenced(), &source, crashing, &second_run, config, limits);
    run_until_items(consumer, &second_run, 12).await;
    (first_run.batches(), second_run.batches())
}

#[tokio::test(start_paused = true)]
async fn a_replayed_age_cut_batch_is_cut_where_it_was_cut() {
    let (first, second) = crash_then_replay(ShardConfig::default()).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].items.len(), 5);
    // The replay: the same 5 records, not 3 (the new limit) nor 12 (all
    // that is there now); then the new records by the new limits.
    assert_eq!(ranges(&second[..1]), ranges(&first));
    assert_eq!(second[0].items, first[0].items);
    let sizes: Vec<usize> = second.iter().map(|b| b.items.len()).collect();
    assert_eq!(sizes, [5, 3, 3, 1]);
}

#[tokio::test(start_paused = true)]
async fn without_replay_stable_batches_the_replay_is_cut_by_the_new_limits() {
    // What the option buys: turned off, the replayed records land in a
    // batch with another range, which a sink naming outputs by range loads
    // a second time.
    let (first, second) =
        crash_then_replay(ShardConfig::default().with_replay_stable_batches(false)).await;
    assert_eq!(first[0].items.len(), 5);
    assert_ne!(ranges(&second[..1]), ranges(&first));
    assert_eq!(second[0].items.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_pending_batch_at_or_before_the_checkpoint_is_ignored() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    append(&source, 0, 6);
    let store = MemoryCheckpointStore::new();
    let records = source.shard_records(SHARD);
    let lease = Lease::unfenced(SHARD, "w");
    // A stale pending batch (record 1) under a newer checkpoint (record 2).
    store
        .set_pending_batch(&key(), &records[1].position(), &lease)
        .await
        .unwrap();
    store
        .set(&key(), &Checkpoint::At(records[2].position()))
        .await
        .unwrap();
    let emitter = RecordingEmitter::new();
    let consumer = consumer(
        unfenced(),
        &source,
        Arc::new(store.clone()),
        &emitter,
        ShardConfig::default(),
        BufferLimits::default().with_max_records(2),
    );
    run_until_items(consumer, &emitter, 3).await;
    let sizes: Vec<usize> = emitter.batches().iter().map(|b| b.items.len()).collect();
    assert_eq!(sizes, [2, 1], "cut by the limits from the checkpoint on");
    assert_eq!(emitter.items(), ["r3", "r4", "r5"]);
}

#[tokio::test(start_paused = true)]
async fn only_batches_cut_by_time_record_a_pending_end() {
    // Count-cut batches are stable by themselves: no extra store write.
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    append(&source, 0, 4);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        consumer(
            unfenced(),
            &source,
            Arc::new(store.clone()),
            &emitter,
            ShardConfig::default(),
            BufferLimits::default().with_max_records(2),
        )
        .run(cancel.clone()),
    );
    assert!(emitter.wait_for_items(4, Duration::from_secs(600)).await);
    assert_eq!(store.pending_batch(&key()).await.unwrap(), None);
    // One more record, cut by age: its end is recorded before the emit.
    append(&source, 4, 1);
    assert!(emitter.wait_for_items(5, Duration::from_secs(600)).await);
    cancel.cancel();
    task.await.unwrap();
    let last = source.shard_records(SHARD)[4].position();
    assert_eq!(store.pending_batch(&key()).await.unwrap(), Some(last));
}

#[tokio::test(start_paused = true)]
async fn a_takeover_in_the_middle_of_a_batch_replays_the_same_range() {
    use kinesis_connectors_core::LeaseStore;
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    append(&source, 0, 4);
    let memory = MemoryCheckpointStore::new();
    memory.create_lease(&key(), &[]).await.unwrap();
    let a = memory
        .take_lease(&key(), 0, "worker-a")
        .await
        .unwrap()
        .unwrap();
    let crashing = crash_before_checkpoint(&memory);
    let age_cut = BufferLimits::default()
        .with_max_records(100)
        .with_max_age(Duration::from_secs(2));
    let worker_a = RecordingEmitter::new();
    let report = consumer(
        LeaseHandle::new(a.clone()),
        &source,
        crashing,
        &worker_a,
        ShardConfig::default(),
        age_cut,
    )
    .run(CancellationToken::new())
    .await;
    assert!(matches!(report.outcome, ShardOutcome::Failed(_)));

    // Worker B takes the lease over; more records arrived meanwhile.
    append(&source, 4, 5);
    let b = memory
        .take_lease(&key(), a.counter, "worker-b")
        .await
        .unwrap()
        .unwrap();
    let worker_b = RecordingEmitter::new();
    let consumer = consumer(
        LeaseHandle::new(b),
        &source,
        Arc::new(memory.clone()),
        &worker_b,
        ShardConfig::default(),
        age_cut,
    );
    run_until_items(consumer, &worker_b, 9).await;
    let a_batches = worker_a.batches();
    let b_batches = worker_b.batches();
    assert_eq!(ranges(&b_batches[..1]), ranges(&a_batches));
    assert_eq!(b_batches[1].items.len(), 5, "then the new records");
    // The old owner can no longer record a pending batch.
    let stale = memory
        .set_pending_batch(&key(), &Position::new(1u64.into()), &a)
        .await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_cut_inside_an_aggregate_is_replayed_to_the_same_sub_record() {
    // One KPL aggregate (sequence 100, sub-records 0..6) read in pages of 3:
    // shutdown after the first page cuts the batch at sub-record 2, and the
    // worker dies before that batch's checkpoint.
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    source.append_records(SHARD, sub_records(100, 0..6));
    source.set_page_size(3);
    let memory = MemoryCheckpointStore::new();
    let crashing = crash_before_checkpoint(&memory);
    let limits = BufferLimits::default()
        .with_max_records(100)
        .with_max_age(Duration::from_secs(2));
    let first_run = RecordingEmitter::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        consumer(
            unfenced(),
            &source,
            crashing.clone(),
            &first_run,
            ShardConfig::default(),
            limits,
        )
        .run(cancel.clone()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(first_run.items(), ["s0", "s1", "s2"]);

    // The restart reads whole pages; its first batch still ends at s2.
    source.set_page_size(100);
    let second_run = RecordingEmitter::new();
    let consumer = consumer(
        unfenced(),
        &source,
        crashing,
        &second_run,
        ShardConfig::default(),
        limits,
    );
    run_until_items(consumer, &second_run, 6).await;
    let batches = second_run.batches();
    assert_eq!(ranges(&batches[..1]), ranges(&first_run.batches()));
    let last = Position {
        sequence: 100u64.into(),
        sub_sequence: Some(2),
    };
    assert_eq!(batches[0].last, last);
    assert_eq!(batches[1].items, ["s3", "s4", "s5"]);
}
