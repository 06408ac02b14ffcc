//! Scenario 7: `kill -9` of the consumer at random moments while events
//! keep arriving, restarted each time with the same Redis checkpoints.
//! Whatever the kill interrupted (a read, an upload, a checkpoint write) is
//! read again from the last checkpoint: duplicates are expected
//! (at-least-once), losses are not.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::process::Proc;
use super::scenario::{Fault, Plan, Scenario, Sink};
use crate::util::{say, secs};

/// The kill-loop scenarios: polling, and enhanced fan-out (a killed
/// process leaves its subscriptions behind; the next one subscribes again).
pub(crate) fn scenarios(full: bool) -> Vec<Scenario> {
    let (count, max_gap) = if full { (15, 10) } else { (4, 6) };
    let fault = Fault::Kills {
        count,
        min_gap: Duration::from_secs(2),
        max_gap: Duration::from_secs(max_gap),
    };
    vec![
        Scenario {
            slug: "kill-9",
            title: format!("consumer kill -9 ×{count}"),
            sink: Sink::S3,
            fault: fault.clone(),
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "kill-9-fan-out",
            title: format!("fan-out consumer kill -9 ×{count}"),
            sink: Sink::S3,
            fault,
            consumer_flags: vec![("fan-out", "chaos".to_owned())],
        },
    ]
}

/// Kills the consumer `count` times, each after a random gap within `gaps`
/// of its start, and starts it again at once; returns when the last one
/// started.
pub(super) fn kill_loop(
    plan: &Plan<'_>,
    driver: &mut Proc,
    consumer: &mut Proc,
    count: u32,
    gaps: (Duration, Duration),
    tag: &str,
) -> Result<Instant> {
    let mut random = Random::seeded();
    let mut started = Instant::now();
    for kill in 1..=count {
        let gap = random.between(gaps.0, gaps.1);
        thread::sleep(gap);
        driver.check_alive()?;
        consumer.check_alive()?;
        let pid = consumer.pid();
        consumer.kill();
        say(format!(
            "{tag} kill -9 {kill}/{count}: pid {pid} after {}",
            secs(gap)
        ));
        *consumer = plan.consumer()?;
        started = Instant::now();
    }
    Ok(started)
}

/// A tiny xorshift generator: random kill moments without a dependency.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x2545_f491, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `min..max` (millisecond steps).
    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = max.saturating_sub(min).as_millis() as u64;
        min + Duration::from_millis(self.next() % span.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_gaps_stay_in_range() {
        let mut random = Random::seeded();
        for _ in 0..100 {
            let gap = random.between(Duration::from_secs(2), Duration::from_secs(6));
            assert!(gap >= Duration::from_secs(2) && gap < Duration::from_secs(6));
        }
    }
}
