//! What the smoke tests of the example binaries share (`example_*.rs`):
//! each test fills a fresh stream with the producer's events, runs the
//! example's `run` from its shipped config file (names made unique), waits
//! until the sink holds every event, stops it and checks the report and the
//! Redis checkpoints.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use example_support::{ConsumerSettings, StoreKind, check_report};
use integration_tests::{kinesis_client, redis_url};
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_connectors_core::{CancellationToken, CheckpointStore, ShardKey, StreamReport};
use producer::{Event, ProducerConfig};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// The bound of every wait for a sink to hold what was produced.
pub(crate) const WAIT: Duration = Duration::from_secs(120);
/// Events each smoke test produces.
pub(crate) const EVENTS: u64 = 300;
/// Shards of each source stream.
pub(crate) const SHARDS: i32 = 2;

/// The example's shipped config file, parsed: `examples/<name>/config/<name>.toml`.
pub(crate) fn shipped_config<T: DeserializeOwned>(example: &str) -> T {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "examples",
        example,
        "config",
        &format!("{example}.toml"),
    ]
    .iter()
    .collect();
    example_support::load_config(&path).unwrap()
}

/// Points the consumer settings at this test's application and stream,
/// with checkpoints in the stack's Redis and short flush ages.
pub(crate) fn use_stream(settings: &mut ConsumerSettings, application: &str, stream: &str) {
    settings.application = application.to_owned();
    settings.stream = stream.to_owned();
    settings.discovery_interval_secs = 1;
    settings.batch.max_age_secs = 1.0;
    settings.checkpoints.store = StoreKind::Redis;
    settings.checkpoints.redis_url = Some(redis_url());
}

/// Creates `stream` with [`SHARDS`] shards and fills it with [`EVENTS`]
/// producer events (ids `0..EVENTS`); returns them.
pub(crate) async fn produce_events(stream: &str) -> Vec<Event> {
    let kinesis = kinesis_client().await;
    let config = ProducerConfig {
        create_shards: Some(SHARDS),
        payload_bytes: 50,
        ..ProducerConfig::new(stream, EVENTS)
    };
    let report = producer::produce(&kinesis, &config, &CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.sent, EVENTS);
    (0..EVENTS).map(|i| config.event(i)).collect()
}

/// An example's `run`, started in a task.
pub(crate) struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<anyhow::Result<StreamReport>>,
}

impl Running {
    /// Starts `run(cancel)` in a task.
    pub(crate) fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<StreamReport>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run(cancel.clone()));
        Self { cancel, handle }
    }

    /// Polls `done` every 500 ms until it returns true; fails after
    /// [`WAIT`] with the last progress it reported, or at once when the
    /// example stopped on its own.
    pub(crate) async fn wait_until<F, Fut>(&mut self, what: &str, mut done: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<(bool, String)>>,
    {
        let started = Instant::now();
        loop {
            if self.handle.is_finished() {
                let result = (&mut self.handle).await;
                panic!("{what}: the example stopped before it was done: {result:?}");
            }
            let (finished, progress) = done().await.expect(what);
            if finished {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "{what}: not done after {WAIT:?} ({progress})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Cancels the example and waits (at most 60 s) for its report, which
    /// must show no failed shard.
    pub(crate) async fn stop(self, name: &str) -> StreamReport {
        self.cancel.cancel();
        let report = tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the example did not stop within 60 s of cancel")
            .expect("the example's task panicked")
            .expect("the example returned an error");
        check_report(name, &report).unwrap();
        assert_eq!(
            report.shards.len(),
            SHARDS as usize,
            "one report per shard: {report:#?}"
        );
        report
    }
}

/// Checks that every shard of the report has a checkpoint in Redis, equal
/// to the last one the shard wrote.
pub(crate) async fn assert_checkpointed(application: &str, stream: &str, report: &StreamReport) {
    let store = RedisCheckpointStore::connect(&redis_url()).await.unwrap();
    for shard in &report.shards {
        let key = ShardKey::new(application, stream, shard.shard_id.as_str());
        let stored = store.get(&key).await.unwrap();
        assert!(stored.is_some(), "no checkpoint in Redis for {key}");
        assert_eq!(
            stored, shard.checkpoint,
            "{key}: Redis has the last checkpoint"
        );
        assert!(
            shard.stats.checkpoints_written > 0,
            "{key} wrote checkpoints: {:?}",
            shard.stats
        );
    }
}

/// The ids `0..EVENTS` that `keep` selects.
pub(crate) fn expected_ids(events: &[Event], keep: impl Fn(&Event) -> bool) -> BTreeSet<u64> {
    events.iter().filter(|e| keep(e)).map(|e| e.id).collect()
}
