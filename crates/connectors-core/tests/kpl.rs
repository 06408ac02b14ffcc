//! KPL aggregates through the shard loop: the sub-records a reader makes
//! with `kpl::deaggregate` are checkpointed as `(sequence, sub)`, and a
//! restart resumes inside the aggregate without emitting anything twice.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesis_connectors_core::{
    Batch, BufferLimits, CancellationToken, Checkpoint, CheckpointStore, EmitOutcome, Emitter,
    Error, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline, Position, Record, RetryPolicy,
    ShardConfig, ShardConsumer, ShardEnv, ShardInfo, ShardKey, StartPosition, Utf8Transformer,
    async_trait, kpl,
};
use kinesis_connectors_testkit::{RecordingEmitter, ScriptedSource, shard_context};

const SHARD: &str = "shard-0";

/// Delivers the first batch, then fails for good: a crash right after the
/// first checkpoint, as far as the store can tell.
#[derive(Default)]
struct FirstBatchOnly {
    delivered: Mutex<Vec<String>>,
}

#[async_trait]
impl Emitter<String> for FirstBatchOnly {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let mut delivered = self.delivered.lock().unwrap();
        if !delivered.is_empty() {
            return Err(Error::emit_permanent("the worker crashed"));
        }
        delivered.extend(batch.items.iter().cloned());
        Ok(EmitOutcome::delivered())
    }
}

fn consumer(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
) -> ShardConsumer<Utf8Transformer> {
    let retry = RetryPolicy::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_max_attempts(1);
    ShardConsumer::new(
        ShardEnv::new(
            Arc::new(source.clone()),
            Arc::new(store.clone()),
            ShardConfig::default().with_retry(retry),
        ),
        shard_context(SHARD),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
        Pipeline::builder(Utf8Transformer, emitter)
            .buffer_limits(BufferLimits::default().with_max_records(3))
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_batch_ending_inside_an_aggregate_resumes_at_the_next_sub_record() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    // Sequence 100: an aggregate of five; sequence 101: a plain record.
    let users: Vec<_> = (0..5)
        .map(|i| Record::new(format!("s{i}"), format!("user-{i}"), 0u64))
        .collect();
    let aggregate = Record::new(kpl::aggregate(&users), "user-0", 100u64);
    let mut records = kpl::deaggregate(&aggregate).unwrap();
    records.push(Record::new("plain", "user-9", 101u64));
    source.append_records(SHARD, records);
    let store = MemoryCheckpointStore::new();
    let key = ShardKey::new("test-app", "test-stream", SHARD);

    // First worker: the batch of three ends at sub-record 2, then it crashes.
    let first = Arc::new(FirstBatchOnly::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer(&source, &store, first.clone()).run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(*first.delivered.lock().unwrap(), ["s0", "s1", "s2"]);
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(Checkpoint::At(Position {
            sequence: 100u64.into(),
            sub_sequence: Some(2),
        }))
    );

    // Restart: at the aggregate's sequence, skipping the done sub-records.
    let second = RecordingEmitter::new();
    let cancel = CancellationToken::new();
    let task =
        tokio::spawn(consumer(&source, &store, Arc::new(second.clone())).run(cancel.clone()));
    second.wait_for_items(3, Duration::from_secs(600)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        source.iterator_requests(SHARD).last(),
        Some(&StartPosition::AtSequence(100u64.into()))
    );
    assert_eq!(second.items(), ["s3", "s4", "plain"]);
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(Checkpoint::At(Position::new(101u64.into())))
    );
}
