//! Scenarios 1–4: a service the consumer needs goes away, or hangs, while
//! events keep arriving. The consumer reaches that service through the
//! proxy; the driver (producing and counting) reaches every service
//! directly, so what it counts is the truth.
//!
//! Each outage is far longer than the consumer's emit retries (about 1 s,
//! see `chaos-pipeline consume`), so shards do fail: what is checked is
//! that the consumer heals by itself, without a process restart, once the
//! service is back, and that nothing is lost.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::process::Proc;
use super::proxy::{Mode, Proxy};
use super::scenario::{Fault, Scenario, Service, Sink};

/// The outage scenarios: short ones for CI, long ones for releases.
pub(crate) fn scenarios(full: bool) -> Vec<Scenario> {
    let (s3, others) = if full { (120, 60) } else { (45, 20) };
    let outage = |service, mode, secs: u64| Fault::Proxy {
        service,
        mode,
        length: Duration::from_secs(secs),
    };
    vec![
        Scenario {
            slug: "s3-down",
            title: format!("S3 down {s3} s (refused, cut)"),
            sink: Sink::S3,
            fault: outage(Service::S3, Mode::Down, s3),
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "redis-down",
            title: format!("Redis checkpoints down {others} s"),
            sink: Sink::S3,
            fault: outage(Service::Redis, Mode::Down, others),
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "pg-down",
            title: format!("PostgreSQL down {others} s"),
            sink: Sink::Postgres,
            fault: outage(Service::Postgres, Mode::Down, others),
            consumer_flags: Vec::new(),
        },
        Scenario {
            slug: "kinesis-stall",
            title: format!("Kinesis stalls {others} s"),
            sink: Sink::S3,
            fault: outage(Service::Kinesis, Mode::Stalled, others),
            // Reads time out (5 s) well inside the stall, so the
            // core's read timeout and retry are what is exercised.
            consumer_flags: vec![("read-timeout", "5".to_owned())],
        },
    ]
}

/// Holds the proxy in `mode` for `length` (less when a consumer exits:
/// that already fails the scenario), then brings it back; returns when it
/// came back.
pub(super) fn inject(
    proxy: &Proxy,
    mode: Mode,
    length: Duration,
    driver: &mut Proc,
    consumers: &mut [Proc],
) -> Result<Instant> {
    proxy.set(mode);
    let until = Instant::now() + length;
    while Instant::now() < until {
        driver.check_alive()?;
        if !consumers.iter_mut().all(Proc::alive) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    proxy.set(Mode::Up);
    Ok(Instant::now())
}
