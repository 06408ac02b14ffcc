//! When a run is done: every event of `0..expected` consumed, each once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::Notify;

/// Counts consumed events and their ids' sum, and wakes the waiter once
/// all are in.
#[derive(Debug)]
pub(crate) struct Target {
    expected: u64,
    count: AtomicU64,
    id_sum: AtomicU64,
    done: Notify,
}

impl Target {
    /// A target of events `0..expected`.
    pub(crate) fn new(expected: u64) -> Self {
        Self {
            expected,
            count: AtomicU64::new(0),
            id_sum: AtomicU64::new(0),
            done: Notify::new(),
        }
    }

    /// Adds `count` consumed events whose ids sum to `id_sum`.
    pub(crate) fn add(&self, count: u64, id_sum: u64) {
        self.id_sum.fetch_add(id_sum, Ordering::Relaxed);
        let before = self.count.fetch_add(count, Ordering::AcqRel);
        if before < self.expected && before + count >= self.expected {
            self.done.notify_one();
        }
    }

    /// Events consumed so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until `expected` events came, at most `limit`.
    pub(crate) async fn wait(&self, limit: Duration) -> Result<()> {
        let done = self.done.notified();
        if self.count() >= self.expected {
            return Ok(());
        }
        if tokio::time::timeout(limit, done).await.is_err() {
            bail!(
                "only {} of {} records consumed within {limit:?}",
                self.count(),
                self.expected
            );
        }
        Ok(())
    }

    /// Fails unless exactly the events `0..expected` came, each once (the
    /// count and the sum of ids agree; a lost event and a repeated one
    /// would have to cancel out exactly to pass).
    pub(crate) fn check(&self) -> Result<()> {
        let n = self.expected;
        let count = self.count();
        let sum = self.id_sum.load(Ordering::Acquire);
        let want = n * n.saturating_sub(1) / 2;
        if count != n || sum != want {
            bail!(
                "consumed {count} records with ids summing to {sum}; expected {n} summing to {want}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn done_once_every_event_came_once() {
        let target = Target::new(4);
        target.add(2, 1);
        assert!(target.wait(Duration::from_millis(10)).await.is_err());
        target.add(2, 5);
        target.wait(Duration::from_millis(10)).await.unwrap();
        target.check().unwrap();
    }

    #[test]
    fn a_repeated_event_fails_the_check() {
        let target = Target::new(3);
        // ids 0, 1 and 1 again: the count is right, the sum is not.
        target.add(3, 2);
        assert!(target.check().is_err());
    }
}
