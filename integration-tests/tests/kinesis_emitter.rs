//! `KinesisEmitter` on the local stack (kinesis-local): a stream-to-stream
//! pipeline where every record of a 2-shard source stream arrives in a
//! 3-shard target stream with its partition key, an oversized item rejected
//! to the dead-letter policy while the rest of its batch is delivered, and
//! the testkit's emitter conformance suite counting the target stream.
//!
//! Run with `cargo xtask it kinesis_emitter`. Every test uses its own
//! streams, so they may run in parallel with the other integration tests.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use integration_tests::consumer::{Retrieval, Utf8ConsumerSpec, utf8_consumer};
use integration_tests::records::{self, PutOptions, put_records};
use integration_tests::{
    RunningConsumer, create_stream, kinesis_client, unique_name, wait_for_progress,
};
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, Emitter, FailedRecord, MemoryCheckpointStore,
    ShardFailurePolicy, StreamConsumer, Utf8Transformer,
};
use kinesis_connectors_kinesis::KinesisEmitter;
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, RecordingEmitter, emitter_conformance,
};

/// The bound of every wait for the pipeline to deliver.
const WAIT: Duration = Duration::from_secs(150);
/// The checkpoint namespace of every consumer here.
const APP: &str = "kinesis-emitter-it";

/// One record of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Seen {
    partition_key: String,
    data: String,
}

/// Every record of every shard of `stream`, from `TRIM_HORIZON`.
async fn read_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<Seen>> {
    records::read_stream(client, stream)
        .await?
        .iter()
        .map(|record| {
            Ok(Seen {
                partition_key: record.partition_key().unwrap_or_default().to_owned(),
                data: records::utf8_data(record)?,
            })
        })
        .collect()
}

fn consumer(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    emitter: Arc<dyn Emitter<String>>,
    bad_records: BadRecordPolicy,
) -> StreamConsumer<Utf8Transformer> {
    utf8_consumer(Utf8ConsumerSpec {
        kinesis,
        retrieval: Retrieval::Polling,
        application: APP,
        stream,
        store: Arc::new(MemoryCheckpointStore::new()),
        emitter,
        limits: BufferLimits::default()
            .with_max_records(400)
            .with_max_age(Duration::from_secs(1)),
        bad_records,
        on_shard_failure: ShardFailurePolicy::default(),
    })
}

/// Polls the target stream every second until `expected` records are in it;
/// fails after `WAIT`.
async fn wait_for(
    kinesis: &aws_sdk_kinesis::Client,
    target: &str,
    expected: usize,
) -> (Vec<Seen>, Duration) {
    let last = Mutex::new(Vec::new());
    let waited = wait_for_progress(
        &format!("records in {target}"),
        WAIT,
        Duration::from_secs(1),
        || async {
            let seen = read_stream(kinesis, target).await?;
            let distinct = seen.iter().collect::<HashSet<_>>().len();
            *last.lock().unwrap() = seen;
            Ok((
                distinct >= expected,
                format!("only {distinct} of {expected} records"),
            ))
        },
    )
    .await;
    (last.into_inner().unwrap(), waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_emitter_every_record_arrives_in_the_target_stream() {
    let kinesis = kinesis_client().await;
    let source = unique_name("kin-it-src");
    let target = unique_name("kin-it-dst");
    create_stream(&kinesis, &source, 2).await.unwrap();
    create_stream(&kinesis, &target, 3).await.unwrap();
    let started = Instant::now();
    let records: Vec<(String, String)> = (0..1_200)
        .map(|i| (format!("pk-{:02}", i % 20), format!("forward {i:05}")))
        .collect();
    put_records(&kinesis, &source, records.clone(), PutOptions::default())
        .await
        .unwrap();
    let produced_in = started.elapsed();

    let emitter = KinesisEmitter::builder(kinesis.clone(), &target, Utf8Transformer)
        .build()
        .unwrap();
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &source,
        Arc::new(emitter),
        BadRecordPolicy::Stop,
    ));
    let (seen, waited) = wait_for(&kinesis, &target, records.len()).await;
    let report = running.stop().await;

    let expected: HashSet<Seen> = records
        .iter()
        .map(|(pk, data)| Seen {
            partition_key: pk.clone(),
            data: data.clone(),
        })
        .collect();
    let arrived: HashSet<Seen> = seen.iter().cloned().collect();
    assert_eq!(
        arrived, expected,
        "every record arrived once, with its partition key"
    );
    assert_eq!(
        seen.len(),
        records.len(),
        "a clean run writes no duplicates"
    );
    eprintln!(
        "stream to stream: {} records ({produced_in:?} to write, {} emitted) arrived {waited:?} later; total {:?}",
        records.len(),
        report.records_emitted(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_emitter_an_oversized_item_goes_to_the_dead_letter_policy() {
    let kinesis = kinesis_client().await;
    let source = unique_name("kin-it-big-src");
    let target = unique_name("kin-it-big-dst");
    create_stream(&kinesis, &source, 1).await.unwrap();
    create_stream(&kinesis, &target, 1).await.unwrap();
    // The source takes 1 MiB records; prefixing each item on the way out
    // makes one of them too large for the target.
    let big = "b".repeat(1024 * 1024 - 10);
    let records = vec![
        ("k".to_owned(), "small 1".to_owned()),
        ("k".to_owned(), big.clone()),
        ("k".to_owned(), "small 2".to_owned()),
    ];
    put_records(&kinesis, &source, records, PutOptions::default())
        .await
        .unwrap();

    struct Prefixed;
    impl kinesis_connectors_core::Transformer for Prefixed {
        type Item = String;
        fn to_item(
            &self,
            record: &kinesis_connectors_core::Record,
        ) -> kinesis_connectors_core::Result<String> {
            Utf8Transformer.to_item(record)
        }
    }

    impl kinesis_connectors_core::Encoder for Prefixed {
        fn from_item(
            &self,
            item: &String,
            out: &mut Vec<u8>,
        ) -> kinesis_connectors_core::Result<()> {
            out.extend_from_slice(b"forwarded: ");
            out.extend_from_slice(item.as_bytes());
            Ok(())
        }
    }
    let emitter = KinesisEmitter::builder(kinesis.clone(), &target, Prefixed)
        .build()
        .unwrap();
    let dead_letters = RecordingEmitter::<FailedRecord>::new();
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &source,
        Arc::new(emitter),
        BadRecordPolicy::DeadLetter(Arc::new(dead_letters.clone())),
    ));
    let (seen, _) = wait_for(&kinesis, &target, 2).await;
    let started = Instant::now();
    while dead_letters.item_count() == 0 {
        assert!(started.elapsed() < WAIT, "no dead letter after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
    let data: Vec<&str> = seen.iter().map(|s| s.data.as_str()).collect();
    assert_eq!(data, vec!["forwarded: small 1", "forwarded: small 2"]);
    let failed: Vec<FailedRecord> = dead_letters.items();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].error.contains("1 MiB"), "{}", failed[0].error);
    assert!(failed[0].data.ends_with(big.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_emitter_conformance_on_the_stack() {
    let kinesis = kinesis_client().await;
    let target = unique_name("kin-it-conformance");
    create_stream(&kinesis, &target, 4).await.unwrap();
    let started = Instant::now();
    let emitter = KinesisEmitter::builder(kinesis.clone(), &target, Utf8Transformer)
        .build()
        .unwrap();
    let (client, stream) = (kinesis.clone(), target.clone());
    // At-least-once: a replay writes its records again and consumers
    // deduplicate, so delivered = distinct payloads in the target stream.
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item {i}")).delivered_count(move || {
            let (kinesis, stream) = (client.clone(), stream.clone());
            Box::pin(async move {
                read_stream(&kinesis, &stream)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.data)
                    .collect::<HashSet<_>>()
                    .len()
            })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let all = read_stream(&kinesis, &target).await.unwrap();
    let distinct = all.iter().map(|s| &s.data).collect::<HashSet<_>>().len();
    eprintln!(
        "conformance: {} records in the target ({distinct} distinct, {} from the replay) in {:?}",
        all.len(),
        all.len() - distinct,
        started.elapsed()
    );
}
