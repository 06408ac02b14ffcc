//! Lease renewal on its own schedule.
//!
//! Renewals run in a task of their own, every lease concurrently, so that
//! neither a slow `ListShards`, a slow lease listing, a shard busy writing a
//! checkpoint nor a long graceful shutdown delays them: a lease renewed late
//! is a lease another worker takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::error::Error;
use crate::lease::ShardAssigner;
use crate::shard::LeaseHandle;
use crate::timeout::within;

/// Renewals in flight at once: enough for a worker's leases to be renewed
/// well within one interval, few enough not to flood the store.
const CONCURRENT_RENEWALS: usize = 64;

/// The leases this worker holds, shared between the stream consumer (which
/// adds and removes them) and the renewal task.
#[derive(Clone, Default)]
pub(crate) struct HeldLeases {
    leases: Arc<Mutex<HashMap<String, Held>>>,
}

/// A held lease and when it was last known good.
struct Held {
    handle: LeaseHandle,
    /// When the last successful renewal (or the take) was sent.
    renewed_at: Instant,
}

impl HeldLeases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts renewing `handle`, a lease just taken.
    pub(crate) fn hold(&self, shard_id: &str, handle: &LeaseHandle) {
        self.lock().insert(
            shard_id.to_owned(),
            Held {
                handle: handle.clone(),
                renewed_at: Instant::now(),
            },
        );
    }

    /// Stops renewing the lease of `shard_id` (released, lost or finished).
    pub(crate) fn forget(&self, shard_id: &str) {
        self.lock().remove(shard_id);
    }

    /// How many leases are renewed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn due(&self) -> Vec<(String, LeaseHandle, Instant)> {
        self.lock()
            .iter()
            .filter(|(_, held)| !held.handle.is_lost())
            .map(|(shard_id, held)| (shard_id.clone(), held.handle.clone(), held.renewed_at))
            .collect()
    }

    fn renewed(&self, shard_id: &str, handle: &LeaseHandle, at: Instant) {
        if let Some(held) = self.lock().get_mut(shard_id)
            && held.handle.same_lease(handle)
        {
            held.renewed_at = at;
        }
    }
}

/// The renewal task of one stream consumer; stopped by [`stop`](Self::stop).
pub(crate) struct Renewals {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Renewals {
    /// Starts renewing `held` every `assigner.renew_interval()`; renews
    /// nothing for assigners whose leases never expire.
    pub(crate) fn start(assigner: Arc<dyn ShardAssigner>, held: HeldLeases) -> Self {
        let stop = CancellationToken::new();
        let task = assigner.renew_interval().map(|every| {
            let renewer = Renewer {
                expires_after: assigner.lease_expiry(),
                assigner,
                held,
                every,
            };
            tokio::spawn(renewer.run(stop.clone()).in_current_span())
        });
        Self { stop, task }
    }

    /// Stops renewing (after the leases were released) and waits for the task.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            warn!(%error, "the lease renewal task panicked");
        }
    }
}

/// A consumer dropped without shutting down (its task aborted, the process
/// going away) renews nothing more: its leases expire and move on.
impl Drop for Renewals {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

struct Renewer {
    assigner: Arc<dyn ShardAssigner>,
    held: HeldLeases,
    every: Duration,
    expires_after: Option<Duration>,
}

impl Renewer {
    async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(Instant::now() + self.every, self.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let round = futures::stream::iter(self.held.due())
                .for_each_concurrent(CONCURRENT_RENEWALS, |(shard_id, handle, renewed_at)| {
                    self.renew(shard_id, handle, renewed_at)
                });
            tokio::select! {
                () = stop.cancelled() => return,
                () = round => {}
            }
        }
    }

    /// Renews one lease, within one interval (a later renewal is no use);
    /// marks it lost when the store says so, or when it could not be renewed
    /// for the failover time (another worker may hold it by now).
    async fn renew(&self, shard_id: String, handle: LeaseHandle, renewed_at: Instant) {
        let sent = Instant::now();
        let renewal = async {
            let mut lease = handle.lock().await;
            let renewed = self.assigner.renew(&lease).await?;
            *lease = renewed;
            Ok(())
        };
        let outcome = within(self.every, renewal, |after| {
            Error::checkpoint_retryable(format!("renewing a lease did not finish within {after:?}"))
        })
        .await;
        match outcome {
            Ok(()) => self.held.renewed(&shard_id, &handle, sent),
            Err(Error::LeaseLost { owner, .. }) => {
                info!(shard = %shard_id, ?owner, "lease taken by another worker");
                handle.mark_lost();
            }
            Err(error) => match self.expires_after {
                Some(expiry) if sent.duration_since(renewed_at) >= expiry => {
                    warn!(
                        shard = %shard_id,
                        %error,
                        unrenewed = ?sent.duration_since(renewed_at),
                        "lease not renewed for the failover time; stopping the shard, another worker may take it"
                    );
                    handle.mark_lost();
                }
                _ => warn!(shard = %shard_id, %error, "lease renewal failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Lease;

    #[tokio::test]
    async fn a_forgotten_lease_is_not_renewed_and_a_replaced_one_keeps_its_own_time() {
        let held = HeldLeases::default();
        let first = LeaseHandle::new(Lease::unfenced("a", "w"));
        held.hold("a", &first);
        assert_eq!(held.len(), 1);
        let second = LeaseHandle::new(Lease::unfenced("a", "w"));
        held.hold("a", &second);
        let before = held.due()[0].2;
        // A late answer for the replaced handle does not count for the new one.
        held.renewed("a", &first, before + Duration::from_secs(5));
        assert_eq!(held.due()[0].2, before);
        held.forget("a");
        assert!(held.due().is_empty());
    }
}
