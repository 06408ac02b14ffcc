//! The `producer` example binary on the stack: run with a config file and
//! `--count`, it creates the stream and every event arrives, as JSON, once.
//!
//! Run with `cargo xtask it example_producer`. The test builds the binary
//! with the cargo that runs it (a link step when the library is built).

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use integration_tests::{example_binary, kinesis_client, unique_name};
use producer::Event;

const EVENTS: u64 = 120;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_producer_binary_sends_every_event_once() {
    let binary = tokio::task::spawn_blocking(|| example_binary("producer", "producer"))
        .await
        .unwrap();
    let stream = unique_name("producer");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/producer/config/producer.toml"),
    )
    .unwrap();
    let config = std::env::temp_dir().join(format!("{stream}.toml"));
    std::fs::write(
        &config,
        shipped.replace("\"demo-events\"", &format!("\"{stream}\"")),
    )
    .unwrap();

    let output = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            Command::new(binary)
                .args(["--config".as_ref(), config.as_os_str()])
                .args(["--count", &EVENTS.to_string()])
                .stdin(Stdio::null())
                .output()
                .expect("run producer")
        }
    })
    .await
    .unwrap();
    std::fs::remove_file(&config).ok();
    assert!(
        output.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Read every shard from the start until all events are there.
    let kinesis = kinesis_client().await;
    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap_or_default();
    assert_eq!(shards.len(), 2, "the config creates two shards");
    let mut ids = Vec::new();
    let deadline = Instant::now() + WAIT;
    for shard in shards {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(current) = iterator {
            let page = kinesis
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .unwrap();
            for record in page.records() {
                let event: Event = serde_json::from_slice(record.data().as_ref()).unwrap();
                assert_eq!(record.partition_key(), Some(event.user_id.as_str()));
                ids.push(event.id);
            }
            if page.millis_behind_latest() == Some(0) && page.records().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reading the stream took too long"
            );
            iterator = page.next_shard_iterator;
        }
    }
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len() as u64, EVENTS, "events in the stream");
    assert_eq!(distinct, (0..EVENTS).collect(), "every id once");
}
