//! `cargo xtask it [FILTER] [--keep] [--localstack [URL]]`: the integration
//! tests against the local stack.

use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::stack::{self, Mode};
use crate::tidy::cargo;
use crate::util::{self, say, secs};

/// Options of `cargo xtask it`.
#[derive(Debug, Clone)]
pub(crate) struct ItOptions {
    /// Test name filter passed to the test runner.
    pub(crate) filter: Option<String>,
    /// Leave the stack running afterwards.
    pub(crate) keep: bool,
    /// Which stack to run against.
    pub(crate) mode: Mode,
}

/// Tests run at most this many at a time (the CI machine has 2 cores).
const TEST_THREADS: &str = "2";

/// Whether cargo-nextest is installed.
pub(crate) fn has_nextest() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test_command(opts: &ItOptions, nextest: bool, build_only: bool) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(util::root());
    if nextest {
        cmd.args(["nextest", "run", "-p", "integration-tests"]);
        if build_only {
            cmd.arg("--no-run");
        } else {
            cmd.args(["--no-fail-fast", "--test-threads", TEST_THREADS]);
            if let Some(f) = &opts.filter {
                cmd.arg(f);
            }
        }
    } else {
        cmd.args(["test", "-p", "integration-tests"]);
        if build_only {
            cmd.arg("--no-run");
        } else {
            cmd.arg("--no-fail-fast");
            if let Some(f) = &opts.filter {
                cmd.arg(f);
            }
            cmd.args(["--", "--test-threads", TEST_THREADS]);
        }
    }
    cmd
}

/// Builds the tests, brings the stack up, runs the tests with its environment
/// and stops what it started (unless `keep`), even when the tests fail.
pub(crate) fn run(opts: &ItOptions) -> Result<()> {
    // Held for the whole run: a concurrent run in this workspace waits.
    let _lock = stack::lock()?;
    let nextest = has_nextest();
    let t = Instant::now();
    let mut build = test_command(opts, nextest, true);
    say(format!(
        "building the integration tests: {}",
        util::show(&build)
    ));
    if !util::run_status(&mut build)?.success() {
        bail!("the integration tests do not build");
    }
    say(format!("integration tests built in {}", secs(t.elapsed())));
    build_example_binaries()?;

    with_stack(&opts.mode, opts.keep, |env| {
        let mut cmd = test_command(opts, nextest, false);
        use_stack_env(&mut cmd, env);
        let t = Instant::now();
        say(format!("running: {}", util::show(&cmd)));
        let status = util::run_status(&mut cmd)?;
        say(format!(
            "integration tests finished in {} ({status})",
            secs(t.elapsed())
        ));
        if !status.success() {
            bail!("integration tests failed ({status})");
        }
        Ok(())
    })
}

/// The example binaries that smoke tests run as a user does
/// (`integration_tests::example_binary`): built here, with the same command
/// the tests use, so the tests find them built and the build is not timed
/// as a test.
const EXAMPLE_BINARIES: &[(&str, &str)] = &[
    ("producer", "producer"),
    ("redshift-manifest", "redshift-manifest"),
];

fn build_example_binaries() -> Result<()> {
    let t = Instant::now();
    for (package, binary) in EXAMPLE_BINARIES {
        let mut build = Command::new(cargo());
        build
            .current_dir(util::root())
            .args(["build", "-p", package, "--bin", binary]);
        say(format!("building an example: {}", util::show(&build)));
        if !util::run_status(&mut build)?.success() {
            bail!("the example binary {binary} does not build");
        }
    }
    say(format!("example binaries built in {}", secs(t.elapsed())));
    Ok(())
}

/// Gives `cmd` the stack's environment, without the caller's AWS profile
/// variables (so nothing reaches real AWS).
pub(crate) fn use_stack_env(cmd: &mut Command, env: &[(&'static str, String)]) {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Brings the stack up, runs `body` with the stack's environment, then
/// stops what it started (unless `keep`), even when `body` fails. The
/// caller holds the stack lock.
pub(crate) fn with_stack(
    mode: &Mode,
    keep: bool,
    body: impl FnOnce(&[(&'static str, String)]) -> Result<()>,
) -> Result<()> {
    let up = stack::up(mode)?;
    up.state.print_routes();
    let result = up.state.env_vars().and_then(|env| body(&env));

    if keep {
        say("--keep: the stack stays up; `cargo xtask stack down` stops it");
        return result;
    }
    if up.started.is_empty() {
        say(
            "every service was running before this run: left running (`cargo xtask stack down` stops them)",
        );
    } else {
        let names: Vec<&str> = up.started.iter().map(|k| k.name()).collect();
        say(format!(
            "stopping what this run started: {}",
            names.join(", ")
        ));
    }
    if let Err(e) = stack::release(&up) {
        // A failed stop must not hide a failure of the body, but is an error of its own.
        return result.and(Err(e));
    }
    result
}
