//! What a running consumer is doing, shard by shard: readable while it runs
//! ([`ConsumerStatus`]) and exported as gauges through the `metrics` facade,
//! so a shard that is not being read is visible, never silent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use metrics::{counter, gauge};

use crate::metrics::{
    CONSECUTIVE_EMIT_FAILURES, LAST_CHECKPOINT_TIMESTAMP, SHARD_RESTARTS, SHARD_STATE,
    STREAM_MAX_MILLIS_BEHIND_LATEST,
};

/// What a shard is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// Its lease is held; it waits until every parent reached SHARD_END.
    WaitingOnParents,
    /// Reading and emitting.
    Reading,
    /// An emit, read or checkpoint failed and is being retried after a
    /// delay (see `last_error`).
    BackingOff,
    /// The shard task failed; it starts again from its checkpoint at
    /// `restart_at`. Its lease is released meanwhile.
    Restarting,
    /// It reached SHARD_END.
    Finished,
}

impl ShardState {
    /// The value of the `kinesis_connectors_shard_state` gauge.
    pub fn code(self) -> u8 {
        match self {
            Self::WaitingOnParents => 0,
            Self::Reading => 1,
            Self::BackingOff => 2,
            Self::Restarting => 3,
            Self::Finished => 4,
        }
    }
}

/// One shard as the consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard.
    pub shard_id: String,
    /// What it is doing.
    pub state: ShardState,
    /// When it entered `state`.
    pub since: SystemTime,
    /// Whether this worker holds its lease.
    pub lease_held: bool,
    /// The last error (emit, read, checkpoint or the task's own), cleared by
    /// the next success.
    pub last_error: Option<String>,
    /// Times its task failed and was started again.
    pub restarts: u32,
    /// When a `Restarting` shard starts again.
    pub restart_at: Option<SystemTime>,
    /// Emit attempts that failed in a row.
    pub consecutive_emit_failures: u32,
    /// When its last checkpoint was written by this worker.
    pub last_checkpoint: Option<SystemTime>,
    /// How far behind the tip of the shard the last read was.
    pub millis_behind_latest: Option<i64>,
}

impl ShardStatus {
    fn new(shard_id: &str) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            state: ShardState::Reading,
            since: SystemTime::now(),
            lease_held: true,
            last_error: None,
            restarts: 0,
            restart_at: None,
            consecutive_emit_failures: 0,
            last_checkpoint: None,
            millis_behind_latest: None,
        }
    }
}

/// A live view of a consumer's shards; cheap to clone, readable from any
/// task while the consumer runs (e.g. from a health-check endpoint).
///
/// ```
/// # use kinesis_connectors_core::{ConsumerStatus, ShardState};
/// fn healthy(status: &ConsumerStatus) -> bool {
///     // Alert on shards that keep restarting, or that fall far behind.
///     status.shards().iter().all(|shard| shard.state != ShardState::Restarting || shard.restarts < 3)
///         && status.max_millis_behind_latest().unwrap_or(0) < 600_000
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerStatus {
    stream: Arc<str>,
    shards: Arc<Mutex<BTreeMap<String, ShardStatus>>>,
}

impl ConsumerStatus {
    pub(crate) fn new(stream: &str) -> Self {
        Self {
            stream: Arc::from(stream),
            shards: Arc::default(),
        }
    }

    /// Every shard this worker holds, waits for or restarts, by shard id.
    /// Shards it handed over (lease lost, shutdown) are not listed.
    pub fn shards(&self) -> Vec<ShardStatus> {
        self.lock().values().cloned().collect()
    }

    /// One shard, if this worker has it.
    pub fn shard(&self, shard_id: &str) -> Option<ShardStatus> {
        self.lock().get(shard_id).cloned()
    }

    /// The largest `millis_behind_latest` across the shards: how stale the
    /// slowest shard's output is.
    pub fn max_millis_behind_latest(&self) -> Option<i64> {
        self.lock()
            .values()
            .filter_map(|shard| shard.millis_behind_latest)
            .max()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ShardStatus>> {
        // A panic while holding this lock cannot leave it half-updated in a
        // way that matters for reporting.
        self.shards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes one shard's entry (creating it) and its gauges.
    pub(crate) fn update(&self, shard_id: &str, change: impl FnOnce(&mut ShardStatus)) {
        let max_behind = {
            let mut shards = self.lock();
            let shard = shards
                .entry(shard_id.to_owned())
                .or_insert_with(|| ShardStatus::new(shard_id));
            let before = shard.state;
            change(shard);
            if shard.state != before {
                shard.since = SystemTime::now();
            }
            let labels = self.labels(shard_id);
            gauge!(SHARD_STATE, &labels).set(f64::from(shard.state.code()));
            gauge!(CONSECUTIVE_EMIT_FAILURES, &labels)
                .set(f64::from(shard.consecutive_emit_failures));
            shards
                .values()
                .filter_map(|shard| shard.millis_behind_latest)
                .max()
        };
        if let Some(max) = max_behind {
            gauge!(STREAM_MAX_MILLIS_BEHIND_LATEST, "stream" => self.stream.to_string())
                .set(max as f64);
        }
    }

    /// Sets a shard's state, keeping everything else.
    pub(crate) fn set_state(&self, shard_id: &str, state: ShardState) {
        self.update(shard_id, |shard| {
            shard.state = state;
            shard.lease_held = state != ShardState::Restarting;
        });
    }

    /// A shard task failed and starts again at `at`.
    pub(crate) fn restarting(&self, shard_id: &str, error: &str, at: SystemTime) {
        counter!(SHARD_RESTARTS, &self.labels(shard_id)).increment(1);
        self.update(shard_id, |shard| {
            shard.state = ShardState::Restarting;
            shard.lease_held = false;
            shard.last_error = Some(error.to_owned());
            shard.restarts += 1;
            shard.restart_at = Some(at);
            shard.millis_behind_latest = None;
        });
    }

    /// A checkpoint was written now.
    pub(crate) fn checkpointed(&self, shard_id: &str) {
        let now = SystemTime::now();
        if let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) {
            gauge!(LAST_CHECKPOINT_TIMESTAMP, &self.labels(shard_id))
                .set(since_epoch.as_secs_f64());
        }
        self.update(shard_id, |shard| shard.last_checkpoint = Some(now));
    }

    /// This worker no longer has the shard (handed over or shut down).
    pub(crate) fn remove(&self, shard_id: &str) {
        self.lock().remove(shard_id);
    }

    fn labels(&self, shard_id: &str) -> [(&'static str, String); 2] {
        [
            ("stream", self.stream.to_string()),
            ("shard_id", shard_id.to_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_restarts_and_lag_are_tracked() {
        let status = ConsumerStatus::new("orders");
        status.set_state("s0", ShardState::Reading);
        status.update("s0", |shard| shard.millis_behind_latest = Some(1_500));
        status.set_state("s1", ShardState::WaitingOnParents);
        status.update("s1", |shard| shard.millis_behind_latest = Some(20));
        assert_eq!(status.max_millis_behind_latest(), Some(1_500));

        status.restarting("s0", "emit failed", SystemTime::now());
        let s0 = status
            .shard("s0")
            .unwrap_or_else(|| ShardStatus::new("missing"));
        assert_eq!(s0.state, ShardState::Restarting);
        assert!(!s0.lease_held);
        assert_eq!(s0.restarts, 1);
        assert_eq!(s0.last_error.as_deref(), Some("emit failed"));
        assert_eq!(status.max_millis_behind_latest(), Some(20));

        status.remove("s1");
        let ids: Vec<String> = status.shards().into_iter().map(|s| s.shard_id).collect();
        assert_eq!(ids, ["s0"]);
    }
}
