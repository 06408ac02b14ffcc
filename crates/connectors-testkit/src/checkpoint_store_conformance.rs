//! The checkpoint-store conformance suite: the rules every
//! [`CheckpointStore`] must follow, one function per rule, and
//! [`run_all`].
//!
//! Every rule uses keys under a fresh application name, so rules can run
//! against a shared, persistent store (a Redis server, a DynamoDB table),
//! alone, in any order and in parallel with each other.
//!
//! ```
//! use kinesis_connectors_core::MemoryCheckpointStore;
//! use kinesis_connectors_testkit::{checkpoint_store_conformance, CheckpointStoreCapabilities};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryCheckpointStore::new();
//! // One rule, e.g. while fixing it:
//! checkpoint_store_conformance::never_backwards(&store).await.unwrap();
//! // Every rule, failures collected:
//! let report = checkpoint_store_conformance::run_all(&store, CheckpointStoreCapabilities::new()).await;
//! assert!(report.is_success(), "{report}");
//! # }
//! ```

use futures::future::join_all;
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Lease, Position, SequenceNumber, ShardKey,
};

use crate::conformance::{ConformanceReport, Rule, RuleFailure, RuleResult, unique_run_id};

const SUITE: &str = "checkpoint store";

const MISSING_KEY: Rule = rule("missing-key");
const ROUND_TRIP: Rule = rule("round-trip");
const NEWER_OVERWRITES: Rule = rule("newer-overwrites");
const NEVER_BACKWARDS: Rule = rule("never-backwards");
const SHARD_END_IS_FINAL: Rule = rule("shard-end-is-final");
const INDEPENDENT_KEYS: Rule = rule("independent-keys");
const NUMERIC_ORDER: Rule = rule("numeric-order");
const SUB_SEQUENCE_POSITIONS: Rule = rule("sub-sequence-positions");
const CONCURRENT_WRITERS: Rule = rule("concurrent-writers");
const PENDING_BATCHES: Rule = rule("pending-batches");

const fn rule(name: &'static str) -> Rule {
    Rule { suite: SUITE, name }
}

/// Every rule of the suite, in the order [`run_all`] runs them, so a test
/// can check that each one was reported.
pub const RULES: [&str; 10] = [
    MISSING_KEY.name,
    ROUND_TRIP.name,
    NEWER_OVERWRITES.name,
    NEVER_BACKWARDS.name,
    SHARD_END_IS_FINAL.name,
    INDEPENDENT_KEYS.name,
    NUMERIC_ORDER.name,
    SUB_SEQUENCE_POSITIONS.name,
    CONCURRENT_WRITERS.name,
    PENDING_BATCHES.name,
];

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

/// What a checkpoint store supports, so [`run_all`] skips (and reports
/// as skipped) the rules a backend cannot follow instead of failing them.
///
/// [`new`](Self::new) (also the `Default`) declares everything supported:
/// turn off only what the backend really lacks.
///
/// ```
/// use kinesis_connectors_testkit::CheckpointStoreCapabilities;
/// // A store in a format without KPL sub-sequence numbers.
/// let capabilities = CheckpointStoreCapabilities::new().sub_sequence_positions(false);
/// assert!(!capabilities.sub_sequence_positions);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointStoreCapabilities {
    /// The store keeps the KPL sub-sequence number of a checkpoint (rule
    /// `sub-sequence-positions`). Without it, a consumer of aggregated
    /// records re-reads the rest of an aggregated record after a restart.
    pub sub_sequence_positions: bool,
    /// The store keeps pending batches
    /// ([`CheckpointStore::keeps_pending_batches`], rule `pending-batches`).
    /// Without them a batch cut by time may be cut elsewhere when replayed,
    /// so sinks naming outputs by batch range can load records twice.
    pub pending_batches: bool,
}

impl CheckpointStoreCapabilities {
    /// Everything supported: every rule runs.
    pub fn new() -> Self {
        Self {
            sub_sequence_positions: true,
            pending_batches: true,
        }
    }

    /// Whether the store keeps KPL sub-sequence numbers.
    pub fn sub_sequence_positions(mut self, supported: bool) -> Self {
        self.sub_sequence_positions = supported;
        self
    }

    /// Whether the store keeps pending batches (replay-stable batches).
    pub fn pending_batches(mut self, supported: bool) -> Self {
        self.pending_batches = supported;
        self
    }
}

impl Default for CheckpointStoreCapabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every rule against `store`, the unsupported ones reported as
/// skipped, and goes on after a broken rule: the report names them all.
pub async fn run_all(
    store: &dyn CheckpointStore,
    capabilities: CheckpointStoreCapabilities,
) -> ConformanceReport {
    let mut report = ConformanceReport::new(SUITE);
    report.run(MISSING_KEY.name, missing_key(store)).await;
    report.run(ROUND_TRIP.name, round_trip(store)).await;
    report
        .run(NEWER_OVERWRITES.name, newer_overwrites(store))
        .await;
    report
        .run(NEVER_BACKWARDS.name, never_backwards(store))
        .await;
    report
        .run(SHARD_END_IS_FINAL.name, shard_end_is_final(store))
        .await;
    report
        .run(INDEPENDENT_KEYS.name, independent_keys(store))
        .await;
    report.run(NUMERIC_ORDER.name, numeric_order(store)).await;
    report
        .run_if(
            capabilities.sub_sequence_positions,
            SUB_SEQUENCE_POSITIONS.name,
            "the store does not keep sub-sequence numbers \
             (CheckpointStoreCapabilities::sub_sequence_positions is false)",
            sub_sequence_positions(store),
        )
        .await;
    report
        .run(CONCURRENT_WRITERS.name, concurrent_writers(store))
        .await;
    report
        .run_if(
            capabilities.pending_batches,
            PENDING_BATCHES.name,
            "the store keeps no pending batches \
             (CheckpointStoreCapabilities::pending_batches is false)",
            pending_batches(store),
        )
        .await;
    report
}

/// Rule `missing-key`: a key never written reads as `None`.
pub async fn missing_key(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, MISSING_KEY);
    check.expect(&check.key("missing"), None).await
}

/// Rule `round-trip`: a checkpoint reads back exactly as written, a
/// position and SHARD_END alike.
pub async fn round_trip(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, ROUND_TRIP);
    let plain = check.key("round-trip-plain");
    check.set(&plain, &at(42u64)).await?;
    check.expect(&plain, Some(at(42u64))).await?;
    let end = check.key("round-trip-shard-end");
    check.set(&end, &Checkpoint::ShardEnd).await?;
    check.expect(&end, Some(Checkpoint::ShardEnd)).await
}

/// Rule `newer-overwrites`: a newer checkpoint replaces the stored one.
pub async fn newer_overwrites(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, NEWER_OVERWRITES);
    let newer = check.key("newer");
    check.set(&newer, &at(10u64)).await?;
    check.set(&newer, &at(20u64)).await?;
    check.expect(&newer, Some(at(20u64))).await
}

/// Rule `never-backwards`: setting an older checkpoint returns `Ok` and
/// leaves the newer one in place (a replayed batch is not an error).
pub async fn never_backwards(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, NEVER_BACKWARDS);
    let backwards = check.key("backwards");
    check.set(&backwards, &at(20u64)).await?;
    check.set(&backwards, &at(10u64)).await?;
    check.expect(&backwards, Some(at(20u64))).await
}

/// Rule `shard-end-is-final`: after SHARD_END no position is stored, not
/// even a larger one.
pub async fn shard_end_is_final(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, SHARD_END_IS_FINAL);
    let ended = check.key("ended");
    check.set(&ended, &at(5u64)).await?;
    check.set(&ended, &Checkpoint::ShardEnd).await?;
    check.expect(&ended, Some(Checkpoint::ShardEnd)).await?;
    check.set(&ended, &at(6u64)).await?;
    let big = SHARD_END_IS_FINAL.sequence(KINESIS_SEQ_B)?;
    check.set(&ended, &at(big)).await?;
    check.expect(&ended, Some(Checkpoint::ShardEnd)).await
}

/// Rule `independent-keys`: the same shard id under another stream,
/// another application, or another shard of the same stream is a separate
/// checkpoint.
pub async fn independent_keys(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, INDEPENDENT_KEYS);
    let (app, stream) = (check.application.as_str(), STREAM);
    let shard = "shardId-000000000007";
    let base = ShardKey::new(app, stream, shard);
    let other_stream = ShardKey::new(app, format!("{stream}-other"), shard);
    let other_app = ShardKey::new(format!("{app}-other"), stream, shard);
    let other_shard = ShardKey::new(app, stream, "shardId-000000000008");
    check.set(&base, &at(100u64)).await?;
    check.expect(&other_stream, None).await?;
    check.expect(&other_app, None).await?;
    check.expect(&other_shard, None).await?;
    check.set(&other_stream, &at(50u64)).await?;
    check.set(&other_app, &Checkpoint::ShardEnd).await?;
    check.set(&other_shard, &at(200u64)).await?;
    check.expect(&base, Some(at(100u64))).await?;
    check.expect(&other_stream, Some(at(50u64))).await?;
    check.expect(&other_app, Some(Checkpoint::ShardEnd)).await?;
    check.expect(&other_shard, Some(at(200u64))).await
}

/// Rule `numeric-order`: sequence numbers compare as numbers, not strings
/// (`"9"` then `"10"` keeps `10`), and keep all 56 digits of Kinesis-size
/// numbers (no rounding through floating point, no overflow).
pub async fn numeric_order(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, NUMERIC_ORDER);
    let nine_ten = check.key("nine-ten");
    check.set(&nine_ten, &at(9u64)).await?;
    check.set(&nine_ten, &at(10u64)).await?;
    check.expect(&nine_ten, Some(at(10u64))).await?;
    check.set(&nine_ten, &at(9u64)).await?;
    check.expect(&nine_ten, Some(at(10u64))).await?;
    let big = check.key("kinesis-size");
    let seq_a = NUMERIC_ORDER.sequence(KINESIS_SEQ_A)?;
    let seq_a1 = NUMERIC_ORDER.sequence(KINESIS_SEQ_A_PLUS_1)?;
    let seq_b = NUMERIC_ORDER.sequence(KINESIS_SEQ_B)?;
    check.set(&big, &at(seq_a.clone())).await?;
    check.expect(&big, Some(at(seq_a.clone()))).await?;
    check.set(&big, &at(seq_a1.clone())).await?;
    check.expect(&big, Some(at(seq_a1.clone()))).await?;
    check.set(&big, &at(seq_a)).await?;
    check.expect(&big, Some(at(seq_a1))).await?;
    check.set(&big, &at(seq_b.clone())).await?;
    // Fewer digits but a larger first digit: newer only when compared as strings.
    let short = NUMERIC_ORDER.sequence(STRING_LARGER_THAN_SEQ_A)?;
    check.set(&big, &at(short)).await?;
    check.expect(&big, Some(at(seq_b))).await
}

/// Rule `sub-sequence-positions`: KPL sub-sequence numbers are kept and
/// ordered. A checkpoint with one reads back exactly (with a 56-digit
/// sequence number too); sub-sequence numbers order within a sequence
/// number, and the whole record sorts after its sub-records, so a newer
/// sub-position overwrites and an older one (or an earlier record) is
/// ignored.
///
/// Skipped by [`run_all`] when
/// [`CheckpointStoreCapabilities::sub_sequence_positions`] is off.
pub async fn sub_sequence_positions(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, SUB_SEQUENCE_POSITIONS);
    // Round trip.
    let sub = check.key("round-trip-sub");
    check.set(&sub, &at_sub(42u64, 3)).await?;
    check.expect(&sub, Some(at_sub(42u64, 3))).await?;
    let big_sub = check.key("kinesis-size-sub");
    let seq_a = SUB_SEQUENCE_POSITIONS.sequence(KINESIS_SEQ_A)?;
    check.set(&big_sub, &at_sub(seq_a.clone(), 7)).await?;
    check.expect(&big_sub, Some(at_sub(seq_a, 7))).await?;
    // Newer sub-positions overwrite; the whole record comes after them.
    let newer = check.key("newer-sub");
    check.set(&newer, &at(20u64)).await?;
    check.set(&newer, &at_sub(21u64, 1)).await?;
    check.set(&newer, &at_sub(21u64, 2)).await?;
    check.expect(&newer, Some(at_sub(21u64, 2))).await?;
    check.set(&newer, &at(21u64)).await?;
    check.expect(&newer, Some(at(21u64))).await?;
    // Never backwards: sub-records of record 20 come before the whole record 20.
    let backwards = check.key("backwards-whole");
    check.set(&backwards, &at(20u64)).await?;
    check.set(&backwards, &at_sub(20u64, 5)).await?;
    check.expect(&backwards, Some(at(20u64))).await?;
    let backwards_sub = check.key("backwards-sub");
    check.set(&backwards_sub, &at_sub(30u64, 2)).await?;
    check.set(&backwards_sub, &at_sub(30u64, 1)).await?;
    check.set(&backwards_sub, &at(29u64)).await?;
    check.expect(&backwards_sub, Some(at_sub(30u64, 2))).await
}

/// Rule `concurrent-writers`: 8 writers setting increasing checkpoints
/// concurrently end with the largest one stored, and each writer reads
/// back at least what it wrote.
pub async fn concurrent_writers(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, CONCURRENT_WRITERS);
    let contended = check.key("contended");
    let (check, contended) = (&check, &contended);
    let writers = (0..WRITERS).map(|writer| async move {
        for i in 1..=WRITES_PER_WRITER {
            let value = i * WRITERS + writer;
            check.set(contended, &at(value)).await?;
            let read = check.get(contended).await?;
            if read.as_ref().is_none_or(|read| *read < at(value)) {
                return Err(CONCURRENT_WRITERS.fail(format!(
                    "writer {writer} stored {} but then read {read:?}: the checkpoint went backwards",
                    at(value)
                )));
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    });
    join_all(writers)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, RuleFailure>>()?;
    let largest = WRITES_PER_WRITER * WRITERS + (WRITERS - 1);
    check.expect(contended, Some(at(largest))).await
}

/// Rule `pending-batches`: a store that keeps pending batches (says so in
/// [`CheckpointStore::keeps_pending_batches`]) reads back exactly the last
/// position recorded for a key: `None` before any, whole records apart from
/// their sub-record 0, 56-digit sequence numbers intact, the last write
/// winning even when it is lower; keys are independent (application,
/// stream, shard); checkpoint writes leave the pending batch alone (one
/// after the checkpoint is still returned, one at the checkpoint may read
/// back or not) and pending writes leave the checkpoint alone.
///
/// The writes use a lease no lease record backs, which a store without one
/// (a single worker) just writes; that a store with leases refuses a stale
/// lease (`LeaseLost`, nothing written) needs its `LeaseStore` and is not
/// checked here.
///
/// Skipped by [`run_all`] when [`CheckpointStoreCapabilities::pending_batches`]
/// is off.
pub async fn pending_batches(store: &dyn CheckpointStore) -> RuleResult {
    let check = Check::new(store, PENDING_BATCHES);
    if !store.keeps_pending_batches() {
        return Err(PENDING_BATCHES.fail(
            "keeps_pending_batches() is false: a store that keeps none declares \
             CheckpointStoreCapabilities::pending_batches(false)",
        ));
    }
    // Round trip and last write wins.
    let key = check.key("pending");
    check.expect_pending(&key, None).await?;
    let seq_a = PENDING_BATCHES.sequence(KINESIS_SEQ_A)?;
    let seq_b = PENDING_BATCHES.sequence(KINESIS_SEQ_B)?;
    for end in [
        position(10u64, None),
        position(seq_a.clone(), Some(3)),
        position(seq_a.clone(), Some(0)),
        position(seq_a.clone(), None),
        position(seq_b, None),
        // Lower than the one before: still the last write, so it wins.
        position(7u64, Some(1)),
    ] {
        check.set_pending(&key, &end).await?;
        check.expect_pending(&key, Some(end)).await?;
    }
    // Independent keys.
    let (app, stream) = (check.application.as_str(), STREAM);
    let shard = "shardId-000000000007";
    let base = ShardKey::new(app, stream, shard);
    let others = [
        ShardKey::new(app, format!("{stream}-other"), shard),
        ShardKey::new(format!("{app}-other"), stream, shard),
        ShardKey::new(app, stream, "shardId-000000000008"),
    ];
    check.set_pending(&base, &position(100u64, None)).await?;
    for other in &others {
        check.expect_pending(other, None).await?;
    }
    for (i, other) in (1u64..).zip(&others) {
        check.set_pending(other, &position(100 + i, None)).await?;
    }
    check
        .expect_pending(&base, Some(position(100u64, None)))
        .await?;
    for (i, other) in (1u64..).zip(&others) {
        check
            .expect_pending(other, Some(position(100 + i, None)))
            .await?;
    }
    // Checkpoints and pending batches of one shard leave each other alone.
    let shared = check.key("pending-and-checkpoint");
    check.set(&shared, &at(10u64)).await?;
    check.set_pending(&shared, &position(20u64, None)).await?;
    check.expect(&shared, Some(at(10u64))).await?;
    check.set(&shared, &at(15u64)).await?;
    check
        .expect_pending(&shared, Some(position(20u64, None)))
        .await?;
    check.set(&shared, &at(20u64)).await?;
    // Stale now: the store may still return it, or nothing.
    let stale = check.pending(&shared).await?;
    if stale
        .as_ref()
        .is_some_and(|end| *end != position(20u64, None))
    {
        return Err(PENDING_BATCHES.fail(format!(
            "pending batch of {shared}: expected 20 or none after a checkpoint at 20, got {stale:?}"
        )));
    }
    check.set_pending(&shared, &position(30u64, None)).await?;
    check
        .expect_pending(&shared, Some(position(30u64, None)))
        .await?;
    check.expect(&shared, Some(at(20u64))).await
}

/// The stream of every key the suite writes (`independent-keys` adds
/// `-other`).
const STREAM: &str = "conformance-stream";

/// A store under one rule: its keys (under a fresh application name) and
/// calls whose failures name the rule.
struct Check<'a> {
    store: &'a dyn CheckpointStore,
    rule: Rule,
    application: String,
}

impl<'a> Check<'a> {
    fn new(store: &'a dyn CheckpointStore, rule: Rule) -> Self {
        Self {
            store,
            rule,
            application: format!("conformance-{}", unique_run_id()),
        }
    }

    fn key(&self, shard: &str) -> ShardKey {
        ShardKey::new(self.application.as_str(), STREAM, shard)
    }

    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>, RuleFailure> {
        let result = self.store.get(key).await;
        self.rule.call(&format!("get({key})"), result)
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> RuleResult {
        let result = self.store.set(key, checkpoint).await;
        self.rule.call(&format!("set({key}, {checkpoint})"), result)
    }

    async fn pending(&self, key: &ShardKey) -> Result<Option<Position>, RuleFailure> {
        let result = self.store.pending_batch(key).await;
        self.rule.call(&format!("pending_batch({key})"), result)
    }

    /// Records `end` with a lease no lease record backs (a single worker's).
    async fn set_pending(&self, key: &ShardKey, end: &Position) -> RuleResult {
        let lease = Lease::unfenced(key.shard_id.as_str(), "conformance-worker");
        let result = self.store.set_pending_batch(key, end, &lease).await;
        self.rule
            .call(&format!("set_pending_batch({key}, {end})"), result)
    }

    async fn expect_pending(&self, key: &ShardKey, expected: Option<Position>) -> RuleResult {
        let actual = self.pending(key).await?;
        self.rule
            .ensure_eq(&format!("pending batch of {key}"), actual, expected)
    }

    async fn expect(&self, key: &ShardKey, expected: Option<Checkpoint>) -> RuleResult {
        let actual = self.get(key).await?;
        self.rule
            .ensure_eq(&format!("checkpoint of {key}"), actual, expected)
    }
}

fn at(sequence: impl Into<SequenceNumber>) -> Checkpoint {
    Checkpoint::At(Position::new(sequence.into()))
}

fn position(sequence: impl Into<SequenceNumber>, sub_sequence: Option<u64>) -> Position {
    Position {
        sequence: sequence.into(),
        sub_sequence,
    }
}

fn at_sub(sequence: impl Into<SequenceNumber>, sub: u64) -> Checkpoint {
    Checkpoint::At(Position {
        sequence: sequence.into(),
        sub_sequence: Some(sub),
    })
}

#[cfg(test)]
mod tests {
    use kinesis_connectors_core::MemoryCheckpointStore;

    use super::*;

    #[test]
    fn big_constants_are_ordered_and_kinesis_sized() {
        let parse = |s| SequenceNumber::parse(s).unwrap();
        let (a, a1, b) = (
            parse(KINESIS_SEQ_A),
            parse(KINESIS_SEQ_A_PLUS_1),
            parse(KINESIS_SEQ_B),
        );
        assert!(a < a1 && a1 < b);
        assert_eq!(KINESIS_SEQ_A.len(), 56);
        assert!(parse(STRING_LARGER_THAN_SEQ_A) < a);
        assert!(STRING_LARGER_THAN_SEQ_A > KINESIS_SEQ_A);
    }

    #[tokio::test]
    async fn run_all_reports_every_rule_in_order() {
        let report = run_all(
            &MemoryCheckpointStore::new(),
            CheckpointStoreCapabilities::new(),
        )
        .await;
        assert!(report.is_success(), "{report}");
        assert_eq!(report.passed(), RULES);
    }

    #[tokio::test]
    async fn an_unsupported_rule_is_skipped_by_name() {
        let capabilities = CheckpointStoreCapabilities::default().sub_sequence_positions(false);
        let report = run_all(&MemoryCheckpointStore::new(), capabilities).await;
        assert_eq!(report.skipped_rules(), ["sub-sequence-positions"]);
        assert_eq!(report.passed().len(), RULES.len() - 1);
        assert!(
            report
                .to_string()
                .contains("sub_sequence_positions is false")
        );
        let capabilities = CheckpointStoreCapabilities::default().pending_batches(false);
        let report = run_all(&MemoryCheckpointStore::new(), capabilities).await;
        assert_eq!(report.skipped_rules(), ["pending-batches"]);
        assert!(report.to_string().contains("pending_batches is false"));
    }
}
