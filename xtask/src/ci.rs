//! `cargo xtask ci`: every check CI runs, in order, with a summary at the end:
//! fmt, clippy, unit tests, the core's `fast-json` feature, doctests, doc,
//! deny, tidy, the integration tests on the embedded stack, the demo (small),
//! the fault scenarios (`chaos`, short), the benchmark's smoke run, the
//! integration tests on LocalStack.
//!
//! A failing step does not stop the later ones; the command fails when any
//! step failed. No step is ever skipped: cargo-deny that cannot be installed
//! fails the deny step.

use std::fmt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::bench::{self, BenchOptions};
use crate::chaos::{self, ChaosOptions};
use crate::demo::{self, DemoOptions};
use crate::install;
use crate::it::{self, ItOptions};
use crate::stack::Mode;
use crate::tidy::{self, cargo};
use crate::util::{self, say, secs};

/// Events the demo produces in CI: enough for several batches per stage.
const CI_DEMO_COUNT: u64 = 2_000;

/// How one step ended.
enum Outcome {
    Pass,
    Fail(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => write!(f, "pass"),
            Outcome::Fail(why) => write!(f, "FAIL ({why})"),
        }
    }
}

/// Runs a cargo command (inherited output) as a step.
fn cargo_step(args: &[&str], envs: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(util::root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    say(format!("$ {}", util::show(&cmd)));
    match util::run_status(&mut cmd) {
        Ok(s) if s.success() => Outcome::Pass,
        Ok(s) => Outcome::Fail(s.to_string()),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    }
}

fn result_step(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            Outcome::Fail(short_reason(&format!("{e}")))
        }
    }
}

/// The first two lines of an error message, on one line and at most 160 characters.
fn short_reason(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    if joined.chars().count() > 160 {
        let cut: String = joined.chars().take(157).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

/// cargo-deny's offline checks. `cargo deny` reads `cargo metadata`, which
/// needs the crates of every platform in the lock file (windows-sys and the
/// like), not just this machine's: `cargo fetch` without `--target` downloads
/// them all, so the checks pass on a fresh machine with an empty cargo home.
fn deny_step() -> Outcome {
    let extra_path = match install::ensure_cargo_deny() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("cargo-deny could not be installed: {e:#}")),
    };
    if let fail @ Outcome::Fail(_) = cargo_step(&["fetch", "--locked"], &[]) {
        return fail;
    }
    let mut cmd = Command::new(cargo());
    // The inclusion graphs of the (warn-only) duplicate versions run to
    // thousands of lines; an error still names the crate and its license.
    cmd.current_dir(util::root())
        .args(["deny", "--offline", "check", "--hide-inclusion-graph"])
        .args(["bans", "licenses", "sources"]);
    if let Some(bin) = extra_path {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
    }
    say(format!("$ {}", util::show(&cmd)));
    match util::run_status(&mut cmd) {
        Ok(s) if s.success() => Outcome::Pass,
        Ok(s) => Outcome::Fail(s.to_string()),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    }
}

/// `cargo xtask deny`: the deny step alone.
pub(crate) fn deny() -> Result<()> {
    match deny_step() {
        Outcome::Pass => Ok(()),
        Outcome::Fail(why) => bail!("cargo deny failed: {why}"),
    }
}

/// Runs all the steps and prints the summary; fails when a step failed.
pub(crate) fn run() -> Result<()> {
    let total = Instant::now();
    let nextest = it::has_nextest();
    type Step<'a> = (&'a str, Box<dyn Fn() -> Outcome + 'a>);
    let steps: Vec<Step<'_>> = vec![
        (
            "fmt",
            Box::new(|| cargo_step(&["fmt", "--all", "--check"], &[])),
        ),
        (
            "clippy",
            Box::new(|| {
                cargo_step(
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                )
            }),
        ),
        (
            "unit tests",
            Box::new(move || {
                if nextest {
                    cargo_step(
                        &[
                            "nextest",
                            "run",
                            "--workspace",
                            "--exclude",
                            "integration-tests",
                        ],
                        &[],
                    )
                } else {
                    cargo_step(
                        &["test", "--workspace", "--exclude", "integration-tests"],
                        &[],
                    )
                }
            }),
        ),
        (
            "core fast-json",
            // The core's optional feature (sonic-rs encodes JSON) is off in
            // the workspace steps: lint it and run the core's unit tests
            // with it on (about 1.5 min, mostly dependencies rebuilt).
            Box::new(|| {
                let clippy = cargo_step(
                    &[
                        "clippy",
                        "-p",
                        "kinesis-connectors-core",
                        "--all-targets",
                        "--features",
                        "fast-json",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                );
                match clippy {
                    Outcome::Pass => cargo_step(
                        &[
                            "test",
                            "-p",
                            "kinesis-connectors-core",
                            "--features",
                            "fast-json",
                            "--lib",
                        ],
                        &[],
                    ),
                    failed => failed,
                }
            }),
        ),
        (
            "doctests",
            Box::new(|| {
                cargo_step(
                    &[
                        "test",
                        "--workspace",
                        "--doc",
                        "--exclude",
                        "integration-tests",
                    ],
                    &[],
                )
            }),
        ),
        (
            "doc",
            Box::new(|| {
                cargo_step(
                    &["doc", "--workspace", "--no-deps"],
                    &[("RUSTDOCFLAGS", "-D warnings")],
                )
            }),
        ),
        ("deny", Box::new(deny_step)),
        ("tidy", Box::new(|| result_step(tidy::run()))),
        (
            "it (embedded)",
            Box::new(|| {
                result_step(it::run(&ItOptions {
                    filter: None,
                    keep: false,
                    mode: Mode::Embedded,
                }))
            }),
        ),
        (
            "demo (embedded, 2000 events)",
            Box::new(|| {
                result_step(demo::run(&DemoOptions {
                    count: CI_DEMO_COUNT,
                    keep: false,
                    mode: Mode::Embedded,
                }))
            }),
        ),
        (
            "chaos (embedded, short)",
            Box::new(|| result_step(chaos::run(&ChaosOptions::default()))),
        ),
        (
            "bench (smoke)",
            Box::new(|| result_step(bench::run(&BenchOptions::smoke()))),
        ),
        (
            "it (host LocalStack)",
            Box::new(|| {
                result_step(it::run(&ItOptions {
                    filter: None,
                    keep: false,
                    mode: Mode::LocalStackHost,
                }))
            }),
        ),
    ];
    let count = steps.len();
    let mut results: Vec<(&str, Outcome, Duration)> = Vec::new();
    for (i, (name, step)) in steps.iter().enumerate() {
        println!();
        say(format!("==> ci step {}/{count}: {name}", i + 1));
        let t = Instant::now();
        let outcome = step();
        let took = t.elapsed();
        say(format!("<== {name}: {outcome} in {}", secs(took)));
        results.push((name, outcome, took));
    }
    let failed = results
        .iter()
        .filter(|(_, o, _)| matches!(o, Outcome::Fail(_)))
        .count();
    println!();
    say("ci steps:");
    for (name, outcome, took) in &results {
        say(format!("  {name:<22} {:>8}  {outcome}", secs(*took)));
    }
    let summary = results
        .iter()
        .map(|(name, outcome, took)| {
            let word = match outcome {
                Outcome::Pass => "pass".to_owned(),
                Outcome::Fail(_) => "FAIL".to_owned(),
            };
            format!("{name} {word} {}", secs(*took))
        })
        .collect::<Vec<_>>()
        .join(" | ");
    say(format!(
        "ci summary ({} in total; {} step(s) ok, {failed} failed): {summary}",
        secs(total.elapsed()),
        count - failed
    ));
    if failed > 0 {
        bail!("{failed} ci step(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_keep_the_first_problem() {
        let msg = "tidy found 2 problem(s):\n  - a: no README.md\n  - b: no lints";
        assert_eq!(
            short_reason(msg),
            "tidy found 2 problem(s): - a: no README.md"
        );
        assert_eq!(short_reason(&"x".repeat(300)).chars().count(), 160);
    }
}
