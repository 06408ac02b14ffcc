//! The worker-wide memory budget: bytes of records read ahead, buffered and
//! in flight, across every shard a worker reads.
//!
//! Each shard's reader reserves room for a page before it calls
//! `GetRecords` and waits while the budget is spent; the reservation travels
//! with the page and shrinks to the bytes of the records its buffer still
//! holds, and the processor gives it back once their batch is emitted and
//! checkpointed. So the budget slows reading down and never drops a record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{Gauge, gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::{Error, Result};
use crate::metrics::MEMORY_BUDGET_IN_USE;
use crate::record::Record;

const MIB: usize = 1024 * 1024;

/// Permits count KiB: `acquire_many` takes a `u32`, so byte permits would cap
/// a budget at 4 GiB.
const UNIT: usize = 1024;

/// The most `GetRecords` returns in one call.
pub(crate) const PAGE_MAX_BYTES: usize = 10 * MIB;

/// A shard takes at most 1 MiB/s of writes (and 1,000 records/s): once a
/// shard is caught up, the next page holds no more than what was written
/// since the last call.
const SHARD_WRITE_BYTES_PER_SEC: usize = MIB;
const SHARD_WRITE_RECORDS_PER_SEC: usize = 1_000;

/// What one record costs besides its payload, partition key and sequence
/// number: the `Record` itself and the allocator's headers of its parts.
const RECORD_OVERHEAD: usize = std::mem::size_of::<Record>() + 64;

/// The bytes a record holds while it is read ahead or buffered.
pub(crate) fn record_cost(record: &Record) -> usize {
    record.data.len()
        + record.partition_key.len()
        + record.sequence_number.as_str().len()
        + record.explicit_hash_key.as_ref().map_or(0, String::len)
        + RECORD_OVERHEAD
}

/// The most a page of `max_records` records can cost.
pub(crate) fn page_worst_case(max_records: u32) -> usize {
    PAGE_MAX_BYTES + max_records as usize * RECORD_OVERHEAD
}

/// What to reserve for the next page of a shard that was caught up at its
/// last call, `since` ago: what the shard can have taken in meanwhile.
pub(crate) fn caught_up_estimate(since: Duration, max_records: u32) -> usize {
    let seconds = since.as_secs_f64().max(0.2);
    let records = (SHARD_WRITE_RECORDS_PER_SEC as f64 * seconds) as usize;
    let bytes = (SHARD_WRITE_BYTES_PER_SEC as f64 * seconds) as usize
        + records.min(max_records as usize) * RECORD_OVERHEAD;
    bytes.min(page_worst_case(max_records))
}

/// A limit on the bytes of records one worker holds, shared by all its shards.
///
/// Counted: pages read ahead, records buffered since the last flush, and a
/// batch until it is emitted and checkpointed, each as payload + partition
/// key + sequence number + a fixed overhead per record. Not counted: what
/// a transformer makes of a record (a `String` or a typed struct is a
/// second copy, a `BytesTransformer` item none) and an emitter's encoded
/// body. Plan the process's memory as
///
/// ```text
/// RSS ≈ base + shards × per-shard cost + budget × (1 + t + e)
/// ```
///
/// with `t` = 1 when items copy the payload (UTF-8, JSON) and 0 for bytes,
/// and `e` ≈ 1 when the emitter encodes a batch into one body (S3, Redshift
/// files), 0 when it sends items one call at a time. The
/// `worker_memory` benchmark prints the figures for 1, 100 and 1,000 shards.
///
/// When the budget is spent, readers wait (their shards' buffers flush
/// early, cut by time, to free it), so a worker reads more slowly but never
/// drops a record. Before a shard's first pages, a reader reserves the most
/// a page can hold (10 MiB plus the per-record overhead); once the shard is
/// caught up, what Kinesis lets producers write since its last call. On AWS
/// that makes the budget a bound. A page larger than its reservation (an
/// emulator that takes writes faster than a shard's limit) takes what room
/// is free and goes on without waiting, so the budget can be overshot by
/// that page's excess.
///
/// ```
/// use kinesis_connectors_core::MemoryBudget;
/// let budget = MemoryBudget::new(64 * 1024 * 1024)?;
/// assert_eq!(budget.bytes(), 64 * 1024 * 1024);
/// assert_eq!(budget.in_use(), 0);
/// assert!(MemoryBudget::new(1000).is_err());
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Arc<Semaphore>,
    units: usize,
    high_water: AtomicUsize,
    in_use_gauge: Gauge,
    /// How many reservations wait for room: while any does, shards flush
    /// what they buffered so that room comes back.
    waiting: watch::Sender<usize>,
}

/// Counts one waiting reservation while it lives.
struct Waiting<'a>(&'a watch::Sender<usize>);

impl<'a> Waiting<'a> {
    fn start(waiting: &'a watch::Sender<usize>) -> Self {
        waiting.send_modify(|n| *n += 1);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl MemoryBudget {
    /// The default budget: 256 MiB, sized for a container of 1 GiB running a
    /// JSON pipeline into S3 (`t` = `e` = 1 in the formula above).
    pub const DEFAULT_BYTES: usize = 256 * MIB;

    /// The smallest budget: 1 MiB.
    pub const MIN_BYTES: usize = MIB;

    /// A budget of `bytes` (rounded up to KiB). Below
    /// [`MIN_BYTES`](Self::MIN_BYTES), or too large to count, it is a
    /// configuration error.
    pub fn new(bytes: usize) -> Result<Self> {
        let units = bytes.div_ceil(UNIT);
        if bytes < Self::MIN_BYTES {
            return Err(Error::Config(format!(
                "the memory budget must be at least {} bytes (1 MiB), got {bytes}",
                Self::MIN_BYTES
            )));
        }
        if units > u32::MAX as usize || units > Semaphore::MAX_PERMITS {
            return Err(Error::Config(format!(
                "the memory budget must be below 4 TiB, got {bytes} bytes"
            )));
        }
        Ok(Self::with_units(units))
    }

    fn with_units(units: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(units)),
                units,
                high_water: AtomicUsize::new(0),
                in_use_gauge: gauge!(MEMORY_BUDGET_IN_USE),
                waiting: watch::Sender::new(0),
            }),
        }
    }

    /// The size of the budget in bytes.
    pub fn bytes(&self) -> usize {
        self.inner.units * UNIT
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.in_use_units() * UNIT
    }

    /// The most bytes reserved at once since the budget was made.
    pub fn high_water(&self) -> usize {
        self.inner.high_water.load(Ordering::Relaxed) * UNIT
    }

    fn in_use_units(&self) -> usize {
        self.inner.units - self.inner.permits.available_permits()
    }

    /// Records what is in use after a change.
    fn changed(&self) {
        let in_use = self.in_use_units();
        self.inner.high_water.fetch_max(in_use, Ordering::Relaxed);
        self.inner.in_use_gauge.set((in_use * UNIT) as f64);
    }

    /// Clamps a request to the whole budget: a larger one could never be met.
    fn units_for(&self, bytes: usize) -> u32 {
        // `units` fits a u32 (checked in `new`), so the cast is lossless.
        bytes.div_ceil(UNIT).min(self.inner.units) as u32
    }

    /// A reservation of nothing, to grow or merge into.
    pub(crate) fn nothing(&self) -> Reservation {
        Reservation {
            permit: None,
            budget: self.clone(),
        }
    }

    /// Reserves `bytes` (at most the whole budget) if that much is free now.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = self.units_for(bytes);
        let permit = Arc::clone(&self.inner.permits)
            .try_acquire_many_owned(units)
            .ok()?;
        self.changed();
        Some(Reservation {
            permit: Some(permit),
            budget: self.clone(),
        })
    }

    /// How many reservations wait for room now, and a way to wait for one.
    pub(crate) fn waiting(&self) -> watch::Receiver<usize> {
        self.inner.waiting.subscribe()
    }

    /// Reserves `bytes` (at most the whole budget), waiting in line (first
    /// come, first served) until that much is free.
    pub(crate) async fn reserve(&self, bytes: usize) -> Reservation {
        if let Some(reservation) = self.try_reserve(bytes) {
            return reservation;
        }
        tracing::debug!(
            bytes,
            in_use = self.in_use(),
            "waiting for room in the memory budget"
        );
        let _waiting = Waiting::start(&self.inner.waiting);
        let units = self.units_for(bytes);
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.inner.permits)
            .acquire_many_owned(units)
            .await
            .ok();
        self.changed();
        Reservation {
            permit,
            budget: self.clone(),
        }
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::with_units(Self::DEFAULT_BYTES / UNIT)
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("bytes", &self.bytes())
            .field("in_use", &self.in_use())
            .field("high_water", &self.high_water())
            .finish()
    }
}

/// Bytes held against a [`MemoryBudget`]; given back when dropped.
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: MemoryBudget,
}

impl Reservation {
    /// The bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
            * UNIT
    }

    /// Gives back what is held beyond `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        let Some(permit) = self.permit.as_mut() else {
            return;
        };
        let held = permit.num_permits();
        if held > keep {
            drop(permit.split(held - keep));
            self.budget.changed();
        }
    }

    /// Takes `other`'s bytes into this reservation.
    pub(crate) fn merge(&mut self, mut other: Reservation) {
        match (self.permit.as_mut(), other.permit.take()) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    /// Grows this reservation to `bytes` (at most the whole budget) if that
    /// much room is free now; true if it holds `bytes` afterwards.
    pub(crate) fn try_grow_to(&mut self, bytes: usize) -> bool {
        let missing = bytes.saturating_sub(self.bytes());
        if missing == 0 {
            return true;
        }
        match self.budget.try_reserve(missing) {
            Some(more) => {
                self.merge(more);
                true
            }
            None => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.budget.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_below_one_mib_are_refused() {
        assert!(matches!(MemoryBudget::new(MIB - 1), Err(Error::Config(_))));
        assert!(MemoryBudget::new(MIB).is_ok());
        assert_eq!(MemoryBudget::default().bytes(), 256 * MIB);
    }

    #[tokio::test]
    async fn reservations_shrink_merge_and_come_back_on_drop() {
        let budget = MemoryBudget::new(4 * MIB).unwrap();
        let mut page = budget.reserve(3 * MIB).await;
        assert_eq!(budget.in_use(), 3 * MIB);
        assert!(budget.try_reserve(2 * MIB).is_none(), "only 1 MiB is free");
        page.shrink_to(10_000);
        assert_eq!(page.bytes(), 10 * UNIT, "rounded up to whole KiB");
        let mut held = budget.nothing();
        held.merge(page);
        assert_eq!(budget.in_use(), 10 * UNIT);
        assert!(held.try_grow_to(2 * MIB));
        assert_eq!(budget.in_use(), 2 * MIB);
        assert!(!held.try_grow_to(5 * MIB), "only 4 MiB in all");
        assert_eq!(held.bytes(), 2 * MIB, "a failed grow takes nothing");
        drop(held);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.high_water(), 3 * MIB);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_the_whole_budget() {
        let budget = MemoryBudget::new(MIB).unwrap();
        let all = budget.reserve(PAGE_MAX_BYTES).await;
        assert_eq!(all.bytes(), MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reservation_is_served_when_room_comes_back() {
        let budget = MemoryBudget::new(2 * MIB).unwrap();
        let first = budget.reserve(2 * MIB).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(MIB).await.bytes() }
        });
        let mut waiters = budget.waiting();
        waiters.wait_for(|n| *n == 1).await.unwrap();
        assert!(!waiting.is_finished(), "no room yet");
        drop(first);
        assert_eq!(waiting.await.unwrap(), MIB);
        assert_eq!(*waiters.borrow(), 0);
    }

    #[test]
    fn a_caught_up_shard_reserves_what_its_producers_can_write_meanwhile() {
        let one_second = caught_up_estimate(Duration::from_secs(1), 10_000);
        assert!((MIB..2 * MIB).contains(&one_second), "{one_second}");
        assert_eq!(
            caught_up_estimate(Duration::from_secs(60), 10_000),
            page_worst_case(10_000)
        );
    }
}
