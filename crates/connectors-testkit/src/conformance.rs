//! Conformance suites: the rules every [`CheckpointStore`] and every
//! [`Emitter`] must follow, runnable against any implementation.
//!
//! A broken rule fails the calling test with a message naming the rule.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, join_all};
use kinesis_connectors_core::{
    Batch, Checkpoint, CheckpointStore, Emitter, ItemSource, Position, Result, SequenceNumber,
    ShardContext, ShardKey,
};

/// A Kinesis-sized (56 digit) sequence number.
const KINESIS_SEQ_A: &str = "49590338271490256608559692538361571095921575989136588898";
/// `KINESIS_SEQ_A + 1`: equal to it as an `f64`.
const KINESIS_SEQ_A_PLUS_1: &str = "49590338271490256608559692538361571095921575989136588899";
/// A later Kinesis-sized sequence number.
const KINESIS_SEQ_B: &str = "49590338271490256608559692540925702759324208523137515618";

/// 20 digits: smaller than `KINESIS_SEQ_A` as a number, larger as a string.
const STRING_LARGER_THAN_SEQ_A: &str = "99999999999999999999";

/// Concurrent writers in the concurrency rule, and checkpoints each writes.
const WRITERS: u64 = 8;
const WRITES_PER_WRITER: u64 = 50;

/// A fresh number for names that must not collide with earlier runs
/// against a shared (persistent) backend, nor with concurrent runs.
pub(crate) fn unique_run_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Mix in the process id so parallel test binaries differ too.
    nanos
        .wrapping_add(count.wrapping_mul(1_000_003))
        .wrapping_add(u64::from(std::process::id()).wrapping_mul(1_000_000_007))
}

/// Fails the calling test: a conformance rule was broken.
// A conformance suite reports a broken rule by failing the test that runs
// it, like `assert!` does; this is the one place that panics.
#[allow(clippy::panic)]
#[track_caller]
pub(crate) fn broken(suite: &str, rule: &str, details: &str) -> ! {
    panic!("{suite} conformance, rule `{rule}`: {details}")
}

/// The value of `result`, or a failure naming `rule`.
#[track_caller]
pub(crate) fn must<T>(suite: &str, rule: &str, call: &str, result: Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => broken(suite, rule, &format!("{call} failed: {error}")),
    }
}

/// Fails naming `rule` unless `actual == expected`.
#[track_caller]
fn expect_eq<T: PartialEq + Debug>(suite: &str, rule: &str, what: &str, actual: T, expected: T) {
    if actual != expected {
        broken(
            suite,
            rule,
            &format!("{what}: expected {expected:?}, got {actual:?}"),
        );
    }
}

#[track_caller]
fn sequence(suite: &str, digits: &str) -> SequenceNumber {
    must(
        suite,
        "(suite setup)",
        "SequenceNumber::parse",
        SequenceNumber::parse(digits),
    )
}

fn at(sequence: impl Into<SequenceNumber>) -> Checkpoint {
    Checkpoint::At(Position::new(sequence.into()))
}

fn at_sub(sequence: impl Into<SequenceNumber>, sub: u64) -> Checkpoint {
    Checkpoint::At(Position {
        sequence: sequence.into(),
        sub_sequence: Some(sub),
    })
}

const CHECKPOINT_SUITE: &str = "checkpoint store";

/// A store under test, with the failure plumbing of the suite.
struct StoreCheck<'a> {
    store: &'a dyn CheckpointStore,
}

impl StoreCheck<'_> {
    async fn get(&self, rule: &str, key: &ShardKey) -> Option<Checkpoint> {
        let result = self.store.get(key).await;
        must(CHECKPOINT_SUITE, rule, &format!("get({key})"), result)
    }

    async fn set(&self, rule: &str, key: &ShardKey, checkpoint: &Checkpoint) {
        let result = self.store.set(key, checkpoint).await;
        must(
            CHECKPOINT_SUITE,
            rule,
            &format!("set({key}, {checkpoint})"),
            result,
        );
    }

    async fn expect(&self, rule: &str, key: &ShardKey, expected: Option<Checkpoint>) {
        let actual = self.get(rule, key).await;
        expect_eq(
            CHECKPOINT_SUITE,
            rule,
            &format!("checkpoint of {key}"),
            actual,
            expected,
        );
    }
}

/// Checks that `store` follows the [`CheckpointStore`] contract; fails the
/// calling test with a message naming the broken rule.
///
/// Every call uses keys under a fresh application name, so the suite can run
/// against a shared, persistent store (a Redis server, a DynamoDB table) and
/// in parallel with itself. The rules:
///
/// - `missing-key`: a key never written reads as `None`;
/// - `round-trip`: a checkpoint reads back exactly as written, with and
///   without a sub-sequence number, and SHARD_END too;
/// - `newer-overwrites`: a newer checkpoint replaces the stored one
///   (sub-sequence numbers order within a sequence number, and the whole
///   record sorts after its sub-records);
/// - `never-backwards`: setting an older checkpoint returns `Ok` and leaves
///   the newer one in place;
/// - `shard-end-is-final`: after SHARD_END no position is stored;
/// - `independent-keys`: the same shard id under another stream, another
///   application, or another shard of the same stream is a separate checkpoint;
/// - `numeric-order`: sequence numbers compare as numbers, not strings
///   (`"9"` then `"10"` keeps `10`) and keep all 56 digits of Kinesis-size
///   numbers (no rounding through floating point, no overflow);
/// - `concurrent-writers`: 8 writers setting increasing checkpoints
///   concurrently end with the largest one stored, and each writer reads
///   back at least what it wrote.
///
/// ```
/// use kinesis_connectors_core::MemoryCheckpointStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// kinesis_connectors_testkit::checkpoint_store_conformance(&MemoryCheckpointStore::new()).await;
/// # }
/// ```
pub async fn checkpoint_store_conformance(store: &dyn CheckpointStore) {
    let check = StoreCheck { store };
    let app = format!("conformance-{}", unique_run_id());
    let stream = "conformance-stream";
    let key = |shard: &str| ShardKey::new(app.as_str(), stream, shard);

    // missing-key
    let rule = "missing-key";
    check.expect(rule, &key("missing"), None).await;

    // round-trip
    let rule = "round-trip";
    let plain = key("round-trip-plain");
    check.set(rule, &plain, &at(42u64)).await;
    check.expect(rule, &plain, Some(at(42u64))).await;
    let sub = key("round-trip-sub");
    check.set(rule, &sub, &at_sub(42u64, 3)).await;
    check.expect(rule, &sub, Some(at_sub(42u64, 3))).await;
    let end = key("round-trip-shard-end");
    check.set(rule, &end, &Checkpoint::ShardEnd).await;
    check.expect(rule, &end, Some(Checkpoint::ShardEnd)).await;

    // newer-overwrites
    let rule = "newer-overwrites";
    let newer = key("newer");
    check.set(rule, &newer, &at(10u64)).await;
    check.set(rule, &newer, &at(20u64)).await;
    check.expect(rule, &newer, Some(at(20u64))).await;
    check.set(rule, &newer, &at_sub(21u64, 1)).await;
    check.set(rule, &newer, &at_sub(21u64, 2)).await;
    check.expect(rule, &newer, Some(at_sub(21u64, 2))).await;
    check.set(rule, &newer, &at(21u64)).await;
    check.expect(rule, &newer, Some(at(21u64))).await;

    // never-backwards
    let rule = "never-backwards";
    let backwards = key("backwards");
    check.set(rule, &backwards, &at(20u64)).await;
    check.set(rule, &backwards, &at(10u64)).await;
    check.expect(rule, &backwards, Some(at(20u64))).await;
    // Sub-records of record 20 come before the whole record 20.
    check.set(rule, &backwards, &at_sub(20u64, 5)).await;
    check.expect(rule, &backwards, Some(at(20u64))).await;
    let backwards_sub = key("backwards-sub");
    check.set(rule, &backwards_sub, &at_sub(30u64, 2)).await;
    check.set(rule, &backwards_sub, &at_sub(30u64, 1)).await;
    check.set(rule, &backwards_sub, &at(29u64)).await;
    check
        .expect(rule, &backwards_sub, Some(at_sub(30u64, 2)))
        .await;

    // shard-end-is-final
    let rule = "shard-end-is-final";
    let ended = key("ended");
    check.set(rule, &ended, &at(5u64)).await;
    check.set(rule, &ended, &Checkpoint::ShardEnd).await;
    check.expect(rule, &ended, Some(Checkpoint::ShardEnd)).await;
    check.set(rule, &ended, &at(6u64)).await;
    check
        .set(rule, &ended, &at(sequence(CHECKPOINT_SUITE, KINESIS_SEQ_B)))
        .await;
    check.expect(rule, &ended, Some(Checkpoint::ShardEnd)).await;

    // independent-keys
    let rule = "independent-keys";
    let shard = "shardId-000000000007";
    let base = ShardKey::new(app.as_str(), stream, shard);
    let other_stream = ShardKey::new(app.as_str(), format!("{stream}-other"), shard);
    let other_app = ShardKey::new(format!("{app}-other"), stream, shard);
    let other_shard = ShardKey::new(app.as_str(), stream, "shardId-000000000008");
    check.set(rule, &base, &at(100u64)).await;
    check.expect(rule, &other_stream, None).await;
    check.expect(rule, &other_app, None).await;
    check.expect(rule, &other_shard, None).await;
    check.set(rule, &other_stream, &at(50u64)).await;
    check.set(rule, &other_app, &Checkpoint::ShardEnd).await;
    check.set(rule, &other_shard, &at(200u64)).await;
    check.expect(rule, &base, Some(at(100u64))).await;
    check.expect(rule, &other_stream, Some(at(50u64))).await;
    check
        .expect(rule, &other_app, Some(Checkpoint::ShardEnd))
        .await;
    check.expect(rule, &other_shard, Some(at(200u64))).await;

    // numeric-order
    let rule = "numeric-order";
    let nine_ten = key("nine-ten");
    check.set(rule, &nine_ten, &at(9u64)).await;
    check.set(rule, &nine_ten, &at(10u64)).await;
    check.expect(rule, &nine_ten, Some(at(10u64))).await;
    check.set(rule, &nine_ten, &at(9u64)).await;
    check.expect(rule, &nine_ten, Some(at(10u64))).await;
    let big = key("kinesis-size");
    let seq_a = sequence(CHECKPOINT_SUITE, KINESIS_SEQ_A);
    let seq_a1 = sequence(CHECKPOINT_SUITE, KINESIS_SEQ_A_PLUS_1);
    let seq_b = sequence(CHECKPOINT_SUITE, KINESIS_SEQ_B);
    check.set(rule, &big, &at(seq_a.clone())).await;
    check.expect(rule, &big, Some(at(seq_a.clone()))).await;
    check.set(rule, &big, &at(seq_a1.clone())).await;
    check.expect(rule, &big, Some(at(seq_a1.clone()))).await;
    check.set(rule, &big, &at(seq_a.clone())).await;
    check.expect(rule, &big, Some(at(seq_a1))).await;
    check.set(rule, &big, &at(seq_b.clone())).await;
    // Fewer digits but a larger first digit: newer only when compared as strings.
    let short = sequence(CHECKPOINT_SUITE, STRING_LARGER_THAN_SEQ_A);
    check.set(rule, &big, &at(short)).await;
    check.expect(rule, &big, Some(at(seq_b))).await;
    let big_sub = key("kinesis-size-sub");
    check
        .set(
            rule,
            &big_sub,
            &Checkpoint::At(Position {
                sequence: seq_a.clone(),
                sub_sequence: Some(7),
            }),
        )
        .await;
    check
        .expect(
            rule,
            &big_sub,
            Some(Checkpoint::At(Position {
                sequence: seq_a,
                sub_sequence: Some(7),
            })),
        )
        .await;

    // concurrent-writers
    let rule = "concurrent-writers";
    let contended = key("contended");
    let check = &check;
    let contended = &contended;
    let writers = (0..WRITERS).map(|writer| async move {
        for i in 1..=WRITES_PER_WRITER {
            let value = i * WRITERS + writer;
            check.set(rule, contended, &at(value)).await;
            let read = check.get(rule, contended).await;
            if read.as_ref().is_none_or(|read| *read < at(value)) {
                broken(
                    CHECKPOINT_SUITE,
                    rule,
                    &format!(
                        "writer {writer} stored {} but then read {read:?}: the checkpoint went backwards",
                        at(value)
                    ),
                );
            }
            tokio::task::yield_now().await;
        }
    });
    join_all(writers).await;
    let max = WRITES_PER_WRITER * WRITERS + (WRITERS - 1);
    check.expect(rule, contended, Some(at(max))).await;
}

const EMITTER_SUITE: &str = "emitter";

/// Counts the items in the sink, for [`EmitterConformance::delivered_count`].
type CountFn<'a> = dyn Fn() -> BoxFuture<'a, usize> + Send + Sync + 'a;

/// Checks that an [`Emitter`] follows the contract; fails the calling test
/// with a message naming the broken rule.
///
/// The rules (each batch uses a fresh application name and 56-digit
/// sequence numbers, so runs against a shared sink do not see each other):
///
/// - `empty-batch`: a batch whose records were all filtered succeeds and
///   delivers nothing;
/// - `small-batch`, `large-batch`: batches of 10 and
///   [`large_batch_size`](Self::large_batch_size) items succeed and deliver
///   every item (minus any the emitter reports as rejected; rejected indices
///   must lie inside the batch);
/// - `idempotent-replay`: emitting the small batch again succeeds and
///   delivers nothing new;
/// - `filtered-records`: a batch whose range covers filtered records between
///   its items succeeds and delivers its items;
/// - `sub-sequence-batches`: two batches from one aggregated (KPL) record,
///   sharing the sequence number and differing in sub-sequence numbers, both
///   deliver: outputs named after `first`/`last` must include the sub-sequence;
/// - `shards-do-not-collide`: a batch from another shard covering the same
///   positions as the small batch delivers its items too.
///
/// "Delivers" is checked only when [`delivered_count`](Self::delivered_count)
/// tells the suite how to count the items in the sink; without it the suite
/// checks that every call succeeds. Batches of one shard are emitted in
/// increasing positions, as the consumer does.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use kinesis_connectors_core::{async_trait, Batch, EmitOutcome, Emitter, Result};
/// use kinesis_connectors_testkit::EmitterConformance;
///
/// /// Keeps one entry per (shard, batch range): replays overwrite.
/// #[derive(Default)]
/// struct KeyedSink(Mutex<HashMap<String, usize>>);
///
/// #[async_trait]
/// impl Emitter<String> for KeyedSink {
///     async fn emit(&self, batch: &Batch<String>) -> Result<EmitOutcome> {
///         if !batch.is_empty() {
///             let c = &batch.context;
///             let name = format!("{}/{}/{}/{}-{}", c.application, c.stream, c.shard_id, batch.first, batch.last);
///             self.0.lock().unwrap().insert(name, batch.len());
///         }
///         Ok(EmitOutcome::delivered())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = KeyedSink::default();
/// EmitterConformance::new(&sink, |i| format!("item-{i}"))
///     .delivered_count(|| {
///         let count = sink.0.lock().unwrap().values().sum();
///         Box::pin(async move { count })
///     })
///     .run()
///     .await;
/// # }
/// ```
pub struct EmitterConformance<'a, T> {
    emitter: &'a dyn Emitter<T>,
    make_item: Box<dyn Fn(usize) -> T + Send + Sync + 'a>,
    large_batch_size: usize,
    delivered_count: Option<Box<CountFn<'a>>>,
}

impl<T> Debug for EmitterConformance<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitterConformance")
            .field("large_batch_size", &self.large_batch_size)
            .field("delivered_count", &self.delivered_count.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds the suite's batches: fresh names, increasing positions.
struct Batches<'a, T> {
    application: String,
    run: u64,
    make_item: &'a (dyn Fn(usize) -> T + Send + Sync + 'a),
    next_item: usize,
}

impl<T> Batches<'_, T> {
    fn context(&self, shard: &str) -> ShardContext {
        ShardContext::new(&self.application, "conformance-stream", shard)
    }

    /// A 56-digit sequence number, increasing with `offset`.
    fn position(&self, offset: u64, sub: Option<u64>) -> Position {
        Position {
            sequence: sequence(EMITTER_SUITE, &format!("49{:020}{offset:034}", self.run)),
            sub_sequence: sub,
        }
    }

    /// A batch with one fresh item at each of `positions`, covering
    /// `first..=last` (`record_count` records).
    fn batch(
        &mut self,
        context: ShardContext,
        positions: Vec<Position>,
        first: Position,
        last: Position,
        record_count: usize,
    ) -> Batch<T> {
        let items = positions
            .into_iter()
            .enumerate()
            .map(|(i, position)| {
                let item = (self.make_item)(self.next_item);
                self.next_item += 1;
                let source = ItemSource {
                    position,
                    partition_key: format!("pk-{}", i % 8),
                    explicit_hash_key: None,
                    size: 1,
                };
                (item, source)
            })
            .collect();
        let mut batch = Batch::new(context, items, first, last);
        batch.record_count = record_count;
        batch
    }

    /// `n` items at consecutive offsets from `start`.
    fn consecutive(&mut self, shard: &str, start: u64, n: usize) -> Batch<T> {
        let positions: Vec<Position> = (0..n as u64)
            .map(|i| self.position(start + i, None))
            .collect();
        let first = self.position(start, None);
        let last = self.position(start + (n as u64).saturating_sub(1), None);
        self.batch(self.context(shard), positions, first, last, n)
    }
}

impl<'a, T: Send + Sync + Clone + 'a> EmitterConformance<'a, T> {
    /// A suite for `emitter`; `make_item(i)` makes the `i`-th item the
    /// suite emits (make them distinct if the sink deduplicates by content).
    pub fn new(
        emitter: &'a dyn Emitter<T>,
        make_item: impl Fn(usize) -> T + Send + Sync + 'a,
    ) -> Self {
        Self {
            emitter,
            make_item: Box::new(make_item),
            large_batch_size: 2_000,
            delivered_count: None,
        }
    }

    /// How many items the large batch holds (default 2,000).
    pub fn large_batch_size(mut self, n: usize) -> Self {
        self.large_batch_size = n;
        self
    }

    /// How to count the items in the sink (e.g. rows in a table, lines in
    /// the objects under a prefix), so the suite can check what each batch
    /// delivered, and that replays deliver nothing. Only differences between
    /// two counts matter: the sink may hold other data.
    pub fn delivered_count(
        mut self,
        count: impl Fn() -> BoxFuture<'a, usize> + Send + Sync + 'a,
    ) -> Self {
        self.delivered_count = Some(Box::new(count));
        self
    }

    async fn count(&self) -> Option<usize> {
        match &self.delivered_count {
            Some(count) => Some(count().await),
            None => None,
        }
    }

    /// Emits `batch`, then checks it delivered `expected_new` items (minus
    /// rejected ones when `expected_new` is the batch's length).
    async fn emit_and_check(&self, rule: &str, batch: &Batch<T>, replay: bool) {
        let before = self.count().await;
        let outcome = must(
            EMITTER_SUITE,
            rule,
            &format!(
                "emit of a batch of {} item(s) covering {}..={} of shard {}",
                batch.len(),
                batch.first,
                batch.last,
                batch.context.shard_id
            ),
            self.emitter.emit(batch).await,
        );
        let mut indices: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        indices.dedup();
        if indices.len() != outcome.rejected.len() || indices.iter().any(|&i| i >= batch.len()) {
            broken(
                EMITTER_SUITE,
                rule,
                &format!(
                    "rejected item indices {:?} must be distinct and below the batch length {}",
                    outcome.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
                    batch.len()
                ),
            );
        }
        let (Some(before), Some(after)) = (before, self.count().await) else {
            return;
        };
        let expected = if replay {
            0
        } else {
            batch.len() - indices.len()
        };
        let delivered = after.checked_sub(before);
        if delivered != Some(expected) {
            let what = if replay {
                "emitting the same batch again"
            } else {
                "emitting the batch"
            };
            broken(
                EMITTER_SUITE,
                rule,
                &format!(
                    "{what} changed the delivered count from {before} to {after}; expected {expected} new item(s)"
                ),
            );
        }
    }

    /// Runs every rule; see [`EmitterConformance`].
    pub async fn run(self) {
        let run = unique_run_id();
        let mut batches = Batches {
            application: format!("conformance-{run}"),
            run,
            make_item: &*self.make_item,
            next_item: 0,
        };
        let shard_a = "shardId-000000000000";
        let shard_b = "shardId-000000000001";

        // empty-batch: three records, all filtered.
        let empty = batches.batch(
            batches.context(shard_a),
            Vec::new(),
            batches.position(1, None),
            batches.position(3, None),
            3,
        );
        self.emit_and_check("empty-batch", &empty, false).await;

        // small-batch, then its replay.
        let small = batches.consecutive(shard_a, 10, 10);
        self.emit_and_check("small-batch", &small, false).await;
        self.emit_and_check("idempotent-replay", &small, true).await;

        // large-batch
        let large_start = 100;
        let large = batches.consecutive(shard_a, large_start, self.large_batch_size);
        self.emit_and_check("large-batch", &large, false).await;

        // filtered-records: an item at every other offset, the rest filtered.
        let sparse_start = large_start + self.large_batch_size as u64 + 10;
        let positions = (0..5)
            .map(|i| batches.position(sparse_start + 1 + 2 * i, None))
            .collect();
        let sparse = batches.batch(
            batches.context(shard_a),
            positions,
            batches.position(sparse_start, None),
            batches.position(sparse_start + 10, None),
            11,
        );
        self.emit_and_check("filtered-records", &sparse, false)
            .await;

        // sub-sequence-batches: one aggregated record split over two batches.
        let aggregated = sparse_start + 20;
        let mut sub_batch = |subs: std::ops::RangeInclusive<u64>| {
            let positions: Vec<Position> = subs
                .clone()
                .map(|sub| batches.position(aggregated, Some(sub)))
                .collect();
            let count = positions.len();
            let first = batches.position(aggregated, Some(*subs.start()));
            let last = batches.position(aggregated, Some(*subs.end()));
            batches.batch(batches.context(shard_a), positions, first, last, count)
        };
        let first_half = sub_batch(0..=3);
        let second_half = sub_batch(4..=7);
        self.emit_and_check("sub-sequence-batches", &first_half, false)
            .await;
        self.emit_and_check("sub-sequence-batches", &second_half, false)
            .await;

        // shards-do-not-collide: shard B, same positions as the small batch.
        let other_shard = batches.consecutive(shard_b, 10, 10);
        self.emit_and_check("shards-do-not-collide", &other_shard, false)
            .await;
    }
}

/// Runs [`EmitterConformance`] on `emitter` with its defaults (no
/// `delivered_count`, so delivery and replays are not counted).
///
/// ```
/// use kinesis_connectors_testkit::{emitter_conformance, RecordingEmitter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// emitter_conformance(&RecordingEmitter::new(), |i| i).await;
/// # }
/// ```
pub async fn emitter_conformance<'a, T: Send + Sync + Clone + 'a>(
    emitter: &'a dyn Emitter<T>,
    make_item: impl Fn(usize) -> T + Send + Sync + 'a,
) {
    EmitterConformance::new(emitter, make_item).run().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_differ() {
        assert_ne!(unique_run_id(), unique_run_id());
    }

    #[test]
    fn big_constants_are_ordered_and_kinesis_sized() {
        let a = sequence("t", KINESIS_SEQ_A);
        let a1 = sequence("t", KINESIS_SEQ_A_PLUS_1);
        let b = sequence("t", KINESIS_SEQ_B);
        assert!(a < a1 && a1 < b);
        assert_eq!(KINESIS_SEQ_A.len(), 56);
        assert!(sequence("t", STRING_LARGER_THAN_SEQ_A) < a);
        assert!(STRING_LARGER_THAN_SEQ_A > KINESIS_SEQ_A);
    }
}
