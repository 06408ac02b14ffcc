//! `cargo xtask chaos [--full] [FILTER]`: fault scenarios on the local stack,
//! one table at the end.
//!
//! Each scenario runs a consumer (`chaos-pipeline consume`, in the
//! integration-tests package; three workers sharing the stream through
//! leases in the lease scenarios) reading its own stream, and a driver
//! (`chaos-pipeline drive`) that produces events with unique ids at a fixed
//! rate and counts what reached the sink. The fault comes from a TCP proxy
//! between the consumer and one service (`proxy.rs`: refused and cut, or
//! stalled), from the consumer's own emitter (panics, hangs), or from
//! `kill -9`. A scenario passes when every event was delivered (lost = 0),
//! every event produced before the fault ended was delivered within 30 s
//! of its end, and (except for the kill loop) the consumer did so without
//! a restart; duplicates are reported, not failed: at-least-once is the
//! promise. With several workers, the shards must also be split between
//! them again after the fault (`leases.rs`).
//!
//! The scenarios run in two lanes at once (each with its own stream, proxy
//! and processes; two lanes keep kinesis-local, which takes ~450 writes/s,
//! well below its pace), so the short run fits in CI.

mod emitters;
mod kills;
mod leases;
mod outages;
mod process;
mod proxy;
mod scenario;

use std::fmt::Write as _;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use self::scenario::{Harness, Recovered, Row, Scenario};
use crate::it::with_stack;
use crate::stack::{self, Mode};
use crate::tidy::cargo;
use crate::util::{self, say, secs};

/// Options of `cargo xtask chaos`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChaosOptions {
    /// Longer outages and more kills (for releases).
    pub(crate) full: bool,
    /// Only the scenarios whose short name contains this.
    pub(crate) filter: Option<String>,
}

const PACKAGE: &str = "integration-tests";
const BINARY: &str = "chaos-pipeline";

/// Events per second per scenario: two lanes stay well below kinesis-local's
/// ~450 writes/s.
const RATE: u64 = 100;
/// Scenarios running at once.
const LANES: usize = 2;

/// Every scenario, in table order.
fn scenarios(full: bool) -> Vec<Scenario> {
    let mut all = outages::scenarios(full);
    all.extend(emitters::scenarios(full));
    all.extend(kills::scenarios(full));
    all.extend(leases::scenarios(full));
    all
}

pub(crate) fn run(opts: &ChaosOptions) -> Result<()> {
    let _lock = stack::lock()?;
    let started = Instant::now();
    let chosen: Vec<Scenario> = scenarios(opts.full)
        .into_iter()
        .filter(|s| opts.filter.as_deref().is_none_or(|f| s.slug.contains(f)))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = scenarios(false).iter().map(|s| s.slug).collect();
        bail!("no scenario matches; scenarios: {}", names.join(", "));
    }

    let t = Instant::now();
    let mut build = Command::new(cargo());
    build
        .current_dir(util::root())
        .args(["build", "-p", PACKAGE, "--bin", BINARY]);
    say(format!(
        "building the chaos pipeline: {}",
        util::show(&build)
    ));
    if !util::run_status(&mut build)?.success() {
        bail!("{BINARY} does not build");
    }
    say(format!("{BINARY} built in {}", secs(t.elapsed())));
    let binary = util::target_dir()
        .join("debug")
        .join(format!("{BINARY}{}", std::env::consts::EXE_SUFFIX));

    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let logs = util::target_dir().join("chaos").join(&run);
    std::fs::create_dir_all(&logs)?;

    let mut rows = Vec::new();
    with_stack(&Mode::Embedded, false, |env| {
        let ctx = Harness {
            binary,
            env: env.to_vec(),
            run,
            logs: logs.clone(),
            rate: RATE,
        };
        say(format!(
            "{} scenario(s) in {LANES} lanes, {RATE} events/s each; logs in {}",
            chosen.len(),
            logs.display()
        ));
        rows = run_lanes(&ctx, &chosen);
        Ok(())
    })?;

    let table = render(&rows);
    println!();
    print!("{table}");
    let failed = rows.iter().filter(|r| !r.pass).count();
    say(format!(
        "chaos {}: {} scenario(s), {failed} failed, {} in total (logs: {})",
        if opts.full { "--full" } else { "(short)" },
        rows.len(),
        secs(started.elapsed()),
        logs.display()
    ));
    if failed > 0 {
        bail!("{failed} chaos scenario(s) failed");
    }
    Ok(())
}

/// Shares the scenarios out between the lanes, longest first onto the
/// least loaded lane, runs the lanes at once and returns the rows in the
/// scenarios' order.
fn run_lanes(ctx: &Harness, scenarios: &[Scenario]) -> Vec<Row> {
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(scenarios[i].estimate()));
    let mut lanes: Vec<(Duration, Vec<usize>)> = vec![(Duration::ZERO, Vec::new()); LANES];
    for i in order {
        if let Some(lane) = lanes.iter_mut().min_by_key(|(load, _)| *load) {
            lane.0 += scenarios[i].estimate();
            lane.1.push(i);
        }
    }
    let mut rows: Vec<Option<Row>> = vec![None; scenarios.len()];
    thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|(_, lane)| {
                scope.spawn(move || {
                    lane.iter()
                        .map(|&i| (i, scenario::run(ctx, &scenarios[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            // A lane thread only panics on a bug of the xtask; its rows
            // are then missing and reported as such below.
            if let Ok(done) = handle.join() {
                for (i, row) in done {
                    rows[i] = Some(row);
                }
            }
        }
    });
    rows.into_iter()
        .zip(scenarios)
        .map(|(row, s)| {
            row.unwrap_or_else(|| {
                Row::not_run(&s.title, "the scenario's thread panicked".to_owned())
            })
        })
        .collect()
}

/// The table: one line per scenario.
fn render(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "events",
        "lost",
        "duplicated",
        "recovered w/o restart",
        "time to recover",
        "spread after recovery",
        "result",
        "took",
        "notes",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.title.clone(),
                r.events.to_string(),
                r.lost.to_string(),
                r.duplicated.to_string(),
                match &r.recovered {
                    Recovered::Yes => "yes".to_owned(),
                    Recovered::No => "no".to_owned(),
                    Recovered::Restarted(n) => format!("n/a ({n} restarts)"),
                },
                r.time_to_recover.map_or_else(|| "-".to_owned(), secs),
                r.spread.clone().unwrap_or_else(|| "-".to_owned()),
                if r.pass { "pass" } else { "FAIL" }.to_owned(),
                secs(r.took),
                r.notes.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::from("|");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, words left-aligned.
            if (1..=3).contains(&i) {
                let _ = write!(out, " {cell:>w$} |");
            } else {
                let _ = write!(out, " {cell:<w$} |");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if (1..=3).contains(&i) {
            let _ = write!(out, "{dashes}-:|");
        } else {
            let _ = write!(out, "-{dashes}-|");
        }
    }
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_unique_short_name_and_short_runs_fit_ci() {
        for full in [false, true] {
            let all = scenarios(full);
            assert_eq!(all.len(), 10);
            let mut slugs: Vec<&str> = all.iter().map(|s| s.slug).collect();
            slugs.sort_unstable();
            slugs.dedup();
            assert_eq!(slugs.len(), all.len());
        }
        // Two lanes of about half the total each (the estimates err long:
        // 9 scenarios estimated at 384 s took 178 s in CI on 864cb28):
        // with the build and the stack's start, about 5 min at most in CI.
        let total: Duration = scenarios(false).iter().map(Scenario::estimate).sum();
        assert!(
            total / LANES as u32 <= Duration::from_secs(210),
            "{total:?}"
        );
    }

    #[test]
    fn the_table_is_markdown_with_aligned_columns() {
        let row = Row {
            title: "S3 down".into(),
            events: 1234,
            lost: 0,
            duplicated: 5,
            recovered: Recovered::Yes,
            time_to_recover: Some(Duration::from_millis(6100)),
            pass: true,
            spread: None,
            notes: String::new(),
            took: Duration::from_secs(70),
        };
        let table = render(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains("| yes "), "{table}");
        assert!(lines[2].contains("6.1 s"), "{table}");
        assert!(lines[1].contains("-:|"), "{table}");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{table}");
    }
}
