//! The conformance suites pass on conforming implementations; on broken
//! ones `run_all` names every broken rule and still runs all the others.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kinesis_connectors_core::{
    Batch, Checkpoint, CheckpointStore, EmitOutcome, Emitter, Lease, LeaseStore,
    MemoryCheckpointStore, Position, Result, ShardKey, StoredLease, async_trait,
};
use kinesis_connectors_testkit::{
    BoxFuture, CheckpointStoreCapabilities, ConformanceReport, EmitterCapabilities,
    EmitterConformance, FailingEmitter, LeaseCapabilities, RecordingEmitter,
    checkpoint_store_conformance, emitter_conformance, lease_conformance,
};

/// Every rule of `all` was reported once: passed, skipped or failed.
fn assert_every_rule_reported(report: &ConformanceReport, all: &[&str]) {
    let mut reported: Vec<&str> = report.passed().to_vec();
    reported.extend(report.skipped_rules());
    reported.extend(report.failed_rules());
    reported.sort_unstable();
    let mut expected = all.to_vec();
    expected.sort_unstable();
    assert_eq!(reported, expected, "{report}");
}

/// `report` failed exactly `broken` and passed every other rule of `all`.
fn assert_only_broken(report: &ConformanceReport, all: &[&str], broken: &[&str]) {
    assert_eq!(report.failed_rules(), broken, "{report}");
    let others: Vec<&str> = all
        .iter()
        .copied()
        .filter(|r| !broken.contains(r))
        .collect();
    assert_eq!(report.passed(), others, "{report}");
    assert!(report.skipped().is_empty(), "{report}");
}

/// Every rule of `all` was reported, each of `failing` failed and each of
/// `passing` passed; the other rules may have gone either way.
fn assert_fails_and_passes(
    report: &ConformanceReport,
    all: &[&str],
    failing: &[&str],
    passing: &[&str],
) {
    assert_every_rule_reported(report, all);
    let failed = report.failed_rules();
    for rule in failing {
        assert!(failed.contains(rule), "{rule} not reported: {report}");
    }
    for rule in passing {
        assert!(
            report.passed().contains(rule),
            "{rule} did not pass: {report}"
        );
    }
}

/// `report` failed every rule of `all`.
fn assert_every_rule_failed(report: &ConformanceReport, all: &[&str]) {
    assert_eq!(report.failed_rules(), all, "{report}");
}

/// `report` passed every rule but `skipped`, which its capabilities
/// declared unsupported.
fn assert_passes_skipping(report: &ConformanceReport, skipped: &str) {
    assert!(report.is_success(), "{report}");
    assert_eq!(report.skipped_rules(), [skipped]);
}

/// `report`'s text contains `needle`.
fn assert_mentions(report: &ConformanceReport, needle: &str) {
    let text = report.to_string();
    assert!(text.contains(needle), "{text}");
}

/// A broken test double with the named flags set and every other one off,
/// so that it breaks only those rules: `breaking!(BrokenStore, ignore_application)`.
macro_rules! breaking {
    ($double:ident, $($flag:ident),+ $(,)?) => {
        $double {
            $($flag: true,)+
            ..$double::default()
        }
    };
}

// ---------------------------------------------------------------- checkpoint stores

async fn check_store(store: &dyn CheckpointStore) -> ConformanceReport {
    checkpoint_store_conformance::run_all(store, CheckpointStoreCapabilities::new()).await
}

/// Runs the suite on `store` and asserts that it failed exactly `broken`
/// and passed every other rule.
async fn check_broken_store(store: &dyn CheckpointStore, broken: &[&str]) -> ConformanceReport {
    let report = check_store(store).await;
    assert_only_broken(&report, &checkpoint_store_conformance::RULES, broken);
    report
}

#[tokio::test]
async fn memory_store_passes() {
    let report = check_store(&MemoryCheckpointStore::new()).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.passed(), checkpoint_store_conformance::RULES);
}

fn applications(store: &MemoryCheckpointStore) -> HashSet<String> {
    store
        .snapshot()
        .keys()
        .map(|k| k.application.clone())
        .filter(|app| !app.ends_with("-other"))
        .collect()
}

#[tokio::test]
async fn the_suite_can_run_twice_against_one_shared_store() {
    let store = MemoryCheckpointStore::new();
    assert!(check_store(&store).await.is_success());
    let first = applications(&store);
    assert!(check_store(&store).await.is_success());
    let both = applications(&store);
    // Every rule that writes (all but missing-key) uses its own application.
    let writing_rules = checkpoint_store_conformance::RULES.len() - 1;
    assert_eq!(first.len(), writing_rules);
    assert_eq!(
        both.len(),
        2 * writing_rules,
        "the second run shares no application"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_through_an_arc_from_several_tasks() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { check_store(&*store).await })
        })
        .collect();
    for run in runs {
        let report = run.await.unwrap();
        assert!(report.is_success(), "{report}");
    }
}

#[tokio::test]
async fn one_rule_can_run_alone() {
    let store = MemoryCheckpointStore::new();
    checkpoint_store_conformance::numeric_order(&store)
        .await
        .unwrap();
    checkpoint_store_conformance::concurrent_writers(&store)
        .await
        .unwrap();
}

/// A store that breaks some rules.
#[derive(Default)]
struct BrokenStore {
    map: Mutex<HashMap<ShardKey, Checkpoint>>,
    /// Overwrites unconditionally (moves backwards).
    always_overwrite: bool,
    /// Compares sequence numbers by their text, as a naive string-keyed store would.
    compare_as_text: bool,
    /// Ignores the application in the key.
    ignore_application: bool,
    /// Drops sub-sequence numbers, as a store in the Go format would.
    drop_sub_sequences: bool,
    /// Pending batches, kept correctly unless a flag below says otherwise.
    pending: Mutex<HashMap<ShardKey, Position>>,
    /// Keeps no pending batches (the trait's defaults).
    keeps_no_pending_batches: bool,
    /// Keeps the first pending batch of a key, not the last.
    pending_first_write_wins: bool,
    /// A checkpoint write drops the shard's pending batch, as a store
    /// rewriting a whole item without its pending attributes would.
    checkpoint_clears_pending: bool,
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
        let mut checkpoint = checkpoint.clone();
        if let (true, Checkpoint::At(position)) = (self.drop_sub_sequences, &mut checkpoint) {
            position.sub_sequence = None;
        }
        if self.checkpoint_clears_pending {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = self.key(key);
        let newer = match map.get(&key) {
            None => true,
            Some(_) if self.always_overwrite => true,
            Some(stored) if self.compare_as_text => match (stored, &checkpoint) {
                (Checkpoint::At(a), Checkpoint::At(b)) => b
                    .sequence
                    .as_str()
                    .cmp(a.sequence.as_str())
                    .then_with(|| b.cmp(a))
                    .is_gt(),
                _ => checkpoint > *stored,
            },
            Some(stored) => checkpoint > *stored,
        };
        if newer {
            map.insert(key, checkpoint);
        }
        Ok(())
    }

    fn keeps_pending_batches(&self) -> bool {
        !self.keeps_no_pending_batches
    }

    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        if self.keeps_no_pending_batches {
            return Ok(None);
        }
        Ok(self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }

    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        if self.keeps_no_pending_batches {
            // What the trait's default does.
            return Err(kinesis_connectors_core::Error::Config(format!(
                "keeps no pending batches (shard {}, lease of {})",
                key.shard_id, lease.owner
            )));
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if self.pending_first_write_wins && pending.contains_key(key) {
            return Ok(());
        }
        pending.insert(key.clone(), end.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_store_with_one_broken_rule_fails_that_rule_and_passes_the_others() {
    let store = breaking!(BrokenStore, ignore_application);
    let report = check_broken_store(&store, &["independent-keys"]).await;
    assert!(!report.is_success());
    assert_mentions(
        &report,
        "checkpoint store conformance, rule `independent-keys`: checkpoint of",
    );
    assert_mentions(&report, "9 passed, 0 skipped, 1 failed");
}

#[tokio::test]
async fn a_store_that_moves_backwards_fails_every_rule_that_notices() {
    let report = check_store(&breaking!(BrokenStore, always_overwrite)).await;
    assert_fails_and_passes(
        &report,
        &checkpoint_store_conformance::RULES,
        &["never-backwards", "shard-end-is-final", "numeric-order"],
        &[
            "missing-key",
            "round-trip",
            "newer-overwrites",
            "independent-keys",
        ],
    );
}

#[tokio::test]
async fn a_store_comparing_sequence_numbers_as_text_fails_numeric_order() {
    let store = breaking!(BrokenStore, compare_as_text);
    let report = check_store(&store).await;
    assert_fails_and_passes(
        &report,
        &checkpoint_store_conformance::RULES,
        &["numeric-order"],
        &[],
    );
    let failure = &report.failed()[0];
    assert_eq!(failure.suite, "checkpoint store");
    assert!(
        failure
            .to_string()
            .starts_with("checkpoint store conformance, rule `"),
        "{failure}"
    );
    // The rule alone returns the same failure as an error.
    let alone = checkpoint_store_conformance::numeric_order(&store)
        .await
        .unwrap_err();
    assert_eq!(alone.rule, "numeric-order");
}

#[tokio::test]
async fn a_store_without_sub_sequences_passes_once_it_declares_so() {
    let store = breaking!(BrokenStore, drop_sub_sequences);
    check_broken_store(&store, &["sub-sequence-positions"]).await;

    let capabilities = CheckpointStoreCapabilities::new().sub_sequence_positions(false);
    let report = checkpoint_store_conformance::run_all(&store, capabilities).await;
    assert_passes_skipping(&report, "sub-sequence-positions");
    assert_mentions(&report, "skipped `sub-sequence-positions`");
}

#[tokio::test]
async fn a_store_keeping_no_pending_batches_passes_once_it_declares_so() {
    let store = breaking!(BrokenStore, keeps_no_pending_batches);
    let report = check_broken_store(&store, &["pending-batches"]).await;
    assert_mentions(&report, "keeps_pending_batches() is false");

    let capabilities = CheckpointStoreCapabilities::new().pending_batches(false);
    let report = checkpoint_store_conformance::run_all(&store, capabilities).await;
    assert_passes_skipping(&report, "pending-batches");
}

#[tokio::test]
async fn a_store_whose_first_pending_batch_wins_fails_the_pending_rule() {
    let store = breaking!(BrokenStore, pending_first_write_wins);
    let report = check_broken_store(&store, &["pending-batches"]).await;
    assert_mentions(&report, "pending batch of");
}

#[tokio::test]
async fn a_store_whose_checkpoints_clear_the_pending_batch_fails_the_pending_rule() {
    let store = breaking!(BrokenStore, checkpoint_clears_pending);
    let failure = checkpoint_store_conformance::pending_batches(&store)
        .await
        .unwrap_err();
    assert_eq!(failure.rule, "pending-batches");
    assert!(
        failure.details.contains("pending-and-checkpoint"),
        "{failure}"
    );
}

/// Fails every call with a retryable error.
struct UnreachableStore;

/// What every call to an [`UnreachableStore`] returns.
fn connection_refused<T>() -> Result<T> {
    Err(kinesis_connectors_core::Error::checkpoint_retryable(
        "connection refused",
    ))
}

#[async_trait]
impl CheckpointStore for UnreachableStore {
    async fn get(&self, _key: &ShardKey) -> Result<Option<Checkpoint>> {
        connection_refused()
    }
    async fn set(&self, _key: &ShardKey, _checkpoint: &Checkpoint) -> Result<()> {
        connection_refused()
    }
}

#[tokio::test]
async fn store_errors_fail_every_rule_with_the_error() {
    let report = check_store(&UnreachableStore).await;
    assert_every_rule_failed(&report, &checkpoint_store_conformance::RULES);
    let missing = &report.failed()[0];
    assert_eq!(missing.rule, "missing-key");
    assert!(missing.details.contains("connection refused"), "{missing}");
}

// ---------------------------------------------------------------- emitters

async fn check_emitter<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> ConformanceReport {
    emitter_conformance::run_all(suite, EmitterCapabilities::new()).await
}

/// Runs the suite and asserts that it failed exactly `broken` and passed
/// every other rule.
async fn check_broken_emitter<T: Send + Sync>(
    suite: &EmitterConformance<'_, T>,
    broken: &[&str],
) -> ConformanceReport {
    let report = check_emitter(suite).await;
    assert_only_broken(&report, &emitter_conformance::RULES, broken);
    report
}

/// The suite on `emitter`, with items `item-0`, `item-1`, ... and no count
/// of what the sink holds.
fn item_suite(emitter: &dyn Emitter<String>) -> EmitterConformance<'_, String> {
    EmitterConformance::new(emitter, |i| format!("item-{i}"))
}

/// [`item_suite`], with `delivered` as the count of what the sink holds.
fn counted_suite<'a>(
    emitter: &'a dyn Emitter<String>,
    delivered: &'a AtomicUsize,
) -> EmitterConformance<'a, String> {
    item_suite(emitter).delivered_count(|| {
        let count = delivered.load(Ordering::SeqCst);
        Box::pin(async move { count })
    })
}

#[tokio::test]
async fn recording_emitter_passes_without_counting() {
    let emitter = RecordingEmitter::new();
    let report = check_emitter(&item_suite(&emitter)).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.passed(), emitter_conformance::RULES);
    assert!(
        report.notes()[0].contains("not counted"),
        "the report says delivery was not counted: {report}"
    );
    // empty, small, replay (twice), large (2,000), filtered, two
    // sub-sequence halves, shard A then shard B
    let batches = emitter.batches();
    assert_eq!(batches.len(), 10);
    assert_eq!(
        emitter.item_count(),
        10 + 2 * 10 + 2_000 + 5 + 4 + 4 + 2 * 10
    );
    assert!(batches[0].items.is_empty());
    assert_eq!(
        batches[2].first, batches[3].first,
        "the replay is the same batch"
    );
    assert_eq!(batches[2].items, batches[3].items);
    assert_eq!(
        batches[9].first, batches[8].first,
        "the other shard's batch covers the same positions"
    );
    assert_ne!(batches[9].context.shard_id, batches[8].context.shard_id);
    assert_eq!(batches[6].first.sequence, batches[7].first.sequence);
    assert_eq!(batches[6].last.sub_sequence, Some(3));
    assert_eq!(batches[7].first.sub_sequence, Some(4));
    assert!(
        batches
            .iter()
            .all(|b| b.first.sequence.as_str().len() == 56)
    );
    // Items never repeat, across rules either.
    let items: HashSet<String> = emitter.items().into_iter().collect();
    assert_eq!(items.len(), 10 + 10 + 2_000 + 5 + 8 + 20);
}

#[tokio::test]
async fn large_batch_size_is_configurable() {
    let emitter = RecordingEmitter::new();
    let suite = EmitterConformance::new(&emitter, |i| i).large_batch_size(3);
    emitter_conformance::large_batch(&suite).await.unwrap();
    assert_eq!(emitter.batches()[0].items.len(), 3);
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

    fn suite(&self) -> EmitterConformance<'_, String> {
        item_suite(self).delivered_count(|| self.count())
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
    let report = check_emitter(&emitter.suite()).await;
    assert!(report.is_success(), "{report}");
    assert!(report.notes().is_empty(), "{report}");
    // Every batch but the empty one and the replay made one object.
    assert_eq!(
        emitter
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        8
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

fn appending_suite(emitter: &AppendingEmitter) -> EmitterConformance<'_, String> {
    counted_suite(emitter, &emitter.items)
}

#[tokio::test]
async fn a_non_idempotent_emitter_fails_only_the_replay_rule_and_the_others_still_run() {
    let emitter = AppendingEmitter::default();
    let report = check_broken_emitter(&appending_suite(&emitter), &["idempotent-replay"]).await;
    assert_mentions(&report, "emitter conformance, rule `idempotent-replay`");
    assert_mentions(&report, "expected 0 new item(s)");
    // The rules after it ran: large-batch's 2,000 items were delivered.
    assert!(emitter.items.load(Ordering::SeqCst) > 2_000);
}

#[tokio::test]
async fn a_non_idempotent_emitter_passes_once_it_declares_so() {
    let emitter = AppendingEmitter::default();
    let capabilities = EmitterCapabilities::new().idempotent_replay(false);
    let report = emitter_conformance::run_all(&appending_suite(&emitter), capabilities).await;
    assert_passes_skipping(&report, "idempotent-replay");
    assert!(report.skipped()[0].reason.contains("idempotent_replay"));
}

#[tokio::test]
async fn the_suite_runs_in_a_spawned_task() {
    let emitter: &'static AppendingEmitter = Box::leak(Box::default());
    let task = tokio::spawn(async move {
        emitter_conformance::run_all(&appending_suite(emitter), EmitterCapabilities::new()).await
    });
    let report = task.await.unwrap();
    assert_eq!(report.failed_rules(), ["idempotent-replay"]);
}

#[tokio::test]
async fn every_broken_rule_is_reported_not_only_the_first() {
    // Names outputs without the shard and without the sub-sequence.
    let emitter = KeyedEmitter::new(|batch| {
        let c = &batch.context;
        format!(
            "{}/{}-{}",
            c.application, batch.first.sequence, batch.last.sequence
        )
    });
    check_broken_emitter(
        &emitter.suite(),
        &["sub-sequence-batches", "shards-do-not-collide"],
    )
    .await;
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
    let suite = emitter.suite();
    let failure = emitter_conformance::sub_sequence_batches(&suite)
        .await
        .unwrap_err();
    assert_eq!(failure.rule, "sub-sequence-batches");
    check_broken_emitter(&suite, &["sub-sequence-batches"]).await;

    let capabilities = EmitterCapabilities::new().sub_sequence_positions(false);
    let report = emitter_conformance::run_all(&suite, capabilities).await;
    assert_passes_skipping(&report, "sub-sequence-batches");
}

#[tokio::test]
async fn an_emitter_that_always_fails_fails_every_rule() {
    let emitter = FailingEmitter::fail_forever(RecordingEmitter::<String>::new(), true);
    let report = check_emitter(&item_suite(&emitter)).await;
    assert_every_rule_failed(&report, &emitter_conformance::RULES);
    assert_mentions(&report, "emitter conformance, rule `empty-batch`");
    assert_mentions(&report, "scripted emit failure");
    assert_eq!(emitter.calls(), emitter_conformance::RULES.len());
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
async fn an_emitter_writing_for_empty_batches_fails_the_empty_batch_rule() {
    let emitter = EmptyBatchWriter::default();
    let report = check_emitter(&counted_suite(&emitter, &emitter.writes)).await;
    assert_every_rule_reported(&report, &emitter_conformance::RULES);
    assert_eq!(report.failed_rules()[0], "empty-batch", "{report}");
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
    let report = check_emitter(&item_suite(&BadRejections)).await;
    assert_every_rule_failed(&report, &emitter_conformance::RULES);
    assert_mentions(&report, "below the batch length");
}

/// Panics on batches over 100 items, as a mock's assertion would.
struct PanicsOnLargeBatches;

#[async_trait]
impl Emitter<String> for PanicsOnLargeBatches {
    async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
        assert!(batch.len() <= 100, "a request of {} items", batch.len());
        Ok(EmitOutcome::delivered())
    }
}

#[tokio::test]
async fn a_panic_fails_its_rule_and_the_run_goes_on() {
    let report = check_broken_emitter(&item_suite(&PanicsOnLargeBatches), &["large-batch"]).await;
    assert!(
        report.failed()[0]
            .details
            .contains("panicked: a request of 2000 items"),
        "{report}"
    );
}

// ---------------------------------------------------------------- lease stores

/// A memory store whose `release_lease` does nothing (leases then only
/// expire), or whose `renew_lease` keeps the counter.
#[derive(Default)]
struct BrokenLeases {
    inner: MemoryCheckpointStore,
    release_is_a_no_op: bool,
    renew_keeps_the_counter: bool,
    pending_ignores_the_lease: bool,
}

#[async_trait]
impl CheckpointStore for BrokenLeases {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.inner.set(key, checkpoint).await
    }
    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        self.inner.set_fenced(key, checkpoint, lease).await
    }
    fn keeps_pending_batches(&self) -> bool {
        true
    }
    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.inner.pending_batch(key).await
    }
    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        if self.pending_ignores_the_lease {
            return self.force_pending(key, end).await;
        }
        self.inner.set_pending_batch(key, end, lease).await
    }
}

impl BrokenLeases {
    /// Overwrites the pending batch whoever holds the lease.
    async fn force_pending(&self, key: &ShardKey, end: &Position) -> Result<()> {
        let holder = self
            .inner
            .list_leases(&key.application, &key.stream)
            .await?
            .into_iter()
            .find(|lease| lease.shard_id == key.shard_id)
            .and_then(|stored| {
                Some(Lease {
                    counter: stored.counter,
                    ..Lease::unfenced(key.shard_id.clone(), stored.owner?)
                })
            });
        match holder {
            Some(lease) => self.inner.set_pending_batch(key, end, &lease).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl LeaseStore for BrokenLeases {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        self.inner.list_leases(application, stream).await
    }
    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.inner.create_lease(key, parent_shard_ids).await
    }
    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        self.inner.take_lease(key, expected_counter, owner).await
    }
    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        if self.renew_keeps_the_counter {
            return Ok(lease.clone());
        }
        self.inner.renew_lease(key, lease).await
    }
    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        if self.release_is_a_no_op {
            return Ok(());
        }
        self.inner.release_lease(key, lease).await
    }
}

async fn check_leases(store: Arc<dyn LeaseStore>) -> ConformanceReport {
    lease_conformance::run_all(store, LeaseCapabilities::new()).await
}

#[tokio::test(start_paused = true)]
async fn a_lease_store_that_cannot_release_fails_only_release_unless_it_declares_so() {
    let store = Arc::new(breaking!(BrokenLeases, release_is_a_no_op));
    let report = check_leases(store.clone()).await;
    assert_only_broken(&report, &lease_conformance::RULES, &["release"]);
    assert_mentions(
        &report,
        "lease store conformance, rule `release`: a released lease must be free",
    );

    let report = lease_conformance::run_all(store, LeaseCapabilities::new().release(false)).await;
    assert_passes_skipping(&report, "release");
}

#[tokio::test(start_paused = true)]
async fn a_pending_batch_written_without_its_lease_fails_fenced_pending_batch() {
    let report = check_leases(Arc::new(breaking!(BrokenLeases, pending_ignores_the_lease))).await;
    assert_eq!(report.failed_rules(), ["fenced-pending-batch"], "{report}");
    assert_mentions(&report, "set_pending_batch by the old owner");
}

#[tokio::test(start_paused = true)]
async fn a_lease_store_whose_renewals_do_not_count_fails_renew_and_the_rest_still_run() {
    let report = check_leases(Arc::new(breaking!(BrokenLeases, renew_keeps_the_counter))).await;
    assert_fails_and_passes(
        &report,
        &lease_conformance::RULES,
        &["renew"],
        &["create", "acquire", "release", "expire"],
    );
}

#[tokio::test(start_paused = true)]
async fn each_lease_rule_runs_alone() {
    let store = MemoryCheckpointStore::new();
    lease_conformance::create(&store).await.unwrap();
    lease_conformance::fenced_checkpoint(&store).await.unwrap();
    lease_conformance::expire(Arc::new(store)).await.unwrap();
}
