//! KPL-aggregated data through whole pipelines on the local stack
//! (kinesis-local): a stream-to-stream stage packs items into aggregates
//! with `KinesisEmitter::aggregate`, and a second consumer reads the target
//! stream item by item with `PollingSource`'s de-aggregation (and again
//! with `FanOutSource`'s), its batches
//! cut inside aggregates, across a restart: every item arrives exactly
//! once and the checkpoints land inside aggregates.
//!
//! Run with `cargo xtask it kpl_pipeline`. Every test uses its own
//! streams, so they may run in parallel with the other integration tests.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::consumer::{Retrieval, Utf8ConsumerSpec, utf8_consumer};
use integration_tests::records::{self, PutOptions, put_records};
use integration_tests::{RunningConsumer, create_stream, kinesis_client, unique_name, wait_until};
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, Checkpoint, CheckpointStore, Emitter, MemoryCheckpointStore,
    ShardFailurePolicy, ShardKey, StreamConsumer, Utf8Transformer, kpl,
};
use kinesis_connectors_kinesis::{Aggregation, KinesisEmitter};
use kinesis_connectors_testkit::RecordingEmitter;

/// The bound of every wait for a pipeline to deliver.
const WAIT: Duration = Duration::from_secs(150);
/// How often the waits look.
const POLL: Duration = Duration::from_millis(250);
/// Items written to the source stream.
const ITEMS: usize = 1_200;
/// The reader's batch size: prime, so batches end inside aggregates.
const READ_BATCH: usize = 7;

/// A consumer of `stream` named `application`, checkpointing in `store`.
fn consumer(
    kinesis: &aws_sdk_kinesis::Client,
    retrieval: &Retrieval,
    application: &str,
    stream: &str,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
    max_records: usize,
) -> StreamConsumer<Utf8Transformer> {
    utf8_consumer(Utf8ConsumerSpec {
        kinesis,
        retrieval: retrieval.clone(),
        application,
        stream,
        store: Arc::new(store.clone()),
        emitter,
        limits: BufferLimits::default()
            .with_max_records(max_records)
            .with_max_age(Duration::from_secs(1)),
        bad_records: BadRecordPolicy::Stop,
        on_shard_failure: ShardFailurePolicy::StopOnAny,
    })
}

/// The shard ids of `stream`.
async fn shard_ids(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()
        .iter()
        .map(|shard| shard.shard_id().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_pipeline_aggregated_items_are_read_back_once_across_a_restart() {
    read_back_across_a_restart(false).await;
}

/// The same, the aggregates read back with enhanced fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_pipeline_fan_out_reads_aggregated_items_back_once_across_a_restart() {
    read_back_across_a_restart(true).await;
}

async fn read_back_across_a_restart(fan_out: bool) {
    let started = Instant::now();
    let kinesis = kinesis_client().await;
    let source = unique_name("kpl-src");
    let target = unique_name("kpl-dst");
    create_stream(&kinesis, &source, 2).await.unwrap();
    create_stream(&kinesis, &target, 3).await.unwrap();
    let reading = Retrieval::on(fan_out, &kinesis, &target, "kpl-read").await;
    let items: Vec<(String, String)> = (0..ITEMS)
        .map(|i| (format!("pk-{:02}", i % 40), format!("item {i:05}")))
        .collect();
    put_records(&kinesis, &source, items.clone(), PutOptions::default())
        .await
        .unwrap();

    // Stage 1: plain records in, KPL aggregates out.
    let packer = KinesisEmitter::builder(kinesis.clone(), &target, Utf8Transformer)
        .aggregate(Aggregation::default())
        .build()
        .unwrap();
    let stage1 = RunningConsumer::start(consumer(
        &kinesis,
        &Retrieval::Polling,
        "kpl-pack",
        &source,
        &MemoryCheckpointStore::new(),
        Arc::new(packer),
        400,
    ));

    // Stage 2: the aggregates read back item by item, stopped once partway
    // and started again from its checkpoints.
    let store = MemoryCheckpointStore::new();
    let read = RecordingEmitter::<String>::new();
    let start_reader = || {
        RunningConsumer::start(consumer(
            &kinesis,
            &reading,
            "kpl-read",
            &target,
            &store,
            Arc::new(read.clone()),
            READ_BATCH,
        ))
    };
    let first = start_reader();
    wait_until("a third of the items read back", WAIT, POLL, || async {
        read.item_count() >= ITEMS / 3
    })
    .await;
    first.stop().await;
    let before_restart = read.item_count();
    let second = start_reader();
    wait_until("every item read back", WAIT, POLL, || async {
        read.item_count() >= ITEMS
    })
    .await;
    // Time for anything emitted twice to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.stop().await;
    stage1.stop().await;

    let got = read.items();
    let distinct: HashSet<&String> = got.iter().collect();
    let expected: HashSet<&String> = items.iter().map(|(_, data)| data).collect();
    assert_eq!(distinct, expected, "every item is read back");
    assert_eq!(
        got.len(),
        ITEMS,
        "nothing is read twice across a graceful restart"
    );

    // The target holds aggregates, far fewer records than items.
    let stored = records::read_stream(&kinesis, &target).await.unwrap();
    let aggregates = stored
        .iter()
        .filter(|record| kpl::is_aggregated(record.data().as_ref()))
        .count();
    assert!(
        aggregates > 0 && stored.len() < ITEMS / 10,
        "{} records in the target, {aggregates} of them aggregates, for {ITEMS} items",
        stored.len()
    );

    // The reader checkpointed inside aggregates: (sequence, sub-sequence).
    let mut inside = 0;
    for shard in shard_ids(&kinesis, &target).await {
        let key = ShardKey::new("kpl-read", target.as_str(), shard.as_str());
        if let Some(Checkpoint::At(position)) = store.get(&key).await.unwrap()
            && position.sub_sequence.is_some()
        {
            inside += 1;
        }
    }
    assert!(
        inside > 0,
        "no shard's checkpoint names a sub-record of an aggregate"
    );
    eprintln!(
        "kpl pipeline: {ITEMS} items packed into {} records ({aggregates} aggregates), \
         read back in batches of {READ_BATCH} ({before_restart} before the restart), \
         each once; {inside} checkpoints inside aggregates; {:?}",
        stored.len(),
        started.elapsed()
    );
}
