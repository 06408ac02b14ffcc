//! The worker-wide memory budget: what shards hold stays under it, reading
//! slows down instead of dropping records, and a spent budget never stalls
//! a shard, not even one replaying a batch.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    Batch, BufferLimits, BytesTransformer, CancellationToken, CheckpointStore, EmitOutcome,
    Emitter, Lease, LeaseHandle, MemoryBudget, MemoryCheckpointStore, Pipeline, Position,
    RecordsPage, Result, SequenceNumber, ShardConfig, ShardConsumer, ShardEnv, ShardInfo, ShardKey,
    ShardOutcome, StreamConsumer, async_trait,
};
use kinesis_connectors_testkit::{
    HookedSource, RecordingEmitter, ScriptedSource, SourceHooks, shard_context,
};

const MIB: usize = 1024 * 1024;
const RECORD: usize = 64 * 1024;

/// Payload bytes handed out by the source and not yet delivered by the
/// emitter, across all shards: what the worker really holds of them.
#[derive(Default)]
struct Outstanding {
    now: AtomicI64,
    most: AtomicI64,
}

impl Outstanding {
    fn add(&self, bytes: i64) {
        let now = self.now.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.most.fetch_max(now, Ordering::SeqCst);
    }
}

/// Counts the payload of every page the source returns.
struct CountPages(Arc<Outstanding>);

impl SourceHooks for CountPages {
    fn on_page(&self, page: &mut RecordsPage) {
        let bytes: usize = page.records.iter().map(|r| r.data.len()).sum();
        self.0.add(bytes as i64);
    }
}

/// Records what it delivers (after a pause, like a real sink) and gives
/// its payload back to the count.
struct Delivering {
    recorded: RecordingEmitter<Bytes>,
    outstanding: Arc<Outstanding>,
}

#[async_trait]
impl Emitter<Bytes> for Delivering {
    async fn emit(&self, batch: &Batch<Bytes>) -> Result<EmitOutcome> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = self.recorded.emit(batch).await?;
        let bytes: usize = batch.items.iter().map(Bytes::len).sum();
        self.outstanding.add(-(bytes as i64));
        Ok(outcome)
    }
}

fn payload(shard: usize, i: usize) -> Bytes {
    let mut data = vec![b'.'; RECORD];
    let tag = format!("{shard}/{i:04}");
    data[..tag.len()].copy_from_slice(tag.as_bytes());
    Bytes::from(data)
}

fn source_of(shards: usize, records: usize) -> ScriptedSource {
    let source = ScriptedSource::new();
    source.set_page_size(8);
    for shard in 0..shards {
        let id = format!("shard-{shard}");
        source.add_shard(ShardInfo::open(&id));
        source.append(
            &id,
            (0..records)
                .map(|i| (format!("pk-{i}"), payload(shard, i)))
                .collect(),
        );
    }
    source
}

#[tokio::test(start_paused = true)]
async fn shards_hold_no_more_than_the_budget_and_drop_nothing() {
    const SHARDS: usize = 4;
    const RECORDS: usize = 48;
    let source = source_of(SHARDS, RECORDS);
    let outstanding = Arc::new(Outstanding::default());
    let recorded = RecordingEmitter::new();
    let emitter = Arc::new(Delivering {
        recorded: recorded.clone(),
        outstanding: Arc::clone(&outstanding),
    });
    // A batch (16 records, 1 MiB) and a page (8 records, 512 KiB) per shard
    // would hold 6 MiB across four shards without the budget. Batches never
    // age out within the test: a shard waiting for room while the others
    // sit on part-full batches would stall.
    let limits = BufferLimits::default()
        .with_max_records(16)
        .with_max_age(Duration::from_secs(3_600));
    let budget = MemoryBudget::new(2 * MIB).unwrap();
    let consumer = StreamConsumer::builder(
        "test-app",
        "test-stream",
        Arc::new(HookedSource::new(
            source.clone(),
            CountPages(Arc::clone(&outstanding)),
        )),
        Arc::new(MemoryCheckpointStore::new()),
        move |_: &_| {
            Pipeline::builder(
                BytesTransformer,
                Arc::clone(&emitter) as Arc<dyn Emitter<Bytes>>,
            )
            .buffer_limits(limits)
            .build()
        },
    )
    .memory_budget(budget.clone())
    .build()
    .unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(consumer.run(cancel.clone()));
    let all = SHARDS * RECORDS;
    // Whatever part-full batches remain once every shard is read wait for
    // their age; everything before them flows because a waiting reader
    // makes the buffers go.
    let before_any_age = all - SHARDS * 16;
    assert!(
        recorded
            .wait_for_items(before_any_age, Duration::from_secs(600))
            .await,
        "a spent budget stalled the shards: {} of {all} records delivered",
        recorded.item_count()
    );
    assert!(
        recorded
            .wait_for_items(all, Duration::from_secs(7_200))
            .await,
        "records were lost: {} of {all} delivered",
        recorded.item_count()
    );
    cancel.cancel();
    run.await.unwrap().unwrap();

    let most = outstanding.most.load(Ordering::SeqCst) as usize;
    assert!(
        most <= budget.bytes(),
        "the shards held {most} bytes of records at once, over the {} byte budget",
        budget.bytes()
    );
    assert!(
        most >= 8 * RECORD,
        "the count saw at least one page ({most} bytes at most)"
    );
    let mut seen: HashMap<Bytes, usize> = HashMap::new();
    for item in recorded.items() {
        *seen.entry(item).or_default() += 1;
    }
    assert_eq!(seen.len(), all, "every record delivered");
    assert!(seen.values().all(|&n| n == 1), "each record once");
    assert_eq!(budget.in_use(), 0, "every reservation came back");
    assert!(budget.high_water() <= budget.bytes());
}

#[tokio::test(start_paused = true)]
async fn a_replayed_batch_larger_than_the_budget_is_cut_at_its_age() {
    const RECORDS: usize = 40;
    let source = source_of(1, RECORDS);
    let shard = "shard-0";
    let sequences: Vec<SequenceNumber> = source
        .shard_records(shard)
        .iter()
        .map(|r| r.sequence_number.clone())
        .collect();
    // The last stop recorded a time-cut batch ending at record 30 (1.9 MiB):
    // more than the 1 MiB budget can hold at once.
    let store = MemoryCheckpointStore::new();
    let lease = Lease::unfenced(shard, "worker");
    let key = ShardKey::new("test-app", "test-stream", shard);
    store
        .set_pending_batch(&key, &Position::new(sequences[30].clone()), &lease)
        .await
        .unwrap();
    let recorded = RecordingEmitter::<Bytes>::new();
    let pipeline = Pipeline::builder(BytesTransformer, Arc::new(recorded.clone()))
        .buffer_limits(
            BufferLimits::default()
                .with_max_records(1_000)
                .with_max_age(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let env = ShardEnv::new(
        Arc::new(source.clone()),
        Arc::new(store.clone()),
        ShardConfig::default(),
    )
    .with_memory_budget(MemoryBudget::new(MIB).unwrap());
    let consumer = ShardConsumer::new(env, shard_context(shard), LeaseHandle::new(lease), pipeline);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(consumer.run(cancel.clone()));
    assert!(
        recorded
            .wait_for_items(RECORDS, Duration::from_secs(600))
            .await,
        "the replayed batch stalled the shard: {} of {RECORDS} records delivered",
        recorded.item_count()
    );
    cancel.cancel();
    let report = run.await.unwrap();
    assert!(matches!(report.outcome, ShardOutcome::Shutdown));
    let first = &recorded.batches()[0];
    assert!(
        first.last < Position::new(sequences[30].clone()),
        "the first batch was cut before the recorded end it could not reach: {:?}",
        first.last
    );
    assert_eq!(
        recorded.item_count(),
        RECORDS,
        "nothing dropped or repeated"
    );
}
