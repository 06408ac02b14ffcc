//! The conformance suites pass on conforming implementations and fail,
//! naming the rule, on broken ones.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use kinesis_connectors_core::{
    Batch, Checkpoint, CheckpointStore, EmitOutcome, Emitter, MemoryCheckpointStore, Result,
    ShardKey, async_trait,
};
use kinesis_connectors_testkit::{
    BoxFuture, EmitterConformance, FailingEmitter, RecordingEmitter, checkpoint_store_conformance,
    emitter_conformance,
};

/// Runs `future`, expecting it to fail; returns the failure message.
async fn failure_of(future: impl std::future::Future<Output = ()>) -> String {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(()) => String::from("<the suite passed>"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------- checkpoint stores

#[tokio::test]
async fn memory_store_passes() {
    checkpoint_store_conformance(&MemoryCheckpointStore::new()).await;
}

#[tokio::test]
async fn the_suite_can_run_twice_against_one_shared_store() {
    let store = MemoryCheckpointStore::new();
    checkpoint_store_conformance(&store).await;
    checkpoint_store_conformance(&store).await;
    let applications: std::collections::HashSet<String> = store
        .snapshot()
        .keys()
        .map(|k| k.application.clone())
        .filter(|app| !app.ends_with("-other"))
        .collect();
    assert_eq!(applications.len(), 2, "each run uses its own application");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_through_an_arc_from_several_tasks() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { checkpoint_store_conformance(&*store).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
}

/// A store that breaks one rule.
#[derive(Default)]
struct BrokenStore {
    map: Mutex<HashMap<ShardKey, Checkpoint>>,
    /// Overwrites unconditionally (moves backwards).
    always_overwrite: bool,
    /// Compares sequence numbers by their text, as a naive string-keyed store would.
    compare_as_text: bool,
    /// Ignores the application in the key.
    ignore_application: bool,
}

impl BrokenStore {
    fn key(&self, key: &ShardKey) -> ShardKey {
        let mut key = key.clone();
        if self.ignore_application {
            key.application = String::new();
        }
        key
    }
}

#[async_trait]
impl CheckpointStore for BrokenStore {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.key(key))
            .cloned())
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = self.key(key);
        let newer = match map.get(&key) {
            None => true,
            Some(_) if self.always_overwrite => true,
            Some(stored) if self.compare_as_text => match (stored, checkpoint) {
                (Checkpoint::At(a), Checkpoint::At(b)) => b
                    .sequence
                    .as_str()
                    .cmp(a.sequence.as_str())
                    .then_with(|| b.cmp(a))
                    .is_gt(),
                _ => checkpoint > stored,
            },
            Some(stored) => checkpoint > stored,
        };
        if newer {
            map.insert(key, checkpoint.clone());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_store_that_moves_backwards_fails() {
    let store = BrokenStore {
        always_overwrite: true,
        ..BrokenStore::default()
    };
    let message = failure_of(checkpoint_store_conformance(&store)).await;
    assert!(message.contains("rule `never-backwards`"), "{message}");
}

#[tokio::test]
async fn a_store_comparing_sequence_numbers_as_text_fails() {
    let store = BrokenStore {
        compare_as_text: true,
        ..BrokenStore::default()
    };
    let message = failure_of(checkpoint_store_conformance(&store)).await;
    assert!(message.contains("rule `numeric-order`"), "{message}");
    assert!(
        message.contains("checkpoint store conformance"),
        "{message}"
    );
}

#[tokio::test]
async fn a_store_mixing_applications_fails() {
    let store = BrokenStore {
        ignore_application: true,
        ..BrokenStore::default()
    };
    let message = failure_of(checkpoint_store_conformance(&store)).await;
    assert!(message.contains("rule `independent-keys`"), "{message}");
}

/// Fails every call with a retryable error.
struct UnreachableStore;

#[async_trait]
impl CheckpointStore for UnreachableStore {
    async fn get(&self, _key: &ShardKey) -> Result<Option<Checkpoint>> {
        Err(kinesis_connectors_core::Error::checkpoint_retryable(
            "connection refused",
        ))
    }
    async fn set(&self, _key: &ShardKey, _checkpoint: &Checkpoint) -> Result<()> {
        Err(kinesis_connectors_core::Error::checkpoint_retryable(
            "connection refused",
        ))
    }
}

#[tokio::test]
async fn store_errors_fail_the_suite_with_the_error() {
    let message = failure_of(checkpoint_store_conformance(&UnreachableStore)).await;
    assert!(message.contains("rule `missing-key`"), "{message}");
    assert!(message.contains("connection refused"), "{message}");
}

// ---------------------------------------------------------------- emitters

#[tokio::test]
async fn recording_emitter_passes_without_counting() {
    let emitter = RecordingEmitter::new();
    emitter_conformance(&emitter, |i| format!("item-{i}")).await;
    // empty, small, replay, large (2,000), filtered, two sub-sequence halves, other shard
    let batches = emitter.batches();
    assert_eq!(batches.len(), 8);
    assert_eq!(emitter.item_count(), 10 + 10 + 2_000 + 5 + 4 + 4 + 10);
    assert!(batches[0].items.is_empty());
    assert_eq!(
        batches[1].first, batches[2].first,
        "the replay is the same batch"
    );
    assert_eq!(batches[1].items, batches[2].items);
    assert_eq!(
        batches[7].first, batches[1].first,
        "the other shard's batch covers the same positions"
    );
    assert_ne!(batches[7].context.shard_id, batches[1].context.shard_id);
    assert_eq!(batches[5].first.sequence, batches[6].first.sequence);
    assert_eq!(batches[5].last.sub_sequence, Some(3));
    assert_eq!(batches[6].first.sub_sequence, Some(4));
    assert!(
        batches
            .iter()
            .all(|b| b.first.sequence.as_str().len() == 56)
    );
}

#[tokio::test]
async fn large_batch_size_is_configurable() {
    let emitter = RecordingEmitter::new();
    EmitterConformance::new(&emitter, |i| i)
        .large_batch_size(3)
        .run()
        .await;
    assert_eq!(emitter.batches()[3].items.len(), 3);
}

/// How a [`KeyedEmitter`] names a batch's output.
type NameFn = fn(&Batch<String>) -> String;

/// Writes one "object" per name: replays of a batch overwrite it.
#[derive(Clone)]
struct KeyedEmitter {
    objects: Arc<Mutex<HashMap<String, usize>>>,
    name: NameFn,
}

impl KeyedEmitter {
    fn new(name: NameFn) -> Self {
        Self {
            objects: Arc::default(),
            name,
        }
    }

    fn count(&self) -> BoxFuture<'static, usize> {
        let count = self
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum();
        Box::pin(async move { count })
    }
}

#[async_trait]
impl Emitter<String> for KeyedEmitter {
    async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
        if !batch.is_empty() {
            let name = (self.name)(batch);
            self.objects
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, batch.len());
        }
        Ok(EmitOutcome::delivered())
    }
}

fn full_name(batch: &Batch<String>) -> String {
    let c = &batch.context;
    format!(
        "{}/{}/{}/{}-{}",
        c.application, c.stream, c.shard_id, batch.first, batch.last
    )
}

#[tokio::test]
async fn idempotent_emitter_passes_with_counting() {
    let emitter = KeyedEmitter::new(full_name);
    EmitterConformance::new(&emitter, |i| format!("item-{i}"))
        .delivered_count(|| emitter.count())
        .run()
        .await;
    // Every batch but the empty one and the replay made one object.
    assert_eq!(
        emitter
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        6
    );
}

/// Appends every batch: replays duplicate items.
#[derive(Default)]
struct AppendingEmitter {
    items: AtomicUsize,
}

#[async_trait]
impl Emitter<String> for AppendingEmitter {
    async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
        self.items.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(EmitOutcome::delivered())
    }
}

#[tokio::test]
async fn non_idempotent_emitter_fails_the_replay_rule() {
    let emitter = AppendingEmitter::default();
    let suite = EmitterConformance::new(&emitter, |i| format!("item-{i}"))
        .delivered_count(|| {
            let count = emitter.items.load(Ordering::SeqCst);
            Box::pin(async move { count })
        })
        .run();
    let message = failure_of(suite).await;
    assert!(message.contains("rule `idempotent-replay`"), "{message}");
    assert!(message.contains("expected 0 new item(s)"), "{message}");
}

#[tokio::test]
async fn non_idempotent_emitter_also_fails_in_a_spawned_task() {
    // The same check through tokio::spawn and JoinError::is_panic, for
    // suites run in their own task.
    let emitter: &'static AppendingEmitter = Box::leak(Box::default());
    let task = tokio::spawn(
        EmitterConformance::new(emitter, |i| format!("item-{i}"))
            .delivered_count(move || {
                let count = emitter.items.load(Ordering::SeqCst);
                Box::pin(async move { count })
            })
            .run(),
    );
    let error = task.await.unwrap_err();
    assert!(error.is_panic());
}

#[tokio::test]
async fn naming_outputs_without_the_shard_fails_the_collision_rule() {
    let emitter = KeyedEmitter::new(|batch| format!("{}-{}", batch.first, batch.last));
    let message = failure_of(
        EmitterConformance::new(&emitter, |i| format!("item-{i}"))
            .delivered_count(|| emitter.count())
            .run(),
    )
    .await;
    assert!(
        message.contains("rule `shards-do-not-collide`"),
        "{message}"
    );
}

#[tokio::test]
async fn naming_outputs_without_the_sub_sequence_fails_the_kpl_rule() {
    let emitter = KeyedEmitter::new(|batch| {
        let c = &batch.context;
        format!(
            "{}/{}/{}-{}",
            c.application, c.shard_id, batch.first.sequence, batch.last.sequence
        )
    });
    let message = failure_of(
        EmitterConformance::new(&emitter, |i| format!("item-{i}"))
            .delivered_count(|| emitter.count())
            .run(),
    )
    .await;
    assert!(message.contains("rule `sub-sequence-batches`"), "{message}");
}

#[tokio::test]
async fn an_emitter_that_always_fails_fails_the_first_rule() {
    let emitter = FailingEmitter::fail_forever(RecordingEmitter::<String>::new(), true);
    let message = failure_of(emitter_conformance(&emitter, |i| format!("item-{i}"))).await;
    assert!(
        message.contains("emitter conformance, rule `empty-batch`"),
        "{message}"
    );
    assert!(message.contains("scripted emit failure"), "{message}");
}

/// Writes something even for an empty batch.
#[derive(Default)]
struct EmptyBatchWriter {
    writes: AtomicUsize,
}

#[async_trait]
impl Emitter<String> for EmptyBatchWriter {
    async fn emit(&self, _batch: &Batch<String>) -> Result<EmitOutcome> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(EmitOutcome::delivered())
    }
}

#[tokio::test]
async fn an_emitter_writing_for_empty_batches_fails() {
    let emitter = EmptyBatchWriter::default();
    let message = failure_of(
        EmitterConformance::new(&emitter, |i| format!("item-{i}"))
            .delivered_count(|| {
                let count = emitter.writes.load(Ordering::SeqCst);
                Box::pin(async move { count })
            })
            .run(),
    )
    .await;
    assert!(message.contains("rule `empty-batch`"), "{message}");
}

/// Reports an index outside the batch as rejected.
struct BadRejections;

#[async_trait]
impl Emitter<String> for BadRejections {
    async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
        Ok(EmitOutcome::with_rejected(vec![
            kinesis_connectors_core::RejectedItem {
                index: batch.len(),
                reason: "off by one".into(),
            },
        ]))
    }
}

#[tokio::test]
async fn rejected_indices_outside_the_batch_fail() {
    let message = failure_of(emitter_conformance(&BadRejections, |i| format!("item-{i}"))).await;
    assert!(message.contains("below the batch length"), "{message}");
}
