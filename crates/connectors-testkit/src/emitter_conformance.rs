//! The emitter conformance suite: the rules every [`Emitter`] must follow,
//! one function per rule, and [`run_all`].
//!
//! Each rule takes an [`EmitterConformance`]: the emitter, how to make
//! items, and (if the sink can be counted) how to count what it holds.
//! Every rule builds its batches under a fresh application name with
//! 56-digit sequence numbers that include a fresh run id, so rules do not
//! see each other nor earlier runs against a shared bucket or table; item
//! indices never repeat within one `EmitterConformance`, so a sink that
//! deduplicates by content counts every rule's items. Batches of one shard
//! are emitted in increasing positions, as the consumer does.
//!
//! "Delivers" is checked only when
//! [`delivered_count`](EmitterConformance::delivered_count) says how to
//! count the items in the sink; without it the rules check that every call
//! succeeds (and reports valid rejected indices), and [`run_all`]'s report
//! carries a note saying so.
//!
//! ```
//! use kinesis_connectors_testkit::{emitter_conformance, EmitterCapabilities, EmitterConformance, RecordingEmitter};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let emitter = RecordingEmitter::new();
//! let suite = EmitterConformance::new(&emitter, |i| format!("item-{i}"));
//! emitter_conformance::small_batch(&suite).await.unwrap();
//! let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
//! assert!(report.is_success(), "{report}");
//! # }
//! ```

use std::fmt::Debug;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use kinesis_connectors_core::{Batch, Emitter, ItemSource, Position, ShardContext};

use crate::conformance::{ConformanceReport, Rule, RuleFailure, RuleResult, unique_run_id};

const SUITE: &str = "emitter";

const EMPTY_BATCH: Rule = rule("empty-batch");
const SMALL_BATCH: Rule = rule("small-batch");
const IDEMPOTENT_REPLAY: Rule = rule("idempotent-replay");
const LARGE_BATCH: Rule = rule("large-batch");
const FILTERED_RECORDS: Rule = rule("filtered-records");
const SUB_SEQUENCE_BATCHES: Rule = rule("sub-sequence-batches");
const SHARDS_DO_NOT_COLLIDE: Rule = rule("shards-do-not-collide");

const fn rule(name: &'static str) -> Rule {
    Rule { suite: SUITE, name }
}

/// Every rule of the suite, in the order [`run_all`] runs them, so a test
/// can check that each one was reported.
pub const RULES: [&str; 7] = [
    EMPTY_BATCH.name,
    SMALL_BATCH.name,
    IDEMPOTENT_REPLAY.name,
    LARGE_BATCH.name,
    FILTERED_RECORDS.name,
    SUB_SEQUENCE_BATCHES.name,
    SHARDS_DO_NOT_COLLIDE.name,
];

/// The two shards the rules write to.
const SHARD_A: &str = "shardId-000000000000";
const SHARD_B: &str = "shardId-000000000001";

/// Items in the small batches.
const SMALL: usize = 10;

/// What an emitter supports, so [`run_all`] skips (and reports as skipped)
/// the rules a backend cannot follow instead of failing them.
///
/// [`new`](Self::new) (also the `Default`) declares everything supported:
/// turn off only what the sink really lacks.
///
/// ```
/// use kinesis_connectors_testkit::EmitterCapabilities;
/// // A queue that cannot recognise a replayed batch.
/// let capabilities = EmitterCapabilities::new().idempotent_replay(false);
/// assert!(!capabilities.idempotent_replay && capabilities.sub_sequence_positions);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmitterCapabilities {
    /// A replayed batch adds nothing to the sink (rule `idempotent-replay`).
    /// Without it, every retry or restart duplicates items downstream.
    pub idempotent_replay: bool,
    /// Batches of one aggregated (KPL) record, which differ only in
    /// sub-sequence numbers, are kept apart (rule `sub-sequence-batches`).
    /// Without it, such a stream loses items.
    pub sub_sequence_positions: bool,
}

impl EmitterCapabilities {
    /// Everything supported: every rule runs.
    pub fn new() -> Self {
        Self {
            idempotent_replay: true,
            sub_sequence_positions: true,
        }
    }

    /// Whether a replayed batch adds nothing to the sink.
    pub fn idempotent_replay(mut self, supported: bool) -> Self {
        self.idempotent_replay = supported;
        self
    }

    /// Whether batches differing only in sub-sequence numbers are kept apart.
    pub fn sub_sequence_positions(mut self, supported: bool) -> Self {
        self.sub_sequence_positions = supported;
        self
    }
}

impl Default for EmitterCapabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts the items in the sink, for [`EmitterConformance::delivered_count`].
type CountFn<'a> = dyn Fn() -> BoxFuture<'a, usize> + Send + Sync + 'a;

/// An emitter under test: the emitter, how to make the items the rules
/// emit and, if you can, how to count what the sink holds. Give it to the
/// rule functions of [`emitter_conformance`](self) or to [`run_all`].
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use kinesis_connectors_core::{async_trait, Batch, EmitOutcome, Emitter, Result};
/// use kinesis_connectors_testkit::{emitter_conformance, EmitterCapabilities, EmitterConformance};
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
/// let suite = EmitterConformance::new(&sink, |i| format!("item-{i}"))
///     .delivered_count(|| {
///         let count = sink.0.lock().unwrap().values().sum();
///         Box::pin(async move { count })
///     });
/// let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
/// assert!(report.is_success(), "{report}");
/// # }
/// ```
pub struct EmitterConformance<'a, T> {
    emitter: &'a dyn Emitter<T>,
    make_item: Box<dyn Fn(usize) -> T + Send + Sync + 'a>,
    large_batch_size: usize,
    delivered_count: Option<Box<CountFn<'a>>>,
    /// The index of the next item to make: never repeats, across rules too.
    next_item: AtomicUsize,
}

impl<T> Debug for EmitterConformance<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitterConformance")
            .field("large_batch_size", &self.large_batch_size)
            .field("delivered_count", &self.delivered_count.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Send + Sync + 'a> EmitterConformance<'a, T> {
    /// An emitter under test; `make_item(i)` makes the `i`-th item the
    /// rules emit (make them distinct if the sink deduplicates by content).
    pub fn new(
        emitter: &'a dyn Emitter<T>,
        make_item: impl Fn(usize) -> T + Send + Sync + 'a,
    ) -> Self {
        Self {
            emitter,
            make_item: Box::new(make_item),
            large_batch_size: 2_000,
            delivered_count: None,
            next_item: AtomicUsize::new(0),
        }
    }

    /// How many items the `large-batch` rule's batch holds (default 2,000).
    pub fn large_batch_size(mut self, n: usize) -> Self {
        self.large_batch_size = n;
        self
    }

    /// How to count the items in the sink (e.g. rows in a table, lines in
    /// the objects under a prefix), so the rules can check what each batch
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

    /// Emits `batch`, then checks that it delivered its items (minus
    /// rejected ones), or nothing new if it is a `replay`.
    async fn emit_and_check(&self, rule: Rule, batch: &Batch<T>, replay: bool) -> RuleResult {
        let before = self.count().await;
        let outcome = rule.call(
            &format!(
                "emit of a batch of {} item(s) covering {}..={} of shard {}",
                batch.len(),
                batch.first,
                batch.last,
                batch.context.shard_id
            ),
            self.emitter.emit(batch).await,
        )?;
        let mut indices: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        indices.dedup();
        if indices.len() != outcome.rejected.len() || indices.iter().any(|&i| i >= batch.len()) {
            return Err(rule.fail(format!(
                "rejected item indices {:?} must be distinct and below the batch length {}",
                outcome.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
                batch.len()
            )));
        }
        let (Some(before), Some(after)) = (before, self.count().await) else {
            return Ok(());
        };
        let expected = if replay {
            0
        } else {
            batch.len() - indices.len()
        };
        if after.checked_sub(before) == Some(expected) {
            return Ok(());
        }
        let what = if replay {
            "emitting the same batch again"
        } else {
            "emitting the batch"
        };
        Err(rule.fail(format!(
            "{what} changed the delivered count from {before} to {after}; expected {expected} new item(s)"
        )))
    }

    /// A fresh set of batches for `rule`.
    fn batches(&self, rule: Rule) -> Batches<'_, 'a, T> {
        let run = unique_run_id();
        Batches {
            suite: self,
            rule,
            application: format!("conformance-{run}"),
            run,
        }
    }
}

/// Runs every rule on `suite`, the unsupported ones reported as skipped,
/// and goes on after a broken rule: the report names them all.
pub async fn run_all<T: Send + Sync>(
    suite: &EmitterConformance<'_, T>,
    capabilities: EmitterCapabilities,
) -> ConformanceReport {
    let mut report = ConformanceReport::new(SUITE);
    report.run(EMPTY_BATCH.name, empty_batch(suite)).await;
    report.run(SMALL_BATCH.name, small_batch(suite)).await;
    report
        .run_if(
            capabilities.idempotent_replay,
            IDEMPOTENT_REPLAY.name,
            "a replayed batch is delivered again (EmitterCapabilities::idempotent_replay is false)",
            idempotent_replay(suite),
        )
        .await;
    report.run(LARGE_BATCH.name, large_batch(suite)).await;
    report
        .run(FILTERED_RECORDS.name, filtered_records(suite))
        .await;
    report
        .run_if(
            capabilities.sub_sequence_positions,
            SUB_SEQUENCE_BATCHES.name,
            "batches differing only in sub-sequence numbers collide \
             (EmitterCapabilities::sub_sequence_positions is false)",
            sub_sequence_batches(suite),
        )
        .await;
    report
        .run(SHARDS_DO_NOT_COLLIDE.name, shards_do_not_collide(suite))
        .await;
    if suite.delivered_count.is_none() {
        report.note(
            "delivered items not counted (no EmitterConformance::delivered_count): \
             each rule checked only that emit succeeds with valid rejected indices",
        );
    }
    report
}

/// Rule `empty-batch`: a batch whose records were all filtered (no items,
/// three records covered) succeeds and delivers nothing.
pub async fn empty_batch<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(EMPTY_BATCH);
    let (first, last) = (batches.position(1, None)?, batches.position(3, None)?);
    let empty = batches.batch(SHARD_A, Vec::new(), first, last, 3);
    suite.emit_and_check(EMPTY_BATCH, &empty, false).await
}

/// Rule `small-batch`: a batch of 10 items succeeds and delivers every
/// item (minus any the emitter reports as rejected; rejected indices must
/// be distinct and lie inside the batch, as in every rule).
pub async fn small_batch<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(SMALL_BATCH);
    let small = batches.consecutive(SHARD_A, 10, SMALL)?;
    suite.emit_and_check(SMALL_BATCH, &small, false).await
}

/// Rule `idempotent-replay`: a small batch emitted again succeeds and
/// delivers nothing new (a retry or a restart replays batches).
///
/// Skipped by [`run_all`] when [`EmitterCapabilities::idempotent_replay`]
/// is off.
pub async fn idempotent_replay<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(IDEMPOTENT_REPLAY);
    let small = batches.consecutive(SHARD_A, 10, SMALL)?;
    suite
        .emit_and_check(IDEMPOTENT_REPLAY, &small, false)
        .await?;
    suite.emit_and_check(IDEMPOTENT_REPLAY, &small, true).await
}

/// Rule `large-batch`: a batch of
/// [`large_batch_size`](EmitterConformance::large_batch_size) items
/// succeeds and delivers every item (the emitter splits it within the
/// sink's request limits).
pub async fn large_batch<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(LARGE_BATCH);
    let large = batches.consecutive(SHARD_A, 100, suite.large_batch_size)?;
    suite.emit_and_check(LARGE_BATCH, &large, false).await
}

/// Rule `filtered-records`: a batch whose range covers filtered records
/// between its items (an item at every other offset) succeeds and delivers
/// its items.
pub async fn filtered_records<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(FILTERED_RECORDS);
    let start = 10;
    let positions = (0..5)
        .map(|i| batches.position(start + 1 + 2 * i, None))
        .collect::<Result<Vec<_>, _>>()?;
    let (first, last) = (
        batches.position(start, None)?,
        batches.position(start + 10, None)?,
    );
    let sparse = batches.batch(SHARD_A, positions, first, last, 11);
    suite.emit_and_check(FILTERED_RECORDS, &sparse, false).await
}

/// Rule `sub-sequence-batches`: two batches from one aggregated (KPL)
/// record, sharing the sequence number and differing in sub-sequence
/// numbers, both deliver: outputs named after `first`/`last` must include
/// the sub-sequence.
///
/// Skipped by [`run_all`] when
/// [`EmitterCapabilities::sub_sequence_positions`] is off.
pub async fn sub_sequence_batches<T: Send + Sync>(suite: &EmitterConformance<'_, T>) -> RuleResult {
    let batches = suite.batches(SUB_SEQUENCE_BATCHES);
    let first_half = batches.aggregated(10, 0..=3)?;
    let second_half = batches.aggregated(10, 4..=7)?;
    suite
        .emit_and_check(SUB_SEQUENCE_BATCHES, &first_half, false)
        .await?;
    suite
        .emit_and_check(SUB_SEQUENCE_BATCHES, &second_half, false)
        .await
}

/// Rule `shards-do-not-collide`: after a small batch of one shard, a batch
/// from another shard covering the same positions delivers its items too.
pub async fn shards_do_not_collide<T: Send + Sync>(
    suite: &EmitterConformance<'_, T>,
) -> RuleResult {
    let batches = suite.batches(SHARDS_DO_NOT_COLLIDE);
    let first = batches.consecutive(SHARD_A, 10, SMALL)?;
    suite
        .emit_and_check(SHARDS_DO_NOT_COLLIDE, &first, false)
        .await?;
    let other_shard = batches.consecutive(SHARD_B, 10, SMALL)?;
    suite
        .emit_and_check(SHARDS_DO_NOT_COLLIDE, &other_shard, false)
        .await
}

/// Builds one rule's batches: fresh names, increasing positions.
struct Batches<'s, 'a, T> {
    suite: &'s EmitterConformance<'a, T>,
    rule: Rule,
    application: String,
    run: u64,
}

impl<T> Batches<'_, '_, T> {
    fn context(&self, shard: &str) -> ShardContext {
        ShardContext::new(&self.application, "conformance-stream", shard)
    }

    /// A 56-digit sequence number, increasing with `offset`.
    fn position(&self, offset: u64, sub: Option<u64>) -> Result<Position, RuleFailure> {
        Ok(Position {
            sequence: self
                .rule
                .sequence(&format!("49{:020}{offset:034}", self.run))?,
            sub_sequence: sub,
        })
    }

    /// A batch of `shard` with one fresh item at each of `positions`,
    /// covering `first..=last` (`record_count` records).
    fn batch(
        &self,
        shard: &str,
        positions: Vec<Position>,
        first: Position,
        last: Position,
        record_count: usize,
    ) -> Batch<T> {
        let items = positions
            .into_iter()
            .enumerate()
            .map(|(i, position)| {
                let item =
                    (self.suite.make_item)(self.suite.next_item.fetch_add(1, Ordering::Relaxed));
                let source = ItemSource {
                    position,
                    partition_key: format!("pk-{}", i % 8),
                    explicit_hash_key: None,
                    size: 1,
                };
                (item, source)
            })
            .collect();
        let mut batch = Batch::new(self.context(shard), items, first, last);
        batch.record_count = record_count;
        batch
    }

    /// `n` items of `shard` at consecutive offsets from `start`.
    fn consecutive(&self, shard: &str, start: u64, n: usize) -> Result<Batch<T>, RuleFailure> {
        let positions = (0..n as u64)
            .map(|i| self.position(start + i, None))
            .collect::<Result<Vec<_>, _>>()?;
        let first = self.position(start, None)?;
        let last = self.position(start + (n as u64).saturating_sub(1), None)?;
        Ok(self.batch(shard, positions, first, last, n))
    }

    /// The sub-records `subs` of the aggregated record at `offset` of shard A.
    fn aggregated(&self, offset: u64, subs: RangeInclusive<u64>) -> Result<Batch<T>, RuleFailure> {
        let positions = subs
            .clone()
            .map(|sub| self.position(offset, Some(sub)))
            .collect::<Result<Vec<_>, _>>()?;
        let count = positions.len();
        let first = self.position(offset, Some(*subs.start()))?;
        let last = self.position(offset, Some(*subs.end()))?;
        Ok(self.batch(SHARD_A, positions, first, last, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingEmitter;

    #[tokio::test]
    async fn run_all_reports_every_rule_in_order_and_notes_the_missing_count() {
        let emitter = RecordingEmitter::new();
        let suite = EmitterConformance::new(&emitter, |i| i).large_batch_size(20);
        let report = run_all(&suite, EmitterCapabilities::new()).await;
        assert!(report.is_success(), "{report}");
        assert_eq!(report.passed(), RULES);
        assert_eq!(report.notes().len(), 1, "{report}");
    }

    #[tokio::test]
    async fn unsupported_rules_are_skipped_by_name() {
        let emitter = RecordingEmitter::new();
        let suite = EmitterConformance::new(&emitter, |i| i).large_batch_size(20);
        let capabilities = EmitterCapabilities::default()
            .idempotent_replay(false)
            .sub_sequence_positions(false);
        let report = run_all(&suite, capabilities).await;
        assert_eq!(
            report.skipped_rules(),
            ["idempotent-replay", "sub-sequence-batches"]
        );
        assert_eq!(report.passed().len(), RULES.len() - 2);
    }

    #[tokio::test]
    async fn item_indices_never_repeat_across_rules() {
        let emitter = RecordingEmitter::new();
        let suite = EmitterConformance::new(&emitter, |i| i).large_batch_size(20);
        small_batch(&suite).await.unwrap();
        small_batch(&suite).await.unwrap();
        let items = emitter.items();
        assert_eq!(items, (0..2 * SMALL).collect::<Vec<_>>());
    }
}
