//! `cargo xtask stack up | down | status | env`: the local AWS stack.
//!
//! Every service runs as its own process group on a free 127.0.0.1 port,
//! outlives the xtask, logs to `target/stack/logs/` and is recorded in
//! `target/stack/state.json` so that `down` stops exactly what `up` started.
//!
//! This module holds the commands and the types they share; `plan` decides
//! what runs and where requests go, `state` records it, `process` starts and
//! stops processes, `probe` asks them whether they answer, and one module per
//! service knows how to start it.

mod kinesalite;
mod kinesis_local;
mod localstack;
mod lock;
mod moto;
mod plan;
mod postgres;
mod probe;
mod process;
mod redis;
mod state;

use std::fmt::Write as _;
use std::fs;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

pub(crate) use self::lock::lock;
use self::state::{Routes, State, state_path};
use crate::util::{self, say, secs};

/// AWS region the stack and the tests use.
pub(crate) const REGION: &str = "us-east-1";

/// Dummy credentials the emulators accept.
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "test";

/// The PostgreSQL database created for tests.
const TEST_DATABASE: &str = "kc_test";

/// Which stack `up` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// kinesis-local, moto, PostgreSQL and redis on this machine.
    Embedded,
    /// LocalStack started on this machine (no Docker), plus moto for DynamoDB.
    LocalStackHost,
    /// A LocalStack that already runs at this URL (e.g. Docker on a laptop).
    LocalStackUrl(String),
    /// `cargo xtask bench`: kinesalite (a Kinesis fast enough not to be the
    /// bottleneck), moto for S3 and redis.
    Bench,
}

impl Mode {
    /// The value of `KC_STACK` for this mode.
    fn kc_stack(&self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::LocalStackHost | Mode::LocalStackUrl(_) => "localstack",
            Mode::Bench => "bench",
        }
    }

    fn describe(&self) -> String {
        match self {
            Mode::Embedded => "embedded (kinesis-local, moto, PostgreSQL, redis)".to_owned(),
            Mode::LocalStackHost => "LocalStack on the host (+ moto, PostgreSQL, redis)".to_owned(),
            Mode::LocalStackUrl(url) => {
                format!("external LocalStack at {url} (+ PostgreSQL, redis)")
            }
            Mode::Bench => "bench (kinesalite, moto, redis)".to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Mode::Embedded => json!({ "kind": "embedded" }),
            Mode::LocalStackHost => json!({ "kind": "localstack-host" }),
            Mode::LocalStackUrl(url) => json!({ "kind": "localstack-url", "url": url }),
            Mode::Bench => json!({ "kind": "bench" }),
        }
    }

    fn from_json(v: &Value) -> Result<Self> {
        match v["kind"].as_str() {
            Some("embedded") => Ok(Mode::Embedded),
            Some("localstack-host") => Ok(Mode::LocalStackHost),
            Some("bench") => Ok(Mode::Bench),
            Some("localstack-url") => Ok(Mode::LocalStackUrl(
                v["url"]
                    .as_str()
                    .context("state: localstack-url without url")?
                    .to_owned(),
            )),
            other => bail!("state: unknown mode {other:?}"),
        }
    }
}

/// The services the stack can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// kinesis-local (kinesis-mock), for Kinesis.
    Kinesis,
    /// moto server, for S3 and DynamoDB.
    Moto,
    /// A throwaway PostgreSQL cluster.
    Postgres,
    /// redis-server.
    Redis,
    /// LocalStack started on the host.
    LocalStack,
    /// kinesalite, the fast Kinesis of `cargo xtask bench`.
    Kinesalite,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::LocalStack,
        Kind::Kinesis,
        Kind::Kinesalite,
        Kind::Moto,
        Kind::Postgres,
        Kind::Redis,
    ];

    /// Name used in the state file, in messages and for log files.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Kinesis => "kinesis-local",
            Kind::Moto => "moto",
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::LocalStack => "localstack",
            Kind::Kinesalite => "kinesalite",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What `up` did.
pub(crate) struct Up {
    /// The running stack.
    pub(crate) state: State,
    /// The services this call started (the others were already running).
    pub(crate) started: Vec<Kind>,
    /// The mode, routes and notes recorded before this call, if a stack ran.
    previous: Option<(Mode, Routes, Vec<String>)>,
}

/// Starts (or reuses) the stack for `mode` and records it.
pub(crate) fn up(mode: &Mode) -> Result<Up> {
    let total = Instant::now();
    fs::create_dir_all(util::logs_dir())
        .with_context(|| format!("creating {}", util::logs_dir().display()))?;
    process::write_preload()?;
    let (desired, available) = plan::plan(mode)?;
    let previous = State::load()?;
    let before = previous
        .as_ref()
        .map(|p| (p.mode.clone(), p.routes.clone(), p.notes.clone()));
    let mut state = State {
        mode: mode.clone(),
        services: Vec::new(),
        routes: Routes::default(),
        notes: Vec::new(),
    };
    // Ports of services being restarted: reused when still free, so that an
    // environment exported earlier keeps working.
    let mut old_ports: Vec<(Kind, u16)> = Vec::new();
    if let Some(prev) = previous {
        for svc in prev.services {
            if !desired.contains(&svc.kind) {
                // Left running (and recorded) for the mode that started it;
                // `stack down` stops it.
                if svc.alive() {
                    say(format!(
                        "{} (pid {}) is not used by this mode: left running",
                        svc.kind.name(),
                        svc.pid
                    ));
                    state.services.push(svc);
                }
            } else if svc.alive() && probe::answers(&svc) {
                say(format!(
                    "reusing {} (pid {}, port {})",
                    svc.kind.name(),
                    svc.pid,
                    svc.port
                ));
                state.services.push(svc);
            } else {
                if svc.alive() {
                    say(format!(
                        "{} (pid {}) does not answer: restarting it",
                        svc.kind.name(),
                        svc.pid
                    ));
                    process::stop(&svc);
                } else {
                    say(format!(
                        "{} (pid {}) is dead: restarting it",
                        svc.kind.name(),
                        svc.pid
                    ));
                }
                if let Some(dir) = &svc.data_dir {
                    postgres::remove_pg_data(dir);
                }
                old_ports.push((svc.kind, svc.port));
            }
        }
    }
    let to_start: Vec<Kind> = desired
        .iter()
        .copied()
        .filter(|k| state.get(*k).is_none())
        .collect();
    process::install_all(&to_start)?;
    let mut started = Vec::new();
    for kind in &to_start {
        let t = Instant::now();
        say(format!("starting {} …", kind.name()));
        let preferred = old_ports.iter().find(|(k, _)| k == kind).map(|(_, p)| *p);
        match process::start(*kind, preferred) {
            Ok(svc) => {
                say(format!(
                    "{} is up: pid {}, port {} ({}; log {})",
                    kind.name(),
                    svc.pid,
                    svc.port,
                    secs(t.elapsed()),
                    svc.log.display()
                ));
                state.services.push(svc);
                started.push(*kind);
                state.save()?;
            }
            Err(e) => {
                say(format!(
                    "{} failed to start; stopping what this run started",
                    kind.name()
                ));
                for svc in state.services.iter().filter(|s| started.contains(&s.kind)) {
                    process::stop(svc);
                }
                state.services.retain(|s| !started.contains(&s.kind));
                if state.services.is_empty() {
                    let _ = fs::remove_file(state_path());
                } else {
                    // What still runs belongs to the stack recorded before.
                    if let Some((mode, routes, notes)) = &before {
                        state.mode = mode.clone();
                        state.routes = routes.clone();
                        state.notes = notes.clone();
                    }
                    state.save()?;
                }
                return Err(e.context(format!("starting {}", kind.name())));
            }
        }
    }
    plan::route(&mut state, &available)?;
    state.save()?;
    say(format!(
        "stack ready in {} (state: {})",
        secs(total.elapsed()),
        state_path().display()
    ));
    Ok(Up {
        state,
        started,
        previous: before,
    })
}

/// Stops the services of `kinds` recorded in the state file and forgets them.
pub(crate) fn stop_kinds(kinds: &[Kind]) -> Result<()> {
    let Some(mut state) = State::load()? else {
        return Ok(());
    };
    let mut failed = Vec::new();
    for svc in state
        .services
        .iter()
        .rev()
        .filter(|s| kinds.contains(&s.kind))
    {
        let t = Instant::now();
        if process::stop(svc) {
            say(format!(
                "stopped {} (pid {}) in {}",
                svc.kind.name(),
                svc.pid,
                secs(t.elapsed())
            ));
        } else {
            failed.push(format!("{} (pid {})", svc.kind.name(), svc.pid));
        }
    }
    state.services.retain(|s| !kinds.contains(&s.kind));
    if state.services.is_empty() {
        let _ = fs::remove_file(state_path());
    } else {
        state.save()?;
    }
    if !failed.is_empty() {
        bail!("could not stop {}", failed.join(", "));
    }
    Ok(())
}

/// Ends a run of `up`: stops the services it started and, when a stack ran
/// before it, records that stack's mode and routes again.
pub(crate) fn release(up: &Up) -> Result<()> {
    let stopped = stop_kinds(&up.started);
    if let Some((mode, routes, notes)) = &up.previous
        && let Some(mut state) = State::load()?
    {
        state.mode = mode.clone();
        state.routes = routes.clone();
        state.notes = notes.clone();
        state.save()?;
    }
    stopped
}

/// `stack down`: stops every recorded service.
pub(crate) fn down() -> Result<()> {
    let Some(state) = State::load()? else {
        say(format!(
            "no stack is recorded ({} does not exist): nothing to stop",
            state_path().display()
        ));
        return Ok(());
    };
    let kinds: Vec<Kind> = state.services.iter().map(|s| s.kind).collect();
    stop_kinds(&kinds)?;
    say("stack is down");
    Ok(())
}

/// `stack status`: prints each recorded service, its pid, port and health.
pub(crate) fn status() -> Result<bool> {
    let Some(state) = State::load()? else {
        say("no stack is recorded: run `cargo xtask stack up`");
        return Ok(false);
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "stack: {} (state {})",
        state.mode.describe(),
        state_path().display()
    );
    let _ = writeln!(out, "{:<14} {:>8} {:>6}  status", "service", "pid", "port");
    let mut healthy = true;
    for svc in &state.services {
        let status = if !svc.alive() {
            healthy = false;
            "dead"
        } else if probe::answers(svc) {
            "alive"
        } else {
            healthy = false;
            "alive, not answering"
        };
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>6}  {status}",
            svc.kind.name(),
            svc.pid,
            svc.port
        );
    }
    print!("{out}");
    state.print_routes();
    Ok(healthy)
}

/// The state of a running stack whose services are all alive.
pub(crate) fn running() -> Result<State> {
    let state = State::load()?
        .ok_or_else(|| anyhow!("the stack is not running: run `cargo xtask stack up`"))?;
    let dead: Vec<&str> = state
        .services
        .iter()
        .filter(|s| !s.alive())
        .map(|s| s.kind.name())
        .collect();
    if state.routes.kinesis.is_empty()
        || state.routes.s3.is_empty()
        || state.routes.dynamodb.is_empty()
    {
        bail!("the stack is incomplete (its start was interrupted): run `cargo xtask stack up`");
    }
    if !dead.is_empty() {
        bail!(
            "the stack is not healthy ({} dead): run `cargo xtask stack up` to restart it",
            dead.join(", ")
        );
    }
    Ok(state)
}

/// `stack env`: prints `export VAR=value` lines for a shell's `eval`.
pub(crate) fn env() -> Result<()> {
    let state = running()?;
    let mut out = String::new();
    for (k, v) in state.env_vars()? {
        let _ = writeln!(out, "export {k}={}", shell_quote(&v));
    }
    print!("{out}");
    Ok(())
}

fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("http://127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
