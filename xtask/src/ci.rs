//! `cargo xtask ci`: every check CI runs, in order, with a summary at the end:
//! fmt, clippy, unit tests, the core's `fast-json` feature, doctests, doc,
//! deny, tidy, the integration tests on the embedded stack, the demo (small),
//! the integration tests on LocalStack.
//!
//! A failing step does not stop the later ones; the command fails when any
//! step failed. A step can be skipped (with its reason) only where the issue
//! allows it: cargo-deny that cannot be installed.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::demo::{self, DemoOptions};
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
    Skipped(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => write!(f, "pass"),
            Outcome::Fail(why) => write!(f, "FAIL ({why})"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
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

/// Finds cargo-deny, installing it into `target/tools` when missing.
fn cargo_deny() -> std::result::Result<Option<PathBuf>, String> {
    let installed = Command::new(cargo())
        .args(["deny", "--version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Ok(None);
    }
    let tools = util::target_dir().join("tools");
    let bin = tools.join("bin");
    if util::is_executable(&bin.join("cargo-deny")) {
        return Ok(Some(bin));
    }
    let log = tools.join("install-cargo-deny.log");
    let t = Instant::now();
    say(format!(
        "cargo-deny is not installed: `cargo install --locked cargo-deny --root {}` (several minutes; log {}) …",
        tools.display(),
        log.display()
    ));
    let mut cmd = Command::new(cargo());
    cmd.args(["install", "--locked", "cargo-deny", "--root"])
        .arg(&tools);
    match util::run_logged(&mut cmd, &log) {
        Ok(()) if util::is_executable(&bin.join("cargo-deny")) => {
            say(format!("installed cargo-deny in {}", secs(t.elapsed())));
            Ok(Some(bin))
        }
        Ok(()) => Err(format!(
            "cargo install finished but {} has no cargo-deny",
            bin.display()
        )),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            Err(format!(
                "cargo-deny is not installed and could not be installed (see {})",
                log.display()
            ))
        }
    }
}

fn deny_step() -> Outcome {
    let extra_path = match cargo_deny() {
        Ok(p) => p,
        Err(why) => return Outcome::Skipped(why),
    };
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
    let skipped = results
        .iter()
        .filter(|(_, o, _)| matches!(o, Outcome::Skipped(_)))
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
                Outcome::Skipped(why) => format!("skipped ({why})"),
            };
            format!("{name} {word} {}", secs(*took))
        })
        .collect::<Vec<_>>()
        .join(" | ");
    say(format!(
        "ci summary ({} in total; {} step(s) ok, {failed} failed, {skipped} skipped): {summary}",
        secs(total.elapsed()),
        count - failed - skipped
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
