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

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::Result;
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
}

/// Decides which shards this worker processes.
///
/// The stream consumer calls [`acquire`](Self::acquire) after every shard
/// discovery, [`renew`](Self::renew) every [`renew_interval`](Self::renew_interval)
/// for each lease it holds (a [`LeaseLost`](crate::Error::LeaseLost) error
/// stops that shard at once, without writing), and [`release`](Self::release)
/// when a shard task ends or the consumer shuts down.
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

#[cfg(test)]
mod tests {
    use super::*;

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
