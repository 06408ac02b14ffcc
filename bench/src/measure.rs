//! What a scenario process measures of itself and prints for `cargo xtask
//! bench`: CPU of the whole process, peak RSS, time to the first record and
//! to the last, and latency quantiles.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::time::{ClockId, clock_gettime};
use serde::Serialize;

/// The prefix of the one line a scenario prints for the xtask to read.
pub(crate) const REPORT_PREFIX: &str = "kc-bench-report ";

/// CPU time (user + system) of every thread this process ran so far.
pub(crate) fn process_cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time (user + system) of the calling thread so far.
pub(crate) fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The process's peak resident set size so far, in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("/proc/self/status has no VmHWM")
}

/// When the process started (the first thing `main` does is read it) and
/// when the first record reached user code.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    first: OnceLock<Duration>,
}

impl Clock {
    /// A clock started now.
    pub(crate) fn start() -> Self {
        Self {
            start: Instant::now(),
            first: OnceLock::new(),
        }
    }

    /// Notes that a record reached user code (only the first call counts).
    pub(crate) fn saw_record(&self) {
        self.first.get_or_init(|| self.start.elapsed());
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time from the start to the first record, if one came.
    pub(crate) fn first_record(&self) -> Option<Duration> {
        self.first.get().copied()
    }
}

/// What one run of a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The scenario's name.
    pub(crate) scenario: String,
    /// Records consumed.
    pub(crate) records: u64,
    /// CPU of the process from its start to the last record, in µs.
    pub(crate) cpu_micros: u64,
    /// Peak RSS, KiB.
    pub(crate) peak_rss_kib: u64,
    /// Start to first record, ms.
    pub(crate) first_record_ms: f64,
    /// Start to last record, ms.
    pub(crate) wall_ms: f64,
    /// Put → user code latency quantiles (live-traffic scenarios), ms.
    pub latency_p50_ms: Option<f64>,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: Option<f64>,
}

impl Report {
    /// A report of `records` consumed, measured now.
    pub(crate) fn now(scenario: &str, clock: &Clock, records: u64) -> Result<Self> {
        Ok(Self {
            scenario: scenario.to_owned(),
            records,
            cpu_micros: process_cpu().as_micros() as u64,
            peak_rss_kib: peak_rss_kib()?,
            first_record_ms: clock.first_record().unwrap_or_default().as_secs_f64() * 1e3,
            wall_ms: clock.elapsed().as_secs_f64() * 1e3,
            latency_p50_ms: None,
            latency_p99_ms: None,
        })
    }

    /// Prints the report line the xtask reads.
    pub(crate) fn print(&self) -> Result<()> {
        println!("{REPORT_PREFIX}{}", serde_json::to_string(self)?);
        Ok(())
    }
}

/// The `p`-quantile (nearest rank) of `sorted`.
pub(crate) fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_grows_with_work() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(process_cpu() > before, "{x}");
    }

    #[test]
    fn peak_rss_is_read() {
        assert!(peak_rss_kib().unwrap() > 0);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
