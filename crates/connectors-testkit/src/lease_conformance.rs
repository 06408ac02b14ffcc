//! The lease conformance suite: the atomic rules every [`LeaseStore`] must
//! follow so that several workers can share a stream safely, one function
//! per rule, and [`run_all`].
//!
//! Every rule sets up its own leases under a fresh application name, so
//! rules can run alone, in any order, against a shared store.
//!
//! ```
//! use std::sync::Arc;
//! use kinesis_connectors_core::MemoryCheckpointStore;
//! use kinesis_connectors_testkit::{lease_conformance, LeaseCapabilities};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryCheckpointStore::new());
//! lease_conformance::take_over(&*store).await.unwrap();
//! let report = lease_conformance::run_all(store, LeaseCapabilities::new()).await;
//! assert!(report.is_success(), "{report}");
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use kinesis_connectors_core::{
    Checkpoint, Error, Lease, LeaseCoordinator, LeaseStore, Position, ShardAssigner, ShardInfo,
    ShardKey, StoredLease,
};

use crate::conformance::{ConformanceReport, Rule, RuleFailure, RuleResult, unique_run_id};

const SUITE: &str = "lease store";

const CREATE: Rule = rule("create");
const ACQUIRE: Rule = rule("acquire");
const RENEW: Rule = rule("renew");
const FENCED_CHECKPOINT: Rule = rule("fenced-checkpoint");
const FENCED_PENDING_BATCH: Rule = rule("fenced-pending-batch");
const TAKE_OVER: Rule = rule("take-over");
const RELEASE: Rule = rule("release");
const EXPIRE: Rule = rule("expire");

const fn rule(name: &'static str) -> Rule {
    Rule { suite: SUITE, name }
}

/// Every rule of the suite, in the order [`run_all`] runs them, so a test
/// can check that each one was reported.
pub const RULES: [&str; 8] = [
    CREATE.name,
    ACQUIRE.name,
    RENEW.name,
    FENCED_CHECKPOINT.name,
    FENCED_PENDING_BATCH.name,
    TAKE_OVER.name,
    RELEASE.name,
    EXPIRE.name,
];

/// The stream and shards of the rules (`expire` uses its own stream).
const STREAM: &str = "stream";
const SHARD: &str = "shard-0";
const CHILD: &str = "shard-1";
const EXPIRY_STREAM: &str = "expiry-stream";

/// The failover time of the `expire` rule's coordinator.
const FAILOVER: Duration = Duration::from_millis(300);

/// What a lease store supports, so [`run_all`] skips (and reports as
/// skipped) the rules a backend cannot follow instead of failing them.
///
/// [`new`](Self::new) (also the `Default`) declares everything supported:
/// turn off only what the store really lacks.
///
/// ```
/// use kinesis_connectors_testkit::LeaseCapabilities;
/// let capabilities = LeaseCapabilities::new().release(false);
/// assert!(!capabilities.release);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseCapabilities {
    /// `release_lease` frees a held lease at once (rule `release`), so a
    /// graceful shutdown hands shards over on the next discovery round.
    /// Without it, released shards wait for the failover time.
    pub release: bool,
}

impl LeaseCapabilities {
    /// Everything supported: every rule runs.
    pub fn new() -> Self {
        Self { release: true }
    }

    /// Whether `release_lease` frees a held lease at once.
    pub fn release(mut self, supported: bool) -> Self {
        self.release = supported;
        self
    }
}

impl Default for LeaseCapabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every rule against `store`, the unsupported ones reported as
/// skipped, and goes on after a broken rule: the report names them all.
/// Takes an `Arc` because the `expire` rule's coordinator shares the store.
pub async fn run_all(
    store: Arc<dyn LeaseStore>,
    capabilities: LeaseCapabilities,
) -> ConformanceReport {
    let mut report = ConformanceReport::new(SUITE);
    report.run(CREATE.name, create(&*store)).await;
    report.run(ACQUIRE.name, acquire(&*store)).await;
    report.run(RENEW.name, renew(&*store)).await;
    report
        .run(FENCED_CHECKPOINT.name, fenced_checkpoint(&*store))
        .await;
    report
        .run_if(
            store.keeps_pending_batches(),
            FENCED_PENDING_BATCH.name,
            "the store keeps no pending batches (keeps_pending_batches() is false)",
            fenced_pending_batch(&*store),
        )
        .await;
    report.run(TAKE_OVER.name, take_over(&*store)).await;
    report
        .run_if(
            capabilities.release,
            RELEASE.name,
            "release_lease does not free a lease (LeaseCapabilities::release is false)",
            release(&*store),
        )
        .await;
    report.run(EXPIRE.name, expire(store)).await;
    report
}

/// Rule `create`: a new lease is free and keeps its parents; creating it
/// twice changes nothing.
pub async fn create(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, CREATE);
    let (key, child) = (leases.key(SHARD), leases.key(CHILD));
    CREATE.call("create_lease", store.create_lease(&key, &[]).await)?;
    CREATE.call(
        "create_lease",
        store.create_lease(&child, &[SHARD.to_owned()]).await,
    )?;
    CREATE.call("create_lease (again)", store.create_lease(&key, &[]).await)?;
    let listed = leases.list().await?;
    let created = find(CREATE, &listed, SHARD)?;
    if created.owner.is_some() {
        return Err(CREATE.fail(format!("a new lease must be free: {created:?}")));
    }
    match listed.iter().find(|l| l.shard_id == CHILD) {
        Some(l) if l.parent_shard_ids == [SHARD.to_owned()] => Ok(()),
        other => Err(CREATE.fail(format!("parents not kept: {other:?}"))),
    }
}

/// Rule `acquire`: taking a free lease with the counter seen succeeds,
/// sets the owner and bumps the counter; a second take with the same (now
/// stale) counter fails.
pub async fn acquire(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, ACQUIRE);
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    if mine.owner != "worker-a" || mine.counter <= created.counter {
        return Err(ACQUIRE.fail(format!(
            "take must set owner and bump the counter: {mine:?}"
        )));
    }
    let stale = ACQUIRE.call(
        "take_lease (stale)",
        store
            .take_lease(&leases.key(SHARD), created.counter, "worker-b")
            .await,
    )?;
    match stale {
        None => Ok(()),
        Some(_) => Err(ACQUIRE.fail("a take with a stale counter succeeded")),
    }
}

/// Rule `renew`: renewing keeps the owner and bumps the counter; renewing
/// with the old counter fails with `LeaseLost`.
pub async fn renew(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, RENEW);
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    let renewed = leases.renew(&mine).await?;
    if renewed.counter <= mine.counter || renewed.owner != "worker-a" {
        return Err(RENEW.fail(format!(
            "renew must keep the owner and bump the counter: {renewed:?}"
        )));
    }
    expect_lost(
        RENEW,
        "renew_lease with a stale counter",
        store.renew_lease(&leases.key(SHARD), &mine).await,
    )
}

/// Rule `fenced-checkpoint`: `set_fenced` writes while the lease is held
/// (after a renewal too), is refused with `LeaseLost` once another worker
/// took the lease over and then changes nothing, works for the new owner,
/// and `list_leases` shows the new owner and checkpoint.
pub async fn fenced_checkpoint(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, FENCED_CHECKPOINT);
    let key = leases.key(SHARD);
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    let renewed = leases.renew(&mine).await?;
    FENCED_CHECKPOINT.call(
        "set_fenced",
        store.set_fenced(&key, &at(10), &renewed).await,
    )?;
    if FENCED_CHECKPOINT.call("get", store.get(&key).await)? != Some(at(10)) {
        return Err(FENCED_CHECKPOINT.fail("a fenced write by the holder was not stored"));
    }
    let theirs = leases.take_over("worker-b").await?;
    expect_lost(
        FENCED_CHECKPOINT,
        "set_fenced by the old owner",
        store.set_fenced(&key, &at(20), &renewed).await,
    )?;
    if FENCED_CHECKPOINT.call("get", store.get(&key).await)? != Some(at(10)) {
        return Err(
            FENCED_CHECKPOINT.fail("a fenced write after losing the lease changed the checkpoint")
        );
    }
    FENCED_CHECKPOINT.call("set_fenced", store.set_fenced(&key, &at(20), &theirs).await)?;
    let listed = leases.list().await?;
    match listed.iter().find(|l| l.shard_id == SHARD) {
        Some(l) if l.checkpoint == Some(at(20)) && l.owner.as_deref() == Some("worker-b") => Ok(()),
        other => Err(FENCED_CHECKPOINT.fail(format!(
            "list_leases must show owner and checkpoint: {other:?}"
        ))),
    }
}

/// Rule `fenced-pending-batch`: a pending batch (replay-stable batches) is
/// fenced like a checkpoint: the holder's write is stored; after another
/// worker took the lease, the old owner's write fails with `LeaseLost` and
/// stores nothing; the new owner's goes through.
///
/// Skipped by [`run_all`] for a store whose `keeps_pending_batches()` is false.
pub async fn fenced_pending_batch(store: &dyn LeaseStore) -> RuleResult {
    let rule = FENCED_PENDING_BATCH;
    let leases = Leases::new(store, rule);
    let key = leases.key(SHARD);
    let end = |n: u64| Position::new(n.into());
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    rule.call(
        "set_pending_batch",
        store.set_pending_batch(&key, &end(10), &mine).await,
    )?;
    if rule.call("pending_batch", store.pending_batch(&key).await)? != Some(end(10)) {
        return Err(rule.fail("a pending batch written by the holder was not stored"));
    }
    let theirs = leases.take_over("worker-b").await?;
    expect_lost(
        rule,
        "set_pending_batch by the old owner",
        store.set_pending_batch(&key, &end(20), &mine).await,
    )?;
    if rule.call("pending_batch", store.pending_batch(&key).await)? != Some(end(10)) {
        return Err(
            rule.fail("a pending batch written after losing the lease changed the stored one")
        );
    }
    rule.call(
        "set_pending_batch",
        store.set_pending_batch(&key, &end(30), &theirs).await,
    )?;
    match rule.call("pending_batch", store.pending_batch(&key).await)? {
        Some(stored) if stored == end(30) => Ok(()),
        other => Err(rule.fail(format!(
            "the new owner's pending batch was not stored: {other:?}"
        ))),
    }
}

/// Rule `take-over`: another worker takes a held (renewed) lease with the
/// counter it saw; the old owner's renewal then fails with `LeaseLost`.
pub async fn take_over(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, TAKE_OVER);
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    let renewed = leases.renew(&mine).await?;
    leases.take_over("worker-b").await?;
    expect_lost(
        TAKE_OVER,
        "renew_lease by the old owner",
        store.renew_lease(&leases.key(SHARD), &renewed).await,
    )
}

/// Rule `release`: releasing a lost lease is a no-op (`Ok`); the holder's
/// release frees the lease, and a fenced write with the released lease
/// fails with `LeaseLost`.
///
/// Skipped by [`run_all`] when [`LeaseCapabilities::release`] is off.
pub async fn release(store: &dyn LeaseStore) -> RuleResult {
    let leases = Leases::new(store, RELEASE);
    let key = leases.key(SHARD);
    let created = leases.created().await?;
    let mine = leases.take(created.counter, "worker-a").await?;
    let theirs = leases.take_over("worker-b").await?;
    RELEASE.call(
        "release_lease (lost)",
        store.release_lease(&key, &mine).await,
    )?;
    RELEASE.call("release_lease", store.release_lease(&key, &theirs).await)?;
    let listed = leases.list().await?;
    match listed.iter().find(|l| l.shard_id == SHARD) {
        Some(l) if l.owner.is_none() => {}
        other => {
            return Err(RELEASE.fail(format!("a released lease must be free: {other:?}")));
        }
    }
    expect_lost(
        RELEASE,
        "set_fenced after release",
        store.set_fenced(&key, &at(30), &theirs).await,
    )
}

/// Rule `expire`: a [`LeaseCoordinator`] takes a lease whose owner stopped
/// renewing once the failover time (300 ms) has passed on its own clock,
/// and not before; the abandoned owner's fenced write then fails with
/// `LeaseLost`. Sleeps in tokio time, so paused-time tests run it at once.
pub async fn expire(store: Arc<dyn LeaseStore>) -> RuleResult {
    let application = fresh_application();
    let key = ShardKey::new(&*application, EXPIRY_STREAM, SHARD);
    EXPIRE.call("create_lease", store.create_lease(&key, &[]).await)?;
    let Some(abandoned) = EXPIRE.call("take_lease", store.take_lease(&key, 0, "gone").await)?
    else {
        return Err(EXPIRE.fail("taking a new lease failed"));
    };
    let coordinator =
        LeaseCoordinator::new(store.clone(), &*application, EXPIRY_STREAM, "survivor")
            .failover_time(FAILOVER);
    let shards = [ShardInfo::open(SHARD)];
    // Leases are listed a few times per failover time, as the stream
    // consumer does: expiry is only judged while the store is watched.
    let started = tokio::time::Instant::now();
    let late = loop {
        let taken = EXPIRE.call(
            "acquire",
            coordinator.acquire(EXPIRY_STREAM, &shards, &[]).await,
        )?;
        if !taken.is_empty() {
            break taken;
        }
        if started.elapsed() > FAILOVER * 3 {
            return Err(EXPIRE.fail(format!(
                "an abandoned lease was not taken within 3 × the failover time ({FAILOVER:?})"
            )));
        }
        tokio::time::sleep(FAILOVER / 4).await;
    };
    if started.elapsed() < FAILOVER {
        return Err(EXPIRE.fail(format!(
            "a lease was taken {:?} after it was first seen, before its failover time ({FAILOVER:?})",
            started.elapsed()
        )));
    }
    if late.len() != 1 || late[0].owner != "survivor" {
        return Err(EXPIRE.fail(format!(
            "an abandoned lease was taken wrongly after failover: {late:?}"
        )));
    }
    expect_lost(
        EXPIRE,
        "set_fenced by the abandoned owner",
        store.set_fenced(&key, &at(1), &abandoned).await,
    )
}

fn fresh_application() -> String {
    format!("lease-conformance-{}", unique_run_id())
}

fn at(n: u64) -> Checkpoint {
    Checkpoint::At(Position::new(n.into()))
}

/// `Ok` if `result` is `Error::LeaseLost`.
fn expect_lost<T: std::fmt::Debug>(
    rule: Rule,
    call: &str,
    result: kinesis_connectors_core::Result<T>,
) -> RuleResult {
    match result {
        Err(Error::LeaseLost { .. }) => Ok(()),
        other => Err(rule.fail(format!("{call} should fail with LeaseLost, got {other:?}"))),
    }
}

/// The lease named `shard` in `listed`.
fn find<'l>(
    rule: Rule,
    listed: &'l [StoredLease],
    shard: &str,
) -> Result<&'l StoredLease, RuleFailure> {
    listed
        .iter()
        .find(|l| l.shard_id == shard)
        .ok_or_else(|| rule.fail(format!("lease {shard} missing from {listed:?}")))
}

/// One rule's leases: a fresh application, the setup steps every rule
/// shares, and failures that name the rule.
struct Leases<'a> {
    store: &'a dyn LeaseStore,
    rule: Rule,
    application: String,
}

impl<'a> Leases<'a> {
    fn new(store: &'a dyn LeaseStore, rule: Rule) -> Self {
        Self {
            store,
            rule,
            application: fresh_application(),
        }
    }

    fn key(&self, shard: &str) -> ShardKey {
        ShardKey::new(&*self.application, STREAM, shard)
    }

    async fn list(&self) -> Result<Vec<StoredLease>, RuleFailure> {
        self.rule.call(
            "list_leases",
            self.store.list_leases(&self.application, STREAM).await,
        )
    }

    /// Creates the lease of [`SHARD`] and returns it as listed.
    async fn created(&self) -> Result<StoredLease, RuleFailure> {
        self.rule.call(
            "create_lease",
            self.store.create_lease(&self.key(SHARD), &[]).await,
        )?;
        let listed = self.list().await?;
        find(self.rule, &listed, SHARD).cloned()
    }

    /// Takes the lease of [`SHARD`] for `owner` with `counter`, which must work.
    async fn take(&self, counter: u64, owner: &str) -> Result<Lease, RuleFailure> {
        let taken = self.rule.call(
            "take_lease",
            self.store
                .take_lease(&self.key(SHARD), counter, owner)
                .await,
        )?;
        taken.ok_or_else(|| {
            self.rule.fail(format!(
                "{owner} taking the lease with its current counter {counter} failed"
            ))
        })
    }

    /// Another worker, `owner`, takes the (held) lease of [`SHARD`] with the
    /// counter it lists.
    async fn take_over(&self, owner: &str) -> Result<Lease, RuleFailure> {
        let listed = self.list().await?;
        let counter = find(self.rule, &listed, SHARD)?.counter;
        self.take(counter, owner).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, RuleFailure> {
        self.rule.call(
            "renew_lease",
            self.store.renew_lease(&self.key(SHARD), lease).await,
        )
    }
}

#[cfg(test)]
mod tests {
    use kinesis_connectors_core::MemoryCheckpointStore;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn run_all_reports_every_rule_in_order() {
        let report = run_all(
            Arc::new(MemoryCheckpointStore::new()),
            LeaseCapabilities::new(),
        )
        .await;
        assert!(report.is_success(), "{report}");
        assert_eq!(report.passed(), RULES);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsupported_rule_is_skipped_by_name() {
        let capabilities = LeaseCapabilities::default().release(false);
        let report = run_all(Arc::new(MemoryCheckpointStore::new()), capabilities).await;
        assert_eq!(report.skipped_rules(), ["release"]);
        assert_eq!(report.passed().len(), RULES.len() - 1);
    }
}
