//! Scenarios 8–9: three workers share one stream through leases in Redis,
//! and Redis goes down (or stalls) for longer than the failover time while
//! events keep arriving.
//!
//! Every worker reaches Redis (leases and checkpoints) through the proxy.
//! No renewal can succeed during the outage, so each worker stops its
//! shards once its leases went unrenewed for the failover time; when Redis
//! is back, every lease looks expired at once. What is checked, beyond the
//! checks of every scenario: that the workers split the shards again
//! instead of the first one back taking them all (or re-taking a lease it
//! still runs), from the `status` lines each worker prints every 500 ms.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::process::Proc;
use super::proxy::Mode;
use super::scenario::{Fault, Scenario, Sink};
use crate::util::secs;

/// Workers sharing the stream.
const WORKERS: usize = 3;
/// Shards of the stream: two per worker when they are spread evenly.
const SHARDS: u32 = 6;
/// The workers' failover time: far shorter than the outages, so every
/// lease expires during them.
const FAILOVER: Duration = Duration::from_secs(5);
/// How long a worker may hold more than its share plus one after the
/// outage. A right coordinator never does: it takes expired leases only up
/// to its share and steals only while below it, and the plus one is a
/// lease taken from it that it notices at its next renewal. So the grace
/// only absorbs a status line read while leases change hands (two lines in
/// a row are 0.5 s apart). A worker that took every lease when the store
/// came back holds them until the others' next acquire round and its own
/// next renewal (a third of the failover time each): 2.5 s in a run on 2
/// cores, which a grace of several seconds would let pass.
const OVERLOAD_GRACE: Duration = Duration::from_secs(1);
/// The spread is watched at least this long after the outage ended: the
/// leases expire (failover time), are taken again, and a worker that took
/// too many has time to show it.
pub(super) const WATCH: Duration = Duration::from_secs(25);

/// The lease scenarios.
pub(crate) fn scenarios(full: bool) -> Vec<Scenario> {
    let outage = Duration::from_secs(if full { 60 } else { 20 });
    let leases = |mode| Fault::Leases {
        workers: WORKERS,
        shards: SHARDS,
        failover: FAILOVER,
        mode,
        length: outage,
    };
    let about = format!(
        "{WORKERS} workers, {SHARDS} shards, failover {}",
        secs(FAILOVER)
    );
    vec![
        Scenario {
            slug: "leases-down",
            title: format!("lease store down {} s ({about})", outage.as_secs()),
            sink: Sink::S3,
            fault: leases(Mode::Down),
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "leases-stall",
            title: format!("lease store stalls {} s ({about})", outage.as_secs()),
            sink: Sink::S3,
            fault: leases(Mode::Stalled),
            consumer_flags: Vec::new(),
        },
    ]
}

/// Shards a worker may hold for longer than [`OVERLOAD_GRACE`]: its even
/// share, plus one for a lease on its way to another worker.
fn limit(shards: u32, workers: usize) -> u64 {
    u64::from(shards).div_ceil(workers as u64) + 1
}

/// One `status` line of a worker: when it arrived, leases held, shards read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    at: Instant,
    held: u64,
    reading: u64,
}

/// A worker's status lines that arrived after `since`.
fn statuses(worker: &Proc, since: Instant) -> Vec<Status> {
    worker
        .lines_with("status")
        .into_iter()
        .filter(|(at, _)| *at > since)
        .map(|(at, v)| Status {
            at,
            held: v["status"]["held"].as_u64().unwrap_or_default(),
            reading: v["status"]["reading"].as_u64().unwrap_or_default(),
        })
        .collect()
}

/// Waits (at most `limit`) until every worker reads and holds no more than
/// its even share: the spread the outage is to disturb. False when it did
/// not come.
pub(super) fn wait_spread(workers: &mut [Proc], shards: u32, limit: Duration) -> Result<bool> {
    let share = u64::from(shards).div_ceil(workers.len() as u64);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let spread = workers.iter().all(|w| {
            w.last_with("status").is_some_and(|(_, v)| {
                let held = v["status"]["held"].as_u64().unwrap_or_default();
                let reading = v["status"]["reading"].as_u64().unwrap_or_default();
                reading >= 1 && held <= share
            })
        });
        if spread {
            return Ok(true);
        }
        for worker in workers.iter_mut() {
            worker.check_alive()?;
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(false)
}

/// How the shards were spread between the workers after the outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spread {
    /// The table's cell: the most leases each worker held after the outage,
    /// what each held at the end, and how long after the outage every
    /// worker was reading for good.
    pub(super) cell: String,
    /// What went wrong; empty when the spread is right.
    pub(super) problems: Vec<String>,
}

/// Judges the status lines every worker printed after `since` (the end of
/// the outage): no worker held more than [`limit`] for longer than
/// [`OVERLOAD_GRACE`], and at the end every worker reads and holds no more
/// than the limit.
pub(super) fn spread(workers: &[Proc], shards: u32, since: Instant) -> Spread {
    let limit = limit(shards, workers.len());
    let lines: Vec<(&str, Vec<Status>)> = workers
        .iter()
        .map(|w| (w.name(), statuses(w, since)))
        .collect();
    let mut problems = Vec::new();
    let mut peak = Vec::new();
    let mut last = Vec::new();
    let mut settled = Some(Duration::ZERO);
    for (name, lines) in &lines {
        let Some(end) = lines.last() else {
            problems.push(format!("{name} printed no status after the outage"));
            peak.push("?".to_owned());
            last.push("?".to_owned());
            settled = None;
            continue;
        };
        last.push(end.held.to_string());
        let most = lines.iter().map(|l| l.held).max().unwrap_or_default();
        peak.push(most.to_string());
        let (most, longest) = overload(lines, limit);
        if longest > OVERLOAD_GRACE || end.held > limit {
            problems.push(format!(
                "{name} held up to {most} shards (over {limit}) for {} after the outage",
                secs(longest)
            ));
        }
        if end.reading == 0 {
            problems.push(format!("{name} does not read at the end"));
        }
        settled = settled
            .zip(reading_since(lines, since))
            .map(|(a, b)| a.max(b));
    }
    let reading = settled.map_or_else(
        || "not all read".to_owned(),
        |after| format!("all read after {}", secs(after)),
    );
    let cell = format!("peak {}, end {}, {reading}", peak.join("/"), last.join("/"));
    Spread { cell, problems }
}

/// The most leases held above `limit` and the longest stretch of lines in a
/// row that held more than `limit` (up to the first line back within it,
/// or the last line).
fn overload(lines: &[Status], limit: u64) -> (u64, Duration) {
    let mut most = 0;
    let mut longest = Duration::ZERO;
    let mut over_since: Option<Instant> = None;
    for line in lines {
        if line.held > limit {
            most = most.max(line.held);
            let start = *over_since.get_or_insert(line.at);
            longest = longest.max(line.at - start);
        } else if let Some(start) = over_since.take() {
            longest = longest.max(line.at - start);
        }
    }
    (most, longest)
}

/// How long after `since` the worker read without a break until its last
/// line; `None` when its last line does not read.
fn reading_since(lines: &[Status], since: Instant) -> Option<Duration> {
    let from = lines
        .iter()
        .rposition(|l| l.reading == 0)
        .map_or(0, |i| i + 1);
    lines
        .get(from)
        .map(|l| l.at.saturating_duration_since(since))
}

/// The `--worker`/`--failover` flags of worker `n` (from 1).
pub(super) fn worker_flags(n: usize, failover: Duration) -> Vec<(&'static str, String)> {
    vec![
        ("worker", format!("worker-{n}")),
        ("failover", failover.as_secs_f64().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(start: Instant, at_ms: u64, held: u64, reading: u64) -> Status {
        Status {
            at: start + Duration::from_millis(at_ms),
            held,
            reading,
        }
    }

    #[test]
    fn the_limit_is_an_even_share_plus_one() {
        assert_eq!(limit(6, 3), 3);
        assert_eq!(limit(7, 3), 4);
        assert_eq!(limit(2, 3), 2);
    }

    #[test]
    fn an_overload_lasts_until_the_first_line_back_within_the_limit() {
        let t = Instant::now();
        let lines = [
            line(t, 0, 2, 2),
            line(t, 500, 6, 6),
            line(t, 1000, 6, 6),
            line(t, 7500, 4, 4),
            line(t, 8000, 2, 2),
            line(t, 8500, 5, 5),
        ];
        assert_eq!(overload(&lines, 3), (6, Duration::from_millis(7500)));
        assert_eq!(overload(&lines[..1], 3), (0, Duration::ZERO));
        // Still over at the last line: counted up to it.
        assert_eq!(overload(&lines[..3], 3), (6, Duration::from_millis(500)));
    }

    #[test]
    fn reading_counts_from_the_last_line_that_did_not_read() {
        let t = Instant::now();
        let lines = [
            line(t, 500, 0, 0),
            line(t, 1000, 2, 1),
            line(t, 1500, 0, 0),
            line(t, 4000, 2, 2),
            line(t, 4500, 2, 2),
        ];
        assert_eq!(reading_since(&lines, t), Some(Duration::from_secs(4)));
        assert_eq!(reading_since(&lines[..3], t), None);
    }
}
