//! The shard consumer's rules, one test each, on the testkit's scripted
//! source with paused tokio time (deterministic, no network).

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, BytesTransformer, CancellationToken, Checkpoint,
    CheckpointStore, Delivery, Error, FailedRecord, InitialPosition, JsonTransformer, JsonView,
    JsonViewTransformer, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline, Position,
    RetryPolicy, SequenceNumber, ShardConfig, ShardConsumer, ShardEnv, ShardInfo, ShardKey,
    ShardOutcome, ShardReport, StartPosition, Transformer, Utf8Transformer,
};
use kinesis_connectors_testkit::{
    FailingEmitter, Fault, PUSH_WAIT, RecordingEmitter, RejectingEmitter, ScriptedSource,
    shard_context,
};

use support::{InterceptedStore, Write, sub_records};

const SHARD: &str = "shard-0";

fn key() -> ShardKey {
    ShardKey::new("test-app", "test-stream", SHARD)
}

fn env(source: &ScriptedSource, store: &MemoryCheckpointStore, config: ShardConfig) -> ShardEnv {
    ShardEnv::new(Arc::new(source.clone()), Arc::new(store.clone()), config)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_max_attempts(4)
}

fn config() -> ShardConfig {
    ShardConfig::default().with_retry(fast_retry())
}

fn source_with(n: usize) -> (ScriptedSource, Vec<SequenceNumber>) {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    let seqs = append(&source, 0, n);
    (source, seqs)
}

/// A source whose one shard holds `records` and then ends.
fn closed_shard(records: Vec<(String, Bytes)>) -> (ScriptedSource, Vec<SequenceNumber>) {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    let seqs = source.append(SHARD, records);
    source.close_shard(SHARD, vec![]);
    (source, seqs)
}

fn append(source: &ScriptedSource, from: usize, n: usize) -> Vec<SequenceNumber> {
    source.append(
        SHARD,
        (from..from + n)
            .map(|i| (format!("pk-{}", i % 4), Bytes::from(format!("r{i}"))))
            .collect(),
    )
}

fn strings(emitter: &RecordingEmitter<String>) -> Vec<String> {
    emitter.items()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

fn pipeline_to(
    emitter: Arc<dyn kinesis_connectors_core::Emitter<String>>,
    max_records: usize,
) -> Pipeline<Utf8Transformer> {
    Pipeline::builder(Utf8Transformer, emitter)
        .buffer_limits(BufferLimits::default().with_max_records(max_records))
        .build()
        .unwrap()
}

/// A consumer of `SHARD` that holds its lease for good.
fn shard_consumer<T: Transformer>(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    config: ShardConfig,
    pipeline: Pipeline<T>,
) -> ShardConsumer<T> {
    ShardConsumer::new(
        env(source, store, config),
        shard_context(SHARD),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
        pipeline,
    )
}

/// Runs `SHARD` with [`config`], never cancelled, until it stops by itself.
async fn run_to_end<T: Transformer>(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    pipeline: Pipeline<T>,
) -> ShardReport {
    shard_consumer(source, store, config(), pipeline)
        .run(CancellationToken::new())
        .await
}

/// Decodes UTF-8 into `emitter`, with `policy` for records that are not.
fn utf8_pipeline(
    emitter: &RecordingEmitter<String>,
    policy: BadRecordPolicy,
) -> Pipeline<Utf8Transformer> {
    Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .bad_records(policy)
        .build()
        .unwrap()
}

/// Runs one shard until `done` says so (then cancels) or the shard ends by itself.
async fn run_until(
    consumer: ShardConsumer<Utf8Transformer>,
    emitter: &RecordingEmitter<String>,
    items: usize,
) -> ShardReport {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    emitter
        .wait_for_items(items, Duration::from_secs(600))
        .await;
    cancel.cancel();
    task.await.unwrap()
}

fn at(seq: &SequenceNumber) -> Checkpoint {
    Checkpoint::At(Position::new(seq.clone()))
}

#[tokio::test(start_paused = true)]
async fn starts_at_trim_horizon_without_checkpoint_and_checkpoints_after_emit() {
    let (source, seqs) = source_with(10);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 5),
    );
    let report = run_until(consumer, &emitter, 10).await;
    assert!(matches!(report.outcome, ShardOutcome::Shutdown));
    assert_eq!(strings(&emitter), expected(0..10));
    assert_eq!(
        source.iterator_requests(SHARD),
        vec![StartPosition::TrimHorizon]
    );
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[9])));
    assert_eq!(report.stats.batches_emitted, 2);
    assert_eq!(report.stats.records_emitted, 10);
}

#[tokio::test(start_paused = true)]
async fn resumes_after_the_stored_checkpoint() {
    let (source, seqs) = source_with(10);
    let store = MemoryCheckpointStore::new();
    store.set(&key(), &at(&seqs[3])).await.unwrap();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 100),
    );
    run_until(consumer, &emitter, 6).await;
    assert_eq!(
        source.iterator_requests(SHARD),
        vec![StartPosition::AfterSequence(seqs[3].clone())]
    );
    assert_eq!(strings(&emitter), expected(4..10));
}

#[tokio::test(start_paused = true)]
async fn initial_position_latest_and_at_timestamp_are_requested() {
    for (initial, wanted) in [
        (InitialPosition::Latest, StartPosition::Latest),
        (
            InitialPosition::AtTimestamp(SystemTime::UNIX_EPOCH),
            StartPosition::AtTimestamp(SystemTime::UNIX_EPOCH),
        ),
    ] {
        let (source, _) = source_with(3);
        let store = MemoryCheckpointStore::new();
        let emitter = RecordingEmitter::new();
        let consumer = shard_consumer(
            &source,
            &store,
            config().with_initial_position(initial),
            pipeline_to(Arc::new(emitter.clone()), 100),
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(consumer.run(cancel.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(source.iterator_requests(SHARD), vec![wanted]);
    }
}

#[tokio::test(start_paused = true)]
async fn partly_done_aggregated_record_resumes_at_sequence_and_skips_done_sub_records() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    source.append_records(SHARD, sub_records(100, 0..4));
    let store = MemoryCheckpointStore::new();
    let done = Checkpoint::At(Position {
        sequence: 100u64.into(),
        sub_sequence: Some(1),
    });
    store.set(&key(), &done).await.unwrap();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 100),
    );
    run_until(consumer, &emitter, 2).await;
    assert_eq!(
        source.iterator_requests(SHARD),
        vec![StartPosition::AtSequence(100u64.into())]
    );
    assert_eq!(strings(&emitter), vec!["s2".to_owned(), "s3".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_whole_record_at_a_kcl_style_sub_sequence_zero_checkpoint_is_not_emitted_again() {
    // The Kinesis Client Library checkpoints a plain record as (sequence, 0).
    let (source, seqs) = source_with(6);
    let store = MemoryCheckpointStore::new();
    let kcl = Checkpoint::At(Position {
        sequence: seqs[2].clone(),
        sub_sequence: Some(0),
    });
    store.set(&key(), &kcl).await.unwrap();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 100),
    );
    run_until(consumer, &emitter, 3).await;
    assert_eq!(strings(&emitter), expected(3..6));
}

#[tokio::test(start_paused = true)]
async fn never_more_than_five_calls_per_second_and_idle_delay_when_caught_up() {
    let (source, _) = source_with(30);
    source.set_page_size(1);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 1),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    emitter.wait_for_items(30, Duration::from_secs(600)).await;
    // Caught up now: the next calls should come once per idle delay (1 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    task.await.unwrap();
    let calls = source.get_records_calls(SHARD);
    for pair in calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "GetRecords calls closer than 200 ms: {:?}",
            pair[1] - pair[0]
        );
    }
    let idle_calls: Vec<_> = calls.iter().skip(31).collect();
    for pair in idle_calls.windows(2) {
        assert!(*pair[1] - *pair[0] >= Duration::from_secs(1));
    }
    assert!(!idle_calls.is_empty(), "the idle shard is still polled");
}

#[tokio::test(start_paused = true)]
async fn a_pushing_source_is_called_again_at_once() {
    let (source, _) = source_with(30);
    source.set_page_size(1);
    source.set_delivery(Delivery::Pushed);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 1),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    let started = tokio::time::Instant::now();
    emitter.wait_for_items(30, Duration::from_secs(600)).await;
    // Polled, 30 pages take at least 29 × 200 ms; pushed, no pause at all.
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "30 pushed pages took {:?}",
        started.elapsed()
    );
    // Caught up: the source's own wait paces the calls, not the idle delay.
    let before = source.get_records_calls(SHARD).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_calls = source.get_records_calls(SHARD).len() - before;
    let expected = (Duration::from_secs(2).as_millis() / PUSH_WAIT.as_millis()) as usize;
    assert!(
        idle_calls.abs_diff(expected) <= 1,
        "{idle_calls} calls in 2 s on a caught-up pushing source, expected about {expected}"
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn age_threshold_flushes_while_the_shard_is_idle() {
    let (source, seqs) = source_with(3);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .buffer_limits(
            BufferLimits::default()
                .with_max_records(1_000)
                .with_max_bytes(1 << 20)
                .with_max_age(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let consumer = shard_consumer(&source, &store, config(), pipeline);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(emitter.item_count(), 0, "flushed before the age limit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        emitter.item_count(),
        3,
        "the age limit did not flush an idle shard"
    );
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[2])));
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn filtered_records_advance_the_checkpoint() {
    let (source, seqs) = source_with(6);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .filter(|s: &String| s != "r5" && s != "r4")
        .buffer_limits(BufferLimits::default().with_max_age(Duration::from_secs(2)))
        .build()
        .unwrap();
    let consumer = shard_consumer(&source, &store, config(), pipeline);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    let report = task.await.unwrap();
    assert_eq!(strings(&emitter), expected(0..4));
    assert_eq!(report.stats.records_filtered, 2);
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[5])));
}

#[tokio::test(start_paused = true)]
async fn throttling_and_transient_errors_back_off_and_retry() {
    let (source, _) = source_with(4);
    source.inject(SHARD, Fault::Throttle);
    source.inject(SHARD, Fault::Throttle);
    source.inject(SHARD, Fault::Transient);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 4),
    );
    let report = run_until(consumer, &emitter, 4).await;
    assert_eq!(strings(&emitter), expected(0..4));
    assert!(matches!(report.outcome, ShardOutcome::Shutdown));
    let calls = source.get_records_calls(SHARD);
    assert!(calls.len() >= 4);
    // Backoff grows: the gap after the second throttle exceeds the first delay.
    assert!(calls[1] - calls[0] >= Duration::from_millis(200));
    assert!(calls[3] - calls[0] >= Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_resumes_after_the_last_record_read_not_the_checkpoint() {
    let (source, seqs) = source_with(3);
    source.set_page_size(3);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    // A large buffer: nothing is checkpointed when the iterator expires.
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 100),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    source.inject(SHARD, Fault::ExpiredIterator);
    append(&source, 3, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        source.iterator_requests(SHARD),
        vec![
            StartPosition::TrimHorizon,
            StartPosition::AfterSequence(seqs[2].clone())
        ]
    );
    assert_eq!(strings(&emitter), expected(0..5));
}

#[tokio::test(start_paused = true)]
async fn shard_end_flushes_checkpoints_shard_end_and_reports_children() {
    let (source, _) = source_with(5);
    let mut child = ShardInfo::open("shard-1");
    child.parent_shard_id = Some(SHARD.into());
    source.close_shard(SHARD, vec![child]);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let report = run_to_end(&source, &store, pipeline_to(Arc::new(emitter.clone()), 100)).await;
    match report.outcome {
        ShardOutcome::ShardEnd { children } => assert_eq!(children, vec!["shard-1".to_owned()]),
        other => panic!("expected shard end, got {other:?}"),
    }
    assert_eq!(strings(&emitter), expected(0..5));
    assert_eq!(store.get(&key()).await.unwrap(), Some(Checkpoint::ShardEnd));
}

#[tokio::test(start_paused = true)]
async fn bad_records_are_skipped_and_counted_by_default() {
    let (source, _) = closed_shard(vec![
        ("k".into(), Bytes::from_static(b"ok-1")),
        ("k".into(), Bytes::from_static(&[0xff, 0xfe])),
        ("k".into(), Bytes::from_static(b"ok-2")),
    ]);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let report = run_to_end(&source, &store, pipeline_to(Arc::new(emitter.clone()), 100)).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    assert_eq!(
        strings(&emitter),
        vec!["ok-1".to_owned(), "ok-2".to_owned()]
    );
    assert_eq!(report.stats.records_failed, 1);
}

#[tokio::test(start_paused = true)]
async fn bad_records_go_to_the_dead_letter_emitter_or_stop_the_shard() {
    let make_source = || {
        let source = ScriptedSource::new();
        source.add_shard(ShardInfo::open(SHARD));
        let seqs = source.append(
            SHARD,
            vec![
                ("k".into(), Bytes::from_static(b"ok-1")),
                ("bad-key".into(), Bytes::from_static(&[0xff])),
                ("k".into(), Bytes::from_static(b"ok-2")),
            ],
        );
        source.close_shard(SHARD, vec![]);
        (source, seqs)
    };

    let (source, seqs) = make_source();
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let dead_letters = RecordingEmitter::<FailedRecord>::new();
    let pipeline = utf8_pipeline(
        &emitter,
        BadRecordPolicy::DeadLetter(Arc::new(dead_letters.clone())),
    );
    let report = run_to_end(&source, &store, pipeline).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    let dead = dead_letters.items();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].data[..], &[0xff]);
    assert_eq!(dead[0].partition_key, "bad-key");
    assert_eq!(dead[0].position, Position::new(seqs[1].clone()));
    assert!(dead[0].error.contains("UTF-8"), "{}", dead[0].error);
    assert_eq!(emitter.item_count(), 2);

    let (source, seqs) = make_source();
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let pipeline = utf8_pipeline(&emitter, BadRecordPolicy::Stop);
    let report = run_to_end(&source, &store, pipeline).await;
    match report.outcome {
        ShardOutcome::Failed(error) => {
            let text = error.to_string();
            assert!(text.contains(seqs[1].as_str()), "{text}");
            assert!(text.contains(SHARD), "{text}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // Nothing past the good record before the bad one may be checkpointed.
    let stored = store.get(&key()).await.unwrap();
    assert!(
        stored.as_ref().is_none_or(|cp| *cp < at(&seqs[1])),
        "{stored:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_emit_failures_are_retried() {
    let (source, seqs) = source_with(3);
    source.close_shard(SHARD, vec![]);
    let store = MemoryCheckpointStore::new();
    let recording = RecordingEmitter::new();
    let failing = Arc::new(FailingEmitter::fail_times(recording.clone(), 2, true));
    let report = run_to_end(&source, &store, pipeline_to(failing.clone(), 100)).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    assert_eq!(failing.calls(), 3);
    assert_eq!(strings(&recording), expected(0..3));
    let _ = seqs;
    assert_eq!(store.get(&key()).await.unwrap(), Some(Checkpoint::ShardEnd));
}

#[tokio::test(start_paused = true)]
async fn emit_failures_past_the_limit_stop_the_shard_naming_the_range() {
    let (source, mut seqs) = source_with(3);
    let store = MemoryCheckpointStore::new();
    let recording = RecordingEmitter::new();
    // The first batch goes through; the second fails forever.
    let consumer_ok = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(recording.clone()), 3),
    );
    run_until(consumer_ok, &recording, 3).await;
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[2])));
    seqs.extend(append(&source, 3, 3));

    let failing = Arc::new(FailingEmitter::fail_forever(recording.clone(), true));
    let report = run_to_end(&source, &store, pipeline_to(failing.clone(), 3)).await;
    match &report.outcome {
        ShardOutcome::Failed(Error::BatchFailed {
            first,
            last,
            attempts,
            ..
        }) => {
            assert_eq!(first, seqs[3].as_str());
            assert_eq!(last, seqs[5].as_str());
            assert_eq!(*attempts, fast_retry().max_attempts);
        }
        other => panic!("expected BatchFailed, got {other:?}"),
    }
    assert_eq!(failing.calls() as u32, fast_retry().max_attempts);
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[2])));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_emit_error_stops_at_once() {
    let (source, _) = source_with(2);
    source.close_shard(SHARD, vec![]);
    let store = MemoryCheckpointStore::new();
    let failing = Arc::new(FailingEmitter::fail_forever(RecordingEmitter::new(), false));
    let report = run_to_end(&source, &store, pipeline_to(failing.clone(), 100)).await;
    assert!(matches!(
        report.outcome,
        ShardOutcome::Failed(Error::BatchFailed { attempts: 1, .. })
    ));
    assert_eq!(failing.calls(), 1);
    assert_eq!(store.get(&key()).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn reading_overlaps_emitting_with_at_most_one_page_read_ahead() {
    let (source, _) = source_with(20);
    source.set_page_size(1);
    let store = MemoryCheckpointStore::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let emitter = GatedEmitter {
        gate: Arc::clone(&gate),
        inner: RecordingEmitter::new(),
    };
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        Pipeline::builder(BytesTransformer, Arc::new(emitter.clone()))
            .buffer_limits(BufferLimits::default().with_max_records(1))
            .build()
            .unwrap(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    // The first batch blocks in the emitter; the reader may fetch one page
    // ahead (into the channel) and no more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = source.get_records_calls(SHARD).len();
    assert_eq!(
        calls, 2,
        "expected the page being emitted plus one read ahead"
    );
    gate.add_permits(100);
    emitter
        .inner
        .wait_for_items(20, Duration::from_secs(60))
        .await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(emitter.inner.item_count(), 20);
}

#[derive(Clone)]
struct GatedEmitter {
    gate: Arc<tokio::sync::Semaphore>,
    inner: RecordingEmitter<Bytes>,
}

#[kinesis_connectors_core::async_trait]
impl kinesis_connectors_core::Emitter<Bytes> for GatedEmitter {
    async fn emit(
        &self,
        batch: &kinesis_connectors_core::Batch<Bytes>,
    ) -> kinesis_connectors_core::Result<kinesis_connectors_core::EmitOutcome> {
        let permit = self.gate.acquire().await;
        drop(permit);
        self.inner.emit(batch).await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_and_checkpoints_what_was_read() {
    let (source, seqs) = source_with(7);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 1_000),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(emitter.item_count(), 0);
    cancel.cancel();
    let report = task.await.unwrap();
    assert!(matches!(report.outcome, ShardOutcome::Shutdown));
    assert_eq!(strings(&emitter), expected(0..7));
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[6])));
    assert!(emitter.shutdown_called(), "the emitter was not shut down");
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_shard_without_writing() {
    let (source, _) = source_with(5);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let lease = LeaseHandle::new(Lease::unfenced(SHARD, "w"));
    let consumer = ShardConsumer::new(
        env(&source, &store, config()),
        shard_context(SHARD),
        lease.clone(),
        pipeline_to(Arc::new(emitter.clone()), 1_000),
    );
    let task = tokio::spawn(consumer.run(CancellationToken::new()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    lease.mark_lost();
    let report = task.await.unwrap();
    assert!(matches!(report.outcome, ShardOutcome::LeaseLost));
    assert_eq!(emitter.item_count(), 0);
    assert_eq!(store.get(&key()).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_source_error_stops_the_shard_after_delivering_what_was_read() {
    let (source, seqs) = source_with(2);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let consumer = shard_consumer(
        &source,
        &store,
        config(),
        pipeline_to(Arc::new(emitter.clone()), 1_000),
    );
    let task = tokio::spawn(consumer.run(CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    source.inject(SHARD, Fault::Fatal);
    let report = task.await.unwrap();
    assert!(matches!(
        report.outcome,
        ShardOutcome::Failed(Error::Source { .. })
    ));
    assert_eq!(emitter.item_count(), 2);
    assert_eq!(store.get(&key()).await.unwrap(), Some(at(&seqs[1])));
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_after_bounded_retries_when_the_store_stays_down() {
    let (source, _) = source_with(7);
    // Accepts reads; fails every write with a retryable error.
    let store = Arc::new(InterceptedStore::new(&MemoryCheckpointStore::new(), |_| {
        Write::Fail(Error::checkpoint_retryable("connection refused"))
    }));
    let emitter = RecordingEmitter::new();
    let consumer = ShardConsumer::new(
        ShardEnv::new(Arc::new(source.clone()), store.clone(), config()),
        shard_context(SHARD),
        LeaseHandle::new(Lease::unfenced(SHARD, "w")),
        pipeline_to(Arc::new(emitter.clone()), 1_000),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(600), task)
        .await
        .expect("the shard did not return after shutdown while the store was down")
        .unwrap();
    match report.outcome {
        ShardOutcome::Failed(error) => assert!(error.is_retryable(), "{error}"),
        other => panic!("expected the store error, got {other:?}"),
    }
    assert_eq!(strings(&emitter), expected(0..7));
    assert_eq!(store.writes(), fast_retry().max_attempts as usize);
}

#[test]
fn invalid_shard_config_is_rejected() {
    let too_fast = ShardConfig::default().with_idle_delay(Duration::from_millis(50));
    assert!(matches!(too_fast.validate(), Err(Error::Config(_))));
    let too_many = ShardConfig::default().with_max_records_per_call(20_000);
    assert!(too_many.validate().is_err());
}

/// A type that can only be decoded: no `Serialize`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Reading {
    sensor: String,
}

#[tokio::test(start_paused = true)]
async fn a_decode_only_pipeline_needs_no_encoder_and_dead_letters_carry_no_payload() {
    let (source, seqs) = closed_shard(vec![
        ("a".into(), Bytes::from_static(br#"{"sensor":"a"}"#)),
        ("b".into(), Bytes::from_static(br#"{"sensor":"b"}"#)),
    ]);
    let store = MemoryCheckpointStore::new();
    let delivered = RecordingEmitter::<Reading>::new();
    let emitter = RejectingEmitter::new(delivered.clone(), |reading: &Reading| {
        (reading.sensor == "b").then(|| "sensor b is retired".to_owned())
    });
    let dead_letters = RecordingEmitter::<FailedRecord>::new();
    let pipeline = Pipeline::decode_only(JsonTransformer::<Reading>::new(), Arc::new(emitter))
        .bad_records(BadRecordPolicy::DeadLetter(Arc::new(dead_letters.clone())))
        .build()
        .unwrap();
    let report = run_to_end(&source, &store, pipeline).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    let sensors: Vec<String> = delivered.items().into_iter().map(|r| r.sensor).collect();
    assert_eq!(sensors, ["a"]);
    let dead = dead_letters.items();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].data.is_empty(), "{:?}", dead[0].data);
    assert_eq!(dead[0].partition_key, "b");
    assert_eq!(dead[0].position, Position::new(seqs[1].clone()));
    assert!(dead[0].error.contains("retired"), "{}", dead[0].error);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_dead_letter_emitter_rejects_stops_the_shard() {
    let (source, seqs) = closed_shard(vec![
        ("k".into(), Bytes::from_static(b"ok-1")),
        ("bad-key".into(), Bytes::from_static(&[0xff])),
    ]);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let refusing = RejectingEmitter::new(
        RecordingEmitter::<FailedRecord>::new(),
        |_: &FailedRecord| Some("dead-letter queue is full".to_owned()),
    );
    let pipeline = utf8_pipeline(&emitter, BadRecordPolicy::DeadLetter(Arc::new(refusing)));
    let report = run_to_end(&source, &store, pipeline).await;
    match report.outcome {
        ShardOutcome::Failed(error) => {
            let text = error.to_string();
            assert!(text.contains("dead-letter queue is full"), "{text}");
            assert!(text.contains(seqs[1].as_str()), "{text}");
            assert!(text.contains("UTF-8"), "{text}");
        }
        other => panic!("expected the shard to stop, got {other:?}"),
    }
    // Nothing at or after the refused record is checkpointed.
    let checkpoint = store.get(&key()).await.unwrap();
    assert!(
        checkpoint.as_ref().is_none_or(|c| *c < at(&seqs[1])),
        "{checkpoint:?}"
    );
}

/// Notes the size of every page the consumer gets.
#[derive(Default)]
struct PageSizes(std::sync::Mutex<Vec<usize>>);

impl kinesis_connectors_testkit::SourceHooks for PageSizes {
    fn on_page(&self, page: &mut kinesis_connectors_core::RecordsPage) {
        self.0.lock().unwrap().push(page.records.len());
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_call_asks_for_a_small_page_and_the_next_for_full_ones() {
    let (source, _) = source_with(25_000);
    source.close_shard(SHARD, vec![]);
    let run = |config: ShardConfig| {
        let hooked = Arc::new(kinesis_connectors_testkit::HookedSource::new(
            source.clone(),
            PageSizes::default(),
        ));
        let emitter = RecordingEmitter::new();
        let consumer = ShardConsumer::new(
            ShardEnv::new(
                hooked.clone(),
                Arc::new(MemoryCheckpointStore::new()),
                config,
            ),
            shard_context(SHARD),
            LeaseHandle::new(Lease::unfenced(SHARD, "w")),
            pipeline_to(Arc::new(emitter.clone()), 1_000),
        );
        async move {
            let report = consumer.run(CancellationToken::new()).await;
            assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
            assert_eq!(emitter.items().len(), 25_000);
            hooked.hooks().0.lock().unwrap().clone()
        }
    };
    assert_eq!(run(config()).await, vec![100, 10_000, 10_000, 4_900]);
    assert_eq!(
        run(config().with_first_call_records(10_000)).await,
        vec![10_000, 10_000, 5_000]
    );
    let bad = config().with_first_call_records(0).validate().unwrap_err();
    assert!(bad.to_string().contains("first_call_records"), "{bad}");
}

#[tokio::test(start_paused = true)]
async fn a_transformer_that_takes_the_payload_leaves_sizes_and_byte_limits_intact() {
    // `BytesTransformer` moves each payload into its item (`take_item`).
    let (source, _) = source_with(6);
    source.close_shard(SHARD, vec![]);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::<Bytes>::new();
    let pipeline = Pipeline::builder(BytesTransformer, Arc::new(emitter.clone()))
        .buffer_limits(BufferLimits::default().with_max_bytes(4))
        .build()
        .unwrap();
    let report = run_to_end(&source, &store, pipeline).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    let batches = emitter.batches();
    // "r0" … "r5": 2 bytes each, so a 4-byte limit cuts every 2 items.
    assert_eq!(batches.len(), 3, "{batches:?}");
    for batch in &batches {
        assert_eq!(batch.items.len(), 2);
        assert!(batch.sources.iter().all(|s| s.size == 2), "{batches:?}");
    }
    let items: Vec<Bytes> = emitter.items();
    assert_eq!(
        items,
        (0..6)
            .map(|i| Bytes::from(format!("r{i}")))
            .collect::<Vec<_>>()
    );
}

/// A zero-copy view of a reading.
#[derive(yoke::Yokeable, serde::Deserialize)]
struct ReadingView<'a> {
    #[serde(borrow)]
    sensor: std::borrow::Cow<'a, str>,
}

/// Notes the sensors of the views it is given.
#[derive(Clone, Default)]
struct SensorLog(Arc<std::sync::Mutex<Vec<String>>>);

#[kinesis_connectors_core::async_trait]
impl kinesis_connectors_core::Emitter<JsonView<ReadingView<'static>>> for SensorLog {
    async fn emit(
        &self,
        batch: &kinesis_connectors_core::Batch<JsonView<ReadingView<'static>>>,
    ) -> kinesis_connectors_core::Result<kinesis_connectors_core::EmitOutcome> {
        let mut log = self.0.lock().unwrap();
        log.extend(batch.items.iter().map(|view| view.get().sensor.to_string()));
        Ok(kinesis_connectors_core::EmitOutcome::delivered())
    }
}

#[tokio::test(start_paused = true)]
async fn json_views_take_payloads_and_a_bad_record_is_dead_lettered_whole() {
    let (source, seqs) = closed_shard(vec![
        ("a".into(), Bytes::from_static(br#"{"sensor":"a"}"#)),
        ("b".into(), Bytes::from_static(br#"{"sensor": oops"#)),
        ("c".into(), Bytes::from_static(br#"{"sensor":"c\u00e9"}"#)),
    ]);
    let store = MemoryCheckpointStore::new();
    let log = SensorLog::default();
    let dead_letters = RecordingEmitter::<FailedRecord>::new();
    let pipeline = Pipeline::decode_only(
        JsonViewTransformer::<ReadingView<'static>>::new(),
        Arc::new(log.clone()),
    )
    .bad_records(BadRecordPolicy::DeadLetter(Arc::new(dead_letters.clone())))
    .build()
    .unwrap();
    let report = run_to_end(&source, &store, pipeline).await;
    assert!(matches!(report.outcome, ShardOutcome::ShardEnd { .. }));
    assert_eq!(*log.0.lock().unwrap(), ["a", "cé"]);
    let dead = dead_letters.items();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].data, &br#"{"sensor": oops"#[..]);
    assert_eq!(dead[0].position, Position::new(seqs[1].clone()));
    assert_eq!(store.get(&key()).await.unwrap(), Some(Checkpoint::ShardEnd));
}
