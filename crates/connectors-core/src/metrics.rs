//! Metric names, recorded through the [`metrics`] facade.
//!
//! Install any `metrics` recorder (Prometheus, StatsD…) to collect them;
//! without one they cost next to nothing. Every metric carries the labels
//! `stream` and `shard_id`, except the stream-wide maximum lag and the memory
//! budget in use.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::record::ShardContext;

/// Counter: records read from Kinesis.
pub const RECORDS_READ: &str = "kinesis_connectors_records_read_total";
/// Counter: records dropped by the filter.
pub const RECORDS_FILTERED: &str = "kinesis_connectors_records_filtered_total";
/// Counter: items delivered by the emitter.
pub const RECORDS_EMITTED: &str = "kinesis_connectors_records_emitted_total";
/// Counter: records that failed to transform or were rejected by the emitter.
pub const RECORDS_FAILED: &str = "kinesis_connectors_records_failed_total";
/// Counter: payload bytes read from Kinesis.
pub const BYTES_READ: &str = "kinesis_connectors_bytes_read_total";
/// Counter: batches delivered by the emitter.
pub const BATCHES_EMITTED: &str = "kinesis_connectors_batches_emitted_total";
/// Counter: emit attempts that failed (and were retried or gave up).
pub const EMIT_FAILURES: &str = "kinesis_connectors_emit_failures_total";
/// Counter: checkpoints written.
pub const CHECKPOINT_WRITES: &str = "kinesis_connectors_checkpoint_writes_total";
/// Gauge: milliseconds the last `GetRecords` response was behind the tip of the shard.
pub const MILLIS_BEHIND_LATEST: &str = "kinesis_connectors_millis_behind_latest";
/// Gauge: the shard's [`ShardState`](crate::ShardState) as its
/// [`code`](crate::ShardState::code): 0 waiting on parents, 1 reading,
/// 2 backing off, 3 restarting, 4 finished.
pub const SHARD_STATE: &str = "kinesis_connectors_shard_state";
/// Counter: times a failed shard task was scheduled to start again.
pub const SHARD_RESTARTS: &str = "kinesis_connectors_shard_restarts_total";
/// Gauge: emit attempts that failed in a row (0 after a success).
pub const CONSECUTIVE_EMIT_FAILURES: &str = "kinesis_connectors_consecutive_emit_failures";
/// Gauge: Unix time in seconds of the shard's last checkpoint write; alert on
/// `time() - kinesis_connectors_last_checkpoint_timestamp_seconds` growing
/// past a few batch ages while records arrive.
pub const LAST_CHECKPOINT_TIMESTAMP: &str = "kinesis_connectors_last_checkpoint_timestamp_seconds";
/// Gauge (label `stream` only): the largest `millis_behind_latest` across
/// this worker's shards.
pub const STREAM_MAX_MILLIS_BEHIND_LATEST: &str =
    "kinesis_connectors_stream_max_millis_behind_latest";
/// Counter: KPL sub-records a reader dropped because their aggregate holds
/// a sub-record whose hash key lies outside the shard's range: the
/// aggregate was misrouted (a stale shard map at the producer) and is
/// dropped whole, as the KCL drops it; the KPL puts it again.
pub const KPL_SUB_RECORDS_OUTSIDE_SHARD: &str =
    "kinesis_connectors_kpl_sub_records_outside_shard_total";
/// Counter: records that start with the KPL magic but are not valid
/// aggregates; a reader hands them on whole, as the KCL does.
pub const KPL_INVALID_AGGREGATES: &str = "kinesis_connectors_kpl_invalid_aggregates_total";
/// Gauge (no labels): bytes of the worker's
/// [`MemoryBudget`](crate::MemoryBudget) reserved now; at the budget's size,
/// readers wait for room.
pub const MEMORY_BUDGET_IN_USE: &str = "kinesis_connectors_memory_budget_in_use_bytes";
/// Histogram: seconds one successful `emit` call took.
pub const EMIT_LATENCY: &str = "kinesis_connectors_emit_latency_seconds";

/// Handles for one shard, registered once so the hot path does not build labels.
#[derive(Clone)]
pub(crate) struct ShardMetrics {
    pub(crate) records_read: Counter,
    pub(crate) records_filtered: Counter,
    pub(crate) records_emitted: Counter,
    pub(crate) records_failed: Counter,
    pub(crate) bytes_read: Counter,
    pub(crate) batches_emitted: Counter,
    pub(crate) emit_failures: Counter,
    pub(crate) checkpoint_writes: Counter,
    pub(crate) millis_behind_latest: Gauge,
    pub(crate) emit_latency: Histogram,
}

impl ShardMetrics {
    pub(crate) fn new(context: &ShardContext) -> Self {
        let labels = [
            ("stream", context.stream.to_string()),
            ("shard_id", context.shard_id.to_string()),
        ];
        Self {
            records_read: counter!(RECORDS_READ, &labels),
            records_filtered: counter!(RECORDS_FILTERED, &labels),
            records_emitted: counter!(RECORDS_EMITTED, &labels),
            records_failed: counter!(RECORDS_FAILED, &labels),
            bytes_read: counter!(BYTES_READ, &labels),
            batches_emitted: counter!(BATCHES_EMITTED, &labels),
            emit_failures: counter!(EMIT_FAILURES, &labels),
            checkpoint_writes: counter!(CHECKPOINT_WRITES, &labels),
            millis_behind_latest: gauge!(MILLIS_BEHIND_LATEST, &labels),
            emit_latency: histogram!(EMIT_LATENCY, &labels),
        }
    }
}
