//! Scenarios 5–6: user code in the emitter misbehaves. The consumer wraps
//! its real emitter (`chaos-pipeline consume --panic-after/--panics`,
//! `--hang-after/--hang-secs`) and prints when its fault window ends.
//!
//! - A panicking emitter: the shard task dies; the core turns the panic
//!   into a failure of that shard and restarts it from its checkpoint.
//! - A hung emitter: an emit that does not return. The consumer sets
//!   `ShardConfig::with_emit_timeout(3 s)`, so a hung emit becomes a
//!   retryable failure, the retries run out, the shard is restarted, and
//!   once emits return again it catches up.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::process::Proc;
use super::scenario::{Fault, Scenario, Sink};

/// When the fault starts, counted from the consumer's start: after the
/// warm-up has seen events delivered.
const FAULT_AFTER_SECS: u64 = 8;

/// The emitter scenarios.
pub(crate) fn scenarios(full: bool) -> Vec<Scenario> {
    let (panics, hang) = if full { (10, 90) } else { (3, 20) };
    vec![
        Scenario {
            slug: "emit-panics",
            title: format!("emitter panics {panics}×"),
            sink: Sink::S3,
            fault: Fault::Emitter {
                flags: vec![
                    ("panic-after", FAULT_AFTER_SECS.to_string()),
                    ("panics", panics.to_string()),
                ],
                // Each panic costs a restart backoff of at most 8 s (4 s
                // plus jitter), usually 2 to 3 s.
                within: Duration::from_secs(FAULT_AFTER_SECS + 60 + 8 * panics),
                expected: Duration::from_secs(FAULT_AFTER_SECS + 3 * panics),
            },
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "emit-hangs",
            title: format!("emit hangs {hang} s (3 s emit timeout)"),
            sink: Sink::S3,
            fault: Fault::Emitter {
                flags: vec![
                    ("hang-after", FAULT_AFTER_SECS.to_string()),
                    ("hang-secs", hang.to_string()),
                ],
                within: Duration::from_secs(FAULT_AFTER_SECS + hang + 30),
                expected: Duration::from_secs(FAULT_AFTER_SECS + hang),
            },
            consumer_flags: vec![("emit-timeout", "3".to_owned())],
        },
    ]
}

/// Waits (at most `limit`) for the consumer to report that its fault
/// window ended; returns when it did.
pub(super) fn window_end(consumer: &mut Proc, limit: Duration) -> Result<Instant> {
    consumer.wait_for(limit, |c| c.first_where("fault", "end").is_some())?;
    consumer
        .first_where("fault", "end")
        .context("the consumer did not report the end of its fault window")
}
