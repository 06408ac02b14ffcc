//! The shard-assignment seam: which worker processes which shard.
//!
//! One worker alone takes every shard ([`SingleWorker`]). Several workers
//! sharing a stream coordinate through leases kept in a shared store (the
//! DynamoDB and Redis backends): each lease has an owner, an expiry and a
//! counter bumped on every renewal or takeover. The counter is a fencing
//! token: checkpoints are written with
//! [`CheckpointStore::set_fenced`](crate::CheckpointStore::set_fenced), which
//! refuses the write once the counter moved on, so a worker that lost its
//! lease (paused, partitioned) can never overwrite a newer checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::debug;

use crate::checkpoint::{Checkpoint, CheckpointStore, ShardKey};
use crate::error::{Error, Result};
use crate::source::ShardInfo;

/// A worker's claim on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard this lease is for.
    pub shard_id: String,
    /// The worker holding it.
    pub owner: String,
    /// Bumped by the store on every renewal or takeover; the fencing token.
    pub counter: u64,
    /// When the lease lapses unless renewed; `None` for leases that never expire.
    pub expires_at: Option<SystemTime>,
}

impl Lease {
    /// A lease that is never contested, as held by a single worker.
    pub fn unfenced(shard_id: impl Into<String>, owner: impl Into<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            owner: owner.into(),
            counter: 0,
            expires_at: None,
        }
    }

    /// Whether this is an [`unfenced`](Self::unfenced) lease (counter 0):
    /// lease stores count from 1 when a worker takes a lease.
    pub fn is_unfenced(&self) -> bool {
        self.counter == 0
    }
}

/// Decides which shards this worker processes.
///
/// The stream consumer calls [`acquire`](Self::acquire) after every shard
/// discovery and every [`lease_scan_interval`](Self::lease_scan_interval)
/// between them (with the last listing), and [`release`](Self::release) when a shard
/// task ends or the consumer shuts down. A task of its own calls
/// [`renew`](Self::renew) every [`renew_interval`](Self::renew_interval) for
/// each held lease, concurrently, whatever discovery and the shards are
/// doing, shutdown included: a [`LeaseLost`](crate::Error::LeaseLost) error
/// stops that shard at once, without writing, and so does a lease this
/// worker could not renew for [`lease_expiry`](Self::lease_expiry), since
/// other workers may take it by then.
#[async_trait]
pub trait ShardAssigner: Send + Sync {
    /// This worker's name, the owner recorded in its leases.
    fn worker_id(&self) -> &str;

    /// Takes the leases this worker should process now, given every shard of
    /// the stream and the leases it already holds. Returns only new leases.
    async fn acquire(
        &self,
        stream: &str,
        shards: &[ShardInfo],
        held: &[Lease],
    ) -> Result<Vec<Lease>>;

    /// Extends a held lease; the returned lease carries the new counter and expiry.
    async fn renew(&self, lease: &Lease) -> Result<Lease>;

    /// Gives a lease up so another worker can take it at once.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// How often held leases must be renewed; `None` when they never expire.
    fn renew_interval(&self) -> Option<Duration>;

    /// How long a lease may go unrenewed before other workers take it; a
    /// worker stops a shard whose lease it could not renew for this long.
    /// `None` (the default) when leases never expire.
    fn lease_expiry(&self) -> Option<Duration> {
        None
    }

    /// How often [`acquire`](Self::acquire) runs between shard discoveries,
    /// with the last listing, so that expired leases are noticed sooner than
    /// the next `ListShards`; `None` (the default): only after discoveries.
    fn lease_scan_interval(&self) -> Option<Duration> {
        None
    }
}

/// The default assignment: this worker takes every shard, with no lease store.
///
/// ```
/// use kinesis_connectors_core::{ShardAssigner, SingleWorker};
/// let assigner = SingleWorker::new("worker-1");
/// assert_eq!(assigner.worker_id(), "worker-1");
/// assert!(assigner.renew_interval().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct SingleWorker {
    worker_id: String,
}

impl SingleWorker {
    /// A single worker named `worker_id`.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
        }
    }
}

impl Default for SingleWorker {
    fn default() -> Self {
        Self::new("single-worker")
    }
}

#[async_trait]
impl ShardAssigner for SingleWorker {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    async fn acquire(
        &self,
        _stream: &str,
        shards: &[ShardInfo],
        held: &[Lease],
    ) -> Result<Vec<Lease>> {
        let held: HashSet<&str> = held.iter().map(|l| l.shard_id.as_str()).collect();
        Ok(shards
            .iter()
            .filter(|s| !held.contains(s.shard_id.as_str()))
            .map(|s| Lease::unfenced(s.shard_id.clone(), self.worker_id.clone()))
            .collect())
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        Ok(lease.clone())
    }

    async fn release(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }

    fn renew_interval(&self) -> Option<Duration> {
        None
    }
}

/// A lease as a shared lease store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLease {
    /// The shard.
    pub shard_id: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// Bumped on every take, renewal and release.
    pub counter: u64,
    /// The shard's checkpoint, if any (SHARD_END leases are not balanced).
    pub checkpoint: Option<Checkpoint>,
    /// The shard's parents, recorded when the lease was created.
    pub parent_shard_ids: Vec<String>,
}

/// The atomic operations a shared store (DynamoDB, Redis) offers so that
/// several workers can split a stream's shards between them.
///
/// Every write is conditional: `take_lease` only if the counter is still the
/// one the caller saw, `renew_lease`/`release_lease` and
/// [`CheckpointStore::set_fenced`] only while owner and counter match the
/// caller's lease. A failed condition is [`Error::LeaseLost`] (for renewals
/// and fenced writes) or `Ok(None)` (for takes). Third-party stores check
/// themselves with the testkit's `lease_conformance`.
#[async_trait]
pub trait LeaseStore: CheckpointStore {
    /// Every lease of `stream` for `application`.
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>>;

    /// Creates a free lease (no owner, counter 0) unless one exists.
    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()>;

    /// Gives the lease to `owner` if its counter is still `expected_counter`;
    /// `Ok(None)` if another worker changed it first.
    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>>;

    /// Bumps the counter of a lease `lease.owner` still holds with `lease.counter`.
    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease>;

    /// Frees a lease `lease.owner` still holds; `Ok` if it was already gone.
    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()>;
}

/// The lease protocol on top of a [`LeaseStore`]: the [`ShardAssigner`] for
/// several workers sharing a stream.
///
/// A lease counts as expired when it has no owner, or when its counter has
/// not moved for `failover_time` as seen by this worker's own clock (so
/// clocks need not agree) while this worker could read the store: after a
/// failed listing, or a pause in listing as long as `failover_time`, what
/// this worker saw before says nothing (nobody could renew during an
/// outage), and every lease's clock starts again. Each worker aims for
/// `ceil(shards / workers)` leases: it takes expired leases first (parents
/// before children, never one it holds itself), and only when none is free
/// takes at most one lease per round from the most loaded worker if that
/// one holds more than the target.
///
/// The stream consumer lists leases every [`scan_interval`](Self::scan_interval)
/// (default a third of `failover_time`), so a killed worker's shards are
/// taken by another within `failover_time + 2 × scan_interval` of its
/// last renewal (16.7 s with the defaults), whatever the discovery interval.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use kinesis_connectors_core::{LeaseCoordinator, MemoryCheckpointStore, ShardAssigner};
/// let store = Arc::new(MemoryCheckpointStore::new());
/// let leases = LeaseCoordinator::new(store, "my-app", "orders", "worker-1")
///     .failover_time(Duration::from_secs(12));
/// assert_eq!(leases.renew_interval(), Some(Duration::from_secs(4)));
/// assert_eq!(leases.lease_scan_interval(), Some(Duration::from_secs(4)));
/// assert_eq!(leases.lease_expiry(), Some(Duration::from_secs(12)));
/// ```
pub struct LeaseCoordinator {
    store: Arc<dyn LeaseStore>,
    application: String,
    stream: String,
    worker_id: String,
    failover_time: Duration,
    scan_interval: Option<Duration>,
    observed: Mutex<Observations>,
}

/// What this worker saw of the leases in the store.
#[derive(Default)]
struct Observations {
    /// Each listed lease's counter and owner, and since when (only leases
    /// of the last listing are kept).
    leases: HashMap<String, Observation>,
    /// When the store was last listed.
    listed_at: Option<Instant>,
    /// A listing failed since then.
    listing_failed: bool,
}

/// A lease's counter and owner as this worker last saw them.
struct Observation {
    counter: u64,
    owner: Option<String>,
    since: Instant,
}

impl std::fmt::Debug for LeaseCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseCoordinator")
            .field("application", &self.application)
            .field("stream", &self.stream)
            .field("worker_id", &self.worker_id)
            .field("failover_time", &self.failover_time)
            .finish_non_exhaustive()
    }
}

impl LeaseCoordinator {
    /// Leases of `stream` for `application` (the same names the consumer
    /// uses) in `store`, held as `worker_id` (unique per worker process).
    pub fn new(
        store: Arc<dyn LeaseStore>,
        application: impl Into<String>,
        stream: impl Into<String>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            store,
            application: application.into(),
            stream: stream.into(),
            worker_id: worker_id.into(),
            failover_time: Duration::from_secs(10),
            scan_interval: None,
            observed: Mutex::new(Observations::default()),
        }
    }

    /// How long a lease may go unrenewed before other workers take it
    /// (default 10 s). Leases are renewed every third of it.
    pub fn failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = failover_time;
        self
    }

    /// How often leases are listed to find expired ones (default a third of
    /// `failover_time`, at most half of it). Each listing reads every lease
    /// of the stream (a DynamoDB scan), so a larger value costs less and
    /// lengthens failover: `failover_time + 2 × scan_interval`.
    pub fn scan_interval(mut self, every: Duration) -> Self {
        self.scan_interval = Some(every);
        self
    }

    /// The store's leases, noting a failure (what was seen before it no
    /// longer tells expiry).
    async fn list(&self) -> Result<Vec<StoredLease>> {
        let listed = self
            .store
            .list_leases(&self.application, &self.stream)
            .await;
        if listed.is_err() {
            self.observations().listing_failed = true;
        }
        listed
    }

    fn observations(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, shard_id: &str) -> ShardKey {
        ShardKey::new(&*self.application, &*self.stream, shard_id)
    }

    /// Records what the store says now; returns the shards whose leases expired.
    fn observe(&self, leases: &[StoredLease]) -> HashSet<String> {
        let now = Instant::now();
        let mut observed = self.observations();
        // Counters that did not move while this worker could not see the
        // store (it was down, or this worker did not look) may not have moved
        // because nobody could renew: their clocks start again now.
        let blind = observed.listing_failed
            || observed
                .listed_at
                .is_none_or(|at| now.duration_since(at) >= self.failover_time);
        if blind && !observed.leases.is_empty() {
            debug!("leases were not watched for a while; their expiry clocks start again");
        }
        observed.listed_at = Some(now);
        observed.listing_failed = false;
        let listed: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
        observed
            .leases
            .retain(|shard_id, _| listed.contains(shard_id.as_str()));
        let mut expired = HashSet::new();
        for lease in leases {
            let entry = observed
                .leases
                .entry(lease.shard_id.clone())
                .or_insert_with(|| Observation {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    since: now,
                });
            if blind || entry.counter != lease.counter || entry.owner != lease.owner {
                *entry = Observation {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    since: now,
                };
            }
            if lease.owner.is_none() || now.duration_since(entry.since) >= self.failover_time {
                expired.insert(lease.shard_id.clone());
            }
        }
        expired
    }
}

#[async_trait]
impl ShardAssigner for LeaseCoordinator {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    async fn acquire(
        &self,
        stream: &str,
        shards: &[ShardInfo],
        held: &[Lease],
    ) -> Result<Vec<Lease>> {
        if stream != self.stream {
            return Err(Error::Config(format!(
                "lease coordinator for stream {:?} used for stream {stream:?}",
                self.stream
            )));
        }
        let mut leases = self.list().await?;
        let missing: Vec<&ShardInfo> = shards
            .iter()
            .filter(|s| leases.iter().all(|l| l.shard_id != s.shard_id))
            .collect();
        if !missing.is_empty() {
            for shard in missing {
                self.store
                    .create_lease(&self.key(&shard.shard_id), &shard.parents())
                    .await?;
            }
            leases = self.list().await?;
        }
        let known: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
        let expired = self.observe(&leases);
        let wanted: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let held: HashSet<&str> = held.iter().map(|l| l.shard_id.as_str()).collect();
        let active: Vec<&StoredLease> = leases
            .iter()
            .filter(|l| wanted.contains(l.shard_id.as_str()))
            .filter(|l| !l.checkpoint.as_ref().is_some_and(Checkpoint::is_shard_end))
            .collect();

        let mut load: HashMap<&str, Vec<&StoredLease>> = HashMap::new();
        load.entry(self.worker_id.as_str()).or_default();
        for lease in &active {
            if let (Some(owner), false) = (&lease.owner, expired.contains(&lease.shard_id)) {
                load.entry(owner.as_str()).or_default().push(lease);
            }
        }
        let target = active.len().div_ceil(load.len());
        let mine = load.get(self.worker_id.as_str()).map_or(0, Vec::len);

        // Leases this worker holds in the store but not in memory (a restart
        // under the same worker id) are taken back first.
        let mut to_take: Vec<&StoredLease> = load
            .get(self.worker_id.as_str())
            .map(|own| {
                own.iter()
                    .filter(|l| !held.contains(l.shard_id.as_str()))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if mine < target {
            let finished: HashSet<&str> = leases
                .iter()
                .filter(|l| l.checkpoint.as_ref().is_some_and(Checkpoint::is_shard_end))
                .map(|l| l.shard_id.as_str())
                .collect();
            // Never one this worker holds: its own renewals may have failed
            // for a while, but taking it again would stop its own shard.
            let mut free: Vec<&StoredLease> = active
                .iter()
                .filter(|l| expired.contains(&l.shard_id) && !held.contains(l.shard_id.as_str()))
                .copied()
                .collect();
            // Parents first: shards whose parents are done or unknown.
            free.sort_by_key(|l| {
                l.parent_shard_ids
                    .iter()
                    .any(|p| known.contains(p.as_str()) && !finished.contains(p.as_str()))
            });
            let needed = target - mine;
            if free.is_empty() {
                let busiest = load
                    .iter()
                    .filter(|(owner, _)| **owner != self.worker_id.as_str())
                    .max_by_key(|(owner, leases)| (leases.len(), **owner));
                if let Some((owner, leases)) = busiest
                    && leases.len() > target
                    && let Some(victim) = leases.iter().max_by_key(|l| &l.shard_id)
                {
                    debug!(from = %owner, shard = %victim.shard_id, "taking a lease to balance");
                    to_take.push(victim);
                }
            } else {
                to_take.extend(free.into_iter().take(needed));
            }
        }

        let mut taken = Vec::new();
        for lease in to_take {
            let key = self.key(&lease.shard_id);
            if let Some(lease) = self
                .store
                .take_lease(&key, lease.counter, &self.worker_id)
                .await?
            {
                taken.push(lease);
            }
        }
        Ok(taken)
    }

    /// Renews `lease`. A refused renewal (`LeaseLost`) or a failed one
    /// (timeout, network) may still have been applied: a request retried
    /// after a lost response, a reply that came too late. Before saying
    /// lost, the lease is read back: held by this worker with the counter
    /// one past ours, it was our renewal, and it is renewed again from there
    /// (as the KCL does).
    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let key = self.key(&lease.shard_id);
        let error = match self.store.renew_lease(&key, lease).await {
            Ok(renewed) => return Ok(renewed),
            Err(error) if matches!(error, Error::LeaseLost { .. }) || error.is_retryable() => error,
            Err(error) => return Err(error),
        };
        let Ok(leases) = self.list().await else {
            return Err(error);
        };
        let ours = leases.iter().any(|stored| {
            stored.shard_id == lease.shard_id
                && stored.owner.as_deref() == Some(self.worker_id.as_str())
                && stored.counter == lease.counter + 1
        });
        if !ours {
            return Err(error);
        }
        debug!(shard = %lease.shard_id, %error, "a renewal that looked failed was applied; renewing from its counter");
        let applied = Lease {
            counter: lease.counter + 1,
            ..lease.clone()
        };
        self.store.renew_lease(&key, &applied).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.store
            .release_lease(&self.key(&lease.shard_id), lease)
            .await
    }

    fn renew_interval(&self) -> Option<Duration> {
        Some(self.failover_time / 3)
    }

    fn lease_expiry(&self) -> Option<Duration> {
        Some(self.failover_time)
    }

    fn lease_scan_interval(&self) -> Option<Duration> {
        let every = self.scan_interval.unwrap_or(self.failover_time / 3);
        Some(every.min(self.failover_time / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCheckpointStore;

    #[test]
    fn observations_keep_only_the_leases_of_the_last_listing() {
        let coordinator =
            LeaseCoordinator::new(Arc::new(MemoryCheckpointStore::new()), "app", "s", "w");
        let lease = |shard: &str| StoredLease {
            shard_id: shard.to_owned(),
            owner: Some("other".into()),
            counter: 1,
            checkpoint: None,
            parent_shard_ids: Vec::new(),
        };
        coordinator.observe(&[lease("a"), lease("b"), lease("c")]);
        coordinator.observe(&[lease("c")]);
        assert_eq!(coordinator.observations().leases.len(), 1);
    }

    #[tokio::test]
    async fn single_worker_takes_every_shard_once() {
        let assigner = SingleWorker::new("w");
        let shards = vec![ShardInfo::open("a"), ShardInfo::open("b")];
        let first = assigner.acquire("s", &shards, &[]).await.unwrap();
        assert_eq!(first.len(), 2);
        let again = assigner.acquire("s", &shards, &first[..1]).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].shard_id, "b");
        assert_eq!(again[0].owner, "w");
    }
}
