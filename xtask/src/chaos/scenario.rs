//! One fault scenario from start to verdict: a driver producing events and
//! counting them at the sink, a consumer (or several workers sharing the
//! stream) reaching one service through a proxy (or carrying its own
//! fault), the fault, the recovery, the count.
//!
//! Timeline: warm up until events arrive (and, with several workers, until
//! they split the shards) → fault → wait until every event produced before
//! the fault ended is delivered (the time to recover) → with several
//! workers, go on producing until the spread was watched long enough →
//! stop producing → wait until every event is delivered (or the drain
//! limit passes) → settle 2 s (late duplicates) → count.

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::Proc;
use super::proxy::{self, Proxy};
use super::{emitters, kills, leases, outages};
use crate::util::{say, secs};

/// A service the consumer can be made to reach through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    S3,
    Redis,
    Postgres,
    Kinesis,
}

impl Service {
    /// The variable of the stack's environment holding its endpoint.
    fn var(self) -> &'static str {
        match self {
            Service::S3 => "AWS_ENDPOINT_URL_S3",
            Service::Redis => "REDIS_URL",
            Service::Postgres => "DATABASE_URL",
            Service::Kinesis => "AWS_ENDPOINT_URL_KINESIS",
        }
    }
}

/// Where the pipeline under test delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// S3 objects of JSON lines (`S3Emitter`).
    S3,
    /// PostgreSQL rows (`RedshiftBasicEmitter` + `PostgresLoader`).
    Postgres,
}

/// What goes wrong.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// The proxy in front of `service` is in `mode` for `length`.
    Proxy {
        service: Service,
        mode: proxy::Mode,
        length: Duration,
    },
    /// The consumer's own emitter misbehaves (flags of `consume`); the
    /// consumer reports when its fault window ends, at most `within` after
    /// it started, and usually `expected` after it started.
    Emitter {
        flags: Vec<(&'static str, String)>,
        within: Duration,
        expected: Duration,
    },
    /// `count` times: SIGKILL the consumer after a random
    /// `min_gap..max_gap`, start it again with the same checkpoints.
    Kills {
        count: u32,
        min_gap: Duration,
        max_gap: Duration,
    },
    /// `workers` consumers share a stream of `shards` shards through
    /// leases in Redis expiring after `failover`; the proxy in front of
    /// Redis is in `mode` for `length`.
    Leases {
        workers: usize,
        shards: u32,
        failover: Duration,
        mode: proxy::Mode,
        length: Duration,
    },
}

impl Fault {
    /// The service the consumers reach through the proxy, if any.
    fn proxied(&self) -> Option<Service> {
        match self {
            Fault::Proxy { service, .. } => Some(*service),
            Fault::Leases { .. } => Some(Service::Redis),
            Fault::Emitter { .. } | Fault::Kills { .. } => None,
        }
    }
}

/// One scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Short name: names, log files, the command-line filter.
    pub(crate) slug: &'static str,
    /// The first column of the table.
    pub(crate) title: String,
    pub(crate) sink: Sink,
    pub(crate) fault: Fault,
    /// Extra flags of `consume` (timeouts).
    pub(crate) consumer_flags: Vec<(&'static str, String)>,
}

impl Scenario {
    /// A rough length of the scenario, to share them out between lanes:
    /// until the fault ends, plus about 12 s of start, recovery and counting
    /// (with several workers: 10 s more to split the shards, and the
    /// watch of the spread after the fault).
    pub(crate) fn estimate(&self) -> Duration {
        let fault = match &self.fault {
            Fault::Proxy { length, .. } => *length,
            Fault::Emitter { expected, .. } => *expected,
            Fault::Kills {
                count,
                min_gap,
                max_gap,
            } => (*min_gap + *max_gap) / 2 * *count,
            Fault::Leases { length, .. } => *length + leases::WATCH + Duration::from_secs(10),
        };
        fault + Duration::from_secs(12)
    }
}

/// What every scenario shares.
pub(crate) struct Harness {
    /// The `chaos-pipeline` binary.
    pub(crate) binary: PathBuf,
    /// The stack's environment (the real endpoints).
    pub(crate) env: Vec<(&'static str, String)>,
    /// Names every stream, bucket and table of this run.
    pub(crate) run: String,
    /// Where the processes' logs go.
    pub(crate) logs: PathBuf,
    /// Events per second per scenario.
    pub(crate) rate: u64,
}

/// Whether the consumer healed by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovered {
    Yes,
    No,
    /// Restarting is the scenario (kill -9).
    Restarted(u32),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) title: String,
    pub(crate) events: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) recovered: Recovered,
    pub(crate) time_to_recover: Option<Duration>,
    pub(crate) pass: bool,
    /// With several workers: how the shards were spread after the fault.
    pub(crate) spread: Option<String>,
    pub(crate) notes: String,
    pub(crate) took: Duration,
}

impl Row {
    /// The row of a scenario that could not run to its end.
    pub(crate) fn not_run(title: &str, notes: String) -> Self {
        Self {
            title: title.to_owned(),
            events: 0,
            lost: 0,
            duplicated: 0,
            recovered: Recovered::No,
            time_to_recover: None,
            pass: false,
            spread: None,
            notes,
            took: Duration::ZERO,
        }
    }
}

/// Events delivered in a row before the fault starts: the pipeline runs.
const WARM_EVENTS: u64 = 100;
/// Bound of the driver's setup and of the warm-up.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long after the fault ended the consumer may take to deliver every
/// event produced until then. Its restart backoff is capped at 4 s (8 s
/// with jitter) and its emit retries take about 1 s, so a healthy recovery
/// takes seconds plus the catch-up of the backlog (over 1,000 events/s).
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// How long the recovery is waited for, beyond the bound, so the table
/// shows how late a late one was.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// Bound of the delivery of the last events after producing stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Producing goes on this long after the recovery, so the healed pipeline
/// also carries fresh traffic.
const AFTER_RECOVERY: Duration = Duration::from_secs(2);
/// Counting goes on this long after the last event arrived, so late
/// duplicates are counted too.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a graceful stop may take.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What the driver last printed.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    produced: u64,
    producing: bool,
    rows: u64,
    distinct: u64,
    prefix: u64,
}

fn counts(driver: &Proc) -> Option<(Instant, Counts)> {
    let (at, v) = driver.last_with("produced")?;
    let n = |k: &str| v[k].as_u64().unwrap_or_default();
    Some((
        at,
        Counts {
            produced: n("produced"),
            producing: v["producing"].as_bool().unwrap_or(true),
            rows: n("rows"),
            distinct: n("distinct"),
            prefix: n("prefix"),
        },
    ))
}

/// Runs `scenario`; an error of the harness itself is a failed row too.
pub(crate) fn run(ctx: &Harness, scenario: &Scenario) -> Row {
    let started = Instant::now();
    let tag = format!("[{}]", scenario.slug);
    say(format!("{tag} {}", scenario.title));
    let mut row = run_inner(ctx, scenario, &tag)
        .unwrap_or_else(|e| Row::not_run(&scenario.title, format!("{e:#}")));
    row.took = started.elapsed();
    say(format!(
        "{tag} {} in {}: {} events, {} lost, {} duplicated{}",
        if row.pass { "pass" } else { "FAIL" },
        secs(row.took),
        row.events,
        row.lost,
        row.duplicated,
        if row.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", row.notes.lines().next().unwrap_or_default())
        }
    ));
    row
}

/// The pieces of a URL such as `postgres://user@host:port/db`, to point it
/// at the proxy.
fn endpoint(url: &str) -> Result<(String, Option<String>, std::net::SocketAddr, String)> {
    let (scheme, rest) = url.split_once("://").context("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, hp)) => (Some(user.to_owned()), hp),
        None => (None, authority),
    };
    let (host, port) = host_port.rsplit_once(':').context("no port")?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let addr = format!("{host}:{port}")
        .parse()
        .with_context(|| format!("`{url}` is not on an IP address"))?;
    Ok((scheme.to_owned(), user, addr, path.to_owned()))
}

/// `url` with its host and port replaced by the proxy's.
fn through_proxy(url: &str, port: u16) -> Result<String> {
    let (scheme, user, _, path) = endpoint(url)?;
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    Ok(format!("{scheme}://{user}127.0.0.1:{port}{path}"))
}

/// Names, flags and environments of a scenario's processes.
pub(super) struct Plan<'a> {
    ctx: &'a Harness,
    scenario: &'a Scenario,
    stream: String,
    table: String,
    consumer_env: Vec<(&'static str, String)>,
}

impl Plan<'_> {
    fn common(&self, cmd: &mut Command) {
        let sink = match self.scenario.sink {
            Sink::S3 => "s3",
            Sink::Postgres => "postgres",
        };
        cmd.args(["--stream", &self.stream, "--sink", sink])
            .args(["--bucket", &format!("chaos-{}", self.ctx.run)])
            .args(["--prefix", self.scenario.slug]);
        if self.scenario.sink == Sink::Postgres {
            cmd.args(["--table", &self.table]);
        }
    }

    fn env(cmd: &mut Command, env: &[(&'static str, String)]) {
        crate::it::use_stack_env(cmd, env);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env(
                "RUST_LOG",
                "info,aws_config=warn,aws_smithy_runtime=warn,sqlx=warn",
            );
        }
    }

    fn driver(&self) -> Result<Proc> {
        let mut cmd = Command::new(&self.ctx.binary);
        cmd.arg("drive");
        self.common(&mut cmd);
        cmd.args(["--rate", &self.ctx.rate.to_string()]);
        if let Fault::Leases { shards, .. } = &self.scenario.fault {
            cmd.args(["--shards", &shards.to_string()]);
        }
        Self::env(&mut cmd, &self.ctx.env);
        let log = self
            .ctx
            .logs
            .join(format!("{}-driver.log", self.scenario.slug));
        Proc::spawn("driver", cmd, &log)
    }

    /// The scenario's consumer (the only one: not for several workers).
    pub(super) fn consumer(&self) -> Result<Proc> {
        let fault_flags = match &self.scenario.fault {
            Fault::Emitter { flags, .. } => flags.clone(),
            _ => Vec::new(),
        };
        self.consume("consumer", &fault_flags)
    }

    /// Every consumer of the scenario: the one, or each worker.
    fn consumers(&self) -> Result<Vec<Proc>> {
        match &self.scenario.fault {
            Fault::Leases {
                workers, failover, ..
            } => (1..=*workers)
                .map(|n| self.consume(&format!("worker-{n}"), &leases::worker_flags(n, *failover)))
                .collect(),
            _ => Ok(vec![self.consumer()?]),
        }
    }

    /// Starts `chaos-pipeline consume` named `name` (and its log) with
    /// the scenario's flags and `extra`.
    fn consume(&self, name: &str, extra: &[(&'static str, String)]) -> Result<Proc> {
        let mut cmd = Command::new(&self.ctx.binary);
        cmd.arg("consume");
        self.common(&mut cmd);
        cmd.args(["--app", &self.stream]);
        for (flag, value) in self.scenario.consumer_flags.iter().chain(extra) {
            cmd.arg(format!("--{flag}")).arg(value);
        }
        Self::env(&mut cmd, &self.consumer_env);
        let log = self
            .ctx
            .logs
            .join(format!("{}-{name}.log", self.scenario.slug));
        Proc::spawn(name, cmd, &log)
    }
}

fn run_inner(ctx: &Harness, scenario: &Scenario, tag: &str) -> Result<Row> {
    let mut notes: Vec<String> = Vec::new();
    let proxy = match scenario.fault.proxied() {
        Some(service) => {
            let url = env_value(&ctx.env, service.var())?;
            let (_, _, upstream, _) = endpoint(&url)?;
            Some((service, Proxy::start(upstream)?))
        }
        None => None,
    };
    let mut consumer_env = ctx.env.clone();
    if let Some((service, proxy)) = &proxy {
        for (name, value) in &mut consumer_env {
            if *name == service.var() {
                *value = through_proxy(value, proxy.port())?;
            }
        }
    }
    let plan = Plan {
        ctx,
        scenario,
        stream: format!("chaos-{}-{}", scenario.slug, ctx.run),
        table: format!("chaos_{}_{}", scenario.slug.replace('-', "_"), ctx.run),
        consumer_env,
    };

    let mut driver = plan.driver()?;
    if driver
        .wait_for(START_LIMIT, |d| d.last_with("ready").is_some())?
        .is_none()
    {
        bail!("the driver was not ready within {}", secs(START_LIMIT));
    }
    let mut consumers = plan.consumers()?;
    let consumers_started = Instant::now();
    let warm = wait_both(&mut driver, &mut consumers, START_LIMIT, |c| {
        c.prefix >= WARM_EVENTS
    })?;
    if warm.is_none() {
        bail!(
            "no {WARM_EVENTS} events delivered within {} of the start, before any fault",
            secs(START_LIMIT)
        );
    }
    if let Fault::Leases { shards, .. } = &scenario.fault
        && !leases::wait_spread(&mut consumers, *shards, START_LIMIT)?
    {
        bail!(
            "the workers did not split the shards within {}, before any fault",
            secs(START_LIMIT)
        );
    }
    say(format!("{tag} delivering; injecting the fault"));

    // The fault; `fault_end` is when the service (or emitter) behaved again.
    let mut restarts = 0;
    let fault_end = match &scenario.fault {
        Fault::Proxy { mode, length, .. } | Fault::Leases { mode, length, .. } => {
            let Some((_, proxy)) = &proxy else {
                bail!("a proxy fault without a proxy");
            };
            let end = outages::inject(proxy, *mode, *length, &mut driver, &mut consumers)?;
            if let Some(error) = proxy.error() {
                notes.push(format!("proxy: {error}"));
            }
            end
        }
        Fault::Emitter { within, .. } => emitters::window_end(
            only(&mut consumers)?,
            within.saturating_sub(consumers_started.elapsed()),
        )?,
        Fault::Kills {
            count,
            min_gap,
            max_gap,
        } => {
            let end = kills::kill_loop(
                &plan,
                &mut driver,
                only(&mut consumers)?,
                *count,
                (*min_gap, *max_gap),
                tag,
            )?;
            restarts = *count;
            end
        }
    };
    // The first count after the fault's end: everything produced by then
    // must arrive (a later count, so the time to recover errs long).
    driver.wait_for(Duration::from_secs(10), |d| {
        counts(d).is_some_and(|(at, _)| at > fault_end)
    })?;
    let Some((_, at_end)) = counts(&driver) else {
        bail!("the driver printed no counts");
    };
    say(format!(
        "{tag} fault over; waiting for the {} events produced so far",
        at_end.produced
    ));

    let recovered_at = wait_both(&mut driver, &mut consumers, RECOVERY_LIMIT, |c| {
        c.prefix >= at_end.produced
    })?;
    let time_to_recover = recovered_at.map(|at| at.saturating_duration_since(fault_end));
    match time_to_recover {
        None => notes.push(format!(
            "not recovered within {} of the fault's end",
            secs(RECOVERY_LIMIT)
        )),
        Some(took) if took > RECOVERY_BOUND => notes.push(format!(
            "recovered {} after the fault's end: over the {} bound",
            secs(took),
            secs(RECOVERY_BOUND)
        )),
        Some(_) => {}
    }
    if recovered_at.is_some() {
        let watch = match scenario.fault {
            Fault::Leases { .. } => {
                (fault_end + leases::WATCH).saturating_duration_since(Instant::now())
            }
            _ => Duration::ZERO,
        };
        run_on(&mut driver, &mut consumers, AFTER_RECOVERY.max(watch))?;
    }

    driver.send("stop")?;
    driver
        .wait_for(Duration::from_secs(30), |d| {
            counts(d).is_some_and(|(_, c)| !c.producing)
        })?
        .context("the driver did not stop producing")?;
    let events = counts(&driver).map(|(_, c)| c.produced).unwrap_or_default();
    let drained = wait_both(&mut driver, &mut consumers, DRAIN_LIMIT, |c| {
        c.distinct >= events
    })?;
    if drained.is_none() {
        notes.push(format!(
            "events still missing {} after producing stopped",
            secs(DRAIN_LIMIT)
        ));
    }
    let settled = Instant::now() + SETTLE;
    driver.wait_for(SETTLE * 3, |d| {
        counts(d).is_some_and(|(at, _)| at > settled)
    })?;
    let last = counts(&driver).map(|(_, c)| c).unwrap_or_default();

    let spread = match &scenario.fault {
        Fault::Leases { shards, .. } => Some(leases::spread(&consumers, *shards, fault_end)),
        _ => None,
    };
    let spread_ok = spread.as_ref().is_none_or(|s| s.problems.is_empty());
    if let Some(spread) = &spread {
        notes.extend(spread.problems.iter().cloned());
    }
    let alive = stop_consumers(&mut consumers, &mut notes);
    if restarts > 0 {
        notes.push(format!("killed {restarts}×"));
    }
    if let Some((_, proxy)) = &proxy {
        notes.push(format!("{} proxied connections", proxy.accepted()));
    }
    driver.stop(Duration::from_secs(10));

    let lost = events.saturating_sub(last.distinct);
    let recovered = match (&scenario.fault, alive, recovered_at) {
        (Fault::Kills { .. }, _, _) => Recovered::Restarted(restarts),
        (_, true, Some(_)) => Recovered::Yes,
        _ => Recovered::No,
    };
    let in_time = time_to_recover.is_some_and(|took| took <= RECOVERY_BOUND);
    let pass = lost == 0 && recovered != Recovered::No && in_time && spread_ok;
    Ok(Row {
        title: scenario.title.clone(),
        events,
        lost,
        duplicated: last.rows.saturating_sub(last.distinct),
        recovered,
        time_to_recover,
        pass,
        spread: spread.map(|s| s.cell),
        notes: notes.join("; "),
        took: Duration::ZERO,
    })
}

/// The consumer of a scenario that has only one.
fn only(consumers: &mut [Proc]) -> Result<&mut Proc> {
    match consumers {
        [consumer] => Ok(consumer),
        _ => bail!("this fault is for a single consumer"),
    }
}

/// Stops every consumer gracefully, all at once (one stopping first would
/// hand its shards to the others); notes which had exited before, and what
/// their reports say. True when none had exited.
fn stop_consumers(consumers: &mut [Proc], notes: &mut Vec<String>) -> bool {
    let mut alive = true;
    for consumer in consumers.iter_mut() {
        if !consumer.alive() {
            alive = false;
            notes.push(format!("the {} exited", consumer.name()));
        }
    }
    let graceful: Vec<bool> = thread::scope(|scope| {
        let stops: Vec<_> = consumers
            .iter_mut()
            .map(|c| scope.spawn(|| c.stop(STOP_GRACE)))
            .collect();
        stops
            .into_iter()
            .map(|s| s.join().unwrap_or(false))
            .collect()
    });
    let mut failures = 0;
    for (consumer, graceful) in consumers.iter().zip(graceful) {
        match consumer.last_with("report") {
            Some((_, v)) => {
                let report = &v["report"];
                failures += report["shard_failures"].as_u64().unwrap_or_default();
                if let Some(unrecovered) = report["unrecovered"].as_array()
                    && !unrecovered.is_empty()
                {
                    notes.push(format!(
                        "{} unrecovered at shutdown: {unrecovered:?}",
                        consumer.name()
                    ));
                }
            }
            None if alive && !graceful => {
                notes.push(format!("no graceful shutdown of the {}", consumer.name()));
            }
            None => {}
        }
    }
    if failures > 0 {
        notes.push(format!("{failures} shard restart(s)"));
    }
    alive
}

/// Lets every process run for `length`, less when a consumer exited.
fn run_on(driver: &mut Proc, consumers: &mut [Proc], length: Duration) -> Result<()> {
    let until = Instant::now() + length;
    while Instant::now() < until && consumers.iter_mut().all(Proc::alive) {
        driver.check_alive()?;
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits until the driver's counts satisfy `check`, while every process
/// runs; `None` after `limit` or when a consumer exited.
fn wait_both(
    driver: &mut Proc,
    consumers: &mut [Proc],
    limit: Duration,
    check: impl Fn(&Counts) -> bool,
) -> Result<Option<Instant>> {
    let deadline = Instant::now() + limit;
    loop {
        if counts(driver).is_some_and(|(_, c)| check(&c)) {
            return Ok(Some(Instant::now()));
        }
        driver.check_alive()?;
        if !consumers.iter_mut().all(Proc::alive) || Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn env_value(env: &[(&'static str, String)], name: &str) -> Result<String> {
    env.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("the stack's environment has no {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_pointed_at_the_proxy() -> Result<()> {
        assert_eq!(
            through_proxy("postgres://postgres@127.0.0.1:5432/kc_test", 9)?,
            "postgres://postgres@127.0.0.1:9/kc_test"
        );
        assert_eq!(
            through_proxy("redis://127.0.0.1:6379", 9)?,
            "redis://127.0.0.1:9"
        );
        assert_eq!(
            through_proxy("http://localhost:4566", 9)?,
            "http://127.0.0.1:9"
        );
        let (_, _, addr, _) = endpoint("http://127.0.0.1:4566/")?;
        assert_eq!(addr.port(), 4566);
        Ok(())
    }
}
