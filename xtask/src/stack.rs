//! `cargo xtask stack up | down | status | env`: the local AWS stack.
//!
//! Every service runs as its own process group on a free 127.0.0.1 port,
//! outlives the xtask, logs to `target/stack/logs/` and is recorded in
//! `target/stack/state.json` so that `down` stops exactly what `up` started.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::install;
use crate::util::{self, HttpUrl, say, secs};

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
}

impl Mode {
    /// The value of `KC_STACK` for this mode.
    fn kc_stack(&self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::LocalStackHost | Mode::LocalStackUrl(_) => "localstack",
        }
    }

    fn describe(&self) -> String {
        match self {
            Mode::Embedded => "embedded (kinesis-local, moto, PostgreSQL, redis)".to_owned(),
            Mode::LocalStackHost => "LocalStack on the host (+ moto, PostgreSQL, redis)".to_owned(),
            Mode::LocalStackUrl(url) => {
                format!("external LocalStack at {url} (+ PostgreSQL, redis)")
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Mode::Embedded => json!({ "kind": "embedded" }),
            Mode::LocalStackHost => json!({ "kind": "localstack-host" }),
            Mode::LocalStackUrl(url) => json!({ "kind": "localstack-url", "url": url }),
        }
    }

    fn from_json(v: &Value) -> Result<Self> {
        match v["kind"].as_str() {
            Some("embedded") => Ok(Mode::Embedded),
            Some("localstack-host") => Ok(Mode::LocalStackHost),
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
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::LocalStack,
        Kind::Kinesis,
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
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A started service as recorded in the state file.
#[derive(Debug, Clone)]
struct Svc {
    kind: Kind,
    pid: u32,
    /// Process start time (from `/proc`), to tell our process from a reused pid.
    start_time: u64,
    port: u16,
    /// PostgreSQL's data directory.
    data_dir: Option<PathBuf>,
    log: PathBuf,
}

impl Svc {
    fn alive(&self) -> bool {
        util::is_alive(self.pid, self.start_time)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.kind.name(),
            "pid": self.pid,
            "start_time": self.start_time,
            "port": self.port,
            "data_dir": self.data_dir.as_ref().map(|d| d.display().to_string()),
            "log": self.log.display().to_string(),
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let name = v["name"].as_str().context("state: service without name")?;
        let int = |key: &str| {
            v[key]
                .as_u64()
                .with_context(|| format!("state: {name} without {key}"))
        };
        Ok(Svc {
            kind: Kind::from_name(name)
                .with_context(|| format!("state: unknown service {name}"))?,
            pid: u32::try_from(int("pid")?)?,
            start_time: int("start_time")?,
            port: u16::try_from(int("port")?)?,
            data_dir: v["data_dir"].as_str().map(PathBuf::from),
            log: PathBuf::from(v["log"].as_str().unwrap_or_default()),
        })
    }
}

/// Which endpoint serves each AWS service.
#[derive(Debug, Clone, Default)]
struct Routes {
    default: String,
    kinesis: String,
    s3: String,
    dynamodb: String,
}

/// What `target/stack/state.json` holds.
#[derive(Debug, Clone)]
pub(crate) struct State {
    mode: Mode,
    services: Vec<Svc>,
    routes: Routes,
    notes: Vec<String>,
}

fn state_path() -> PathBuf {
    util::stack_dir().join("state.json")
}

impl State {
    fn load() -> Result<Option<State>> {
        let path = state_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let services = v["services"]
            .as_array()
            .map(|a| a.iter().map(Svc::from_json).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        let route = |k: &str| v["routes"][k].as_str().unwrap_or_default().to_owned();
        Ok(Some(State {
            mode: Mode::from_json(&v["mode"])?,
            services,
            routes: Routes {
                default: route("default"),
                kinesis: route("kinesis"),
                s3: route("s3"),
                dynamodb: route("dynamodb"),
            },
            notes: v["notes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    fn save(&self) -> Result<()> {
        let v = json!({
            "mode": self.mode.to_json(),
            "services": self.services.iter().map(Svc::to_json).collect::<Vec<_>>(),
            "routes": {
                "default": self.routes.default,
                "kinesis": self.routes.kinesis,
                "s3": self.routes.s3,
                "dynamodb": self.routes.dynamodb,
            },
            "notes": self.notes,
        });
        let path = state_path();
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    fn get(&self, kind: Kind) -> Option<&Svc> {
        self.services.iter().find(|s| s.kind == kind)
    }

    /// The environment variables the tests read, in `export` order.
    pub(crate) fn env_vars(&self) -> Result<Vec<(&'static str, String)>> {
        let pg = self
            .get(Kind::Postgres)
            .context("the stack has no postgres")?;
        let redis = self.get(Kind::Redis).context("the stack has no redis")?;
        let mut vars = vec![
            ("KC_STACK", self.mode.kc_stack().to_owned()),
            ("AWS_ENDPOINT_URL", self.routes.default.clone()),
            ("AWS_ENDPOINT_URL_KINESIS", self.routes.kinesis.clone()),
            ("AWS_ENDPOINT_URL_S3", self.routes.s3.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.routes.dynamodb.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)),
            (
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{}/{TEST_DATABASE}", pg.port),
            ),
        ];
        match &self.mode {
            Mode::Embedded => {}
            Mode::LocalStackHost | Mode::LocalStackUrl(_) => {
                vars.push(("KC_LOCALSTACK_URL", self.routes.default.clone()));
            }
        }
        Ok(vars)
    }

    /// Prints where each AWS service goes and why.
    pub(crate) fn print_routes(&self) {
        say(format!("stack: {}", self.mode.describe()));
        say(format!("  Kinesis  → {}", self.routes.kinesis));
        say(format!("  S3       → {}", self.routes.s3));
        say(format!("  DynamoDB → {}", self.routes.dynamodb));
        for note in &self.notes {
            say(format!("  note: {note}"));
        }
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

/// An exclusive lock on the stack of this workspace (`target/stack/.lock`),
/// held while the stack is changed and for a whole `cargo xtask it`, so that
/// two runs sharing a target directory do not stop each other's services.
pub(crate) struct StackLock {
    _file: File,
}

/// Takes the stack lock, waiting (and saying so) while another run holds it.
pub(crate) fn lock() -> Result<StackLock> {
    let dir = util::stack_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let t = Instant::now();
            say(format!(
                "another `cargo xtask` run uses the stack of this workspace (lock {}): waiting …",
                path.display()
            ));
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
            say(format!("got the stack lock after {}", secs(t.elapsed())));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(StackLock { _file: file })
}

/// The services `mode` needs, plus what an external LocalStack serves.
fn plan(mode: &Mode) -> Result<(Vec<Kind>, Vec<String>)> {
    match mode {
        Mode::Embedded => Ok((
            vec![Kind::Kinesis, Kind::Moto, Kind::Postgres, Kind::Redis],
            Vec::new(),
        )),
        Mode::LocalStackHost => Ok((
            vec![Kind::LocalStack, Kind::Moto, Kind::Postgres, Kind::Redis],
            Vec::new(),
        )),
        Mode::LocalStackUrl(url) => {
            let available = usable_localstack_services(url)?;
            let mut kinds = Vec::new();
            if !available.iter().any(|s| s == "kinesis") {
                kinds.push(Kind::Kinesis);
            }
            if !available.iter().any(|s| s == "s3") || !available.iter().any(|s| s == "dynamodb") {
                kinds.push(Kind::Moto);
            }
            kinds.extend([Kind::Postgres, Kind::Redis]);
            Ok((kinds, available))
        }
    }
}

/// The fake SigV4 `Authorization` header LocalStack routes a request by.
fn fake_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0000"
    )
}

/// One cheap real request to `service` (`kinesis`, `s3` or `dynamodb`) of a LocalStack.
fn probe(url: &HttpUrl, service: &str) -> std::result::Result<(), String> {
    let auth = fake_auth(service);
    let (method, target, content_type, body, timeout) = match service {
        // The first Kinesis call installs and starts kinesis-local.
        "kinesis" => (
            "POST",
            Some("Kinesis_20131202.ListStreams"),
            "application/x-amz-json-1.1",
            "{}",
            240,
        ),
        "dynamodb" => (
            "POST",
            Some("DynamoDB_20120810.ListTables"),
            "application/x-amz-json-1.0",
            "{}",
            120,
        ),
        "s3" => ("GET", None, "application/xml", "", 60),
        other => return Err(format!("no probe for {other}")),
    };
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", content_type),
    ];
    if let Some(target) = target {
        headers.push(("X-Amz-Target", target));
    }
    match util::http(
        url,
        method,
        "/",
        &headers,
        body,
        Duration::from_secs(timeout),
    ) {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => Err(format!(
            "HTTP {code}: {}",
            body.chars().take(160).collect::<String>()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The AWS services of the LocalStack at `url` that the tests can use: those
/// its health reports available and that answer a real request.
fn usable_localstack_services(url: &str) -> Result<Vec<String>> {
    let reported = localstack_services(url)?;
    let parsed = HttpUrl::parse(url)?;
    let wanted: Vec<&str> = ["kinesis", "s3", "dynamodb"]
        .into_iter()
        .filter(|s| reported.iter().any(|r| r == s))
        .collect();
    say(format!(
        "LocalStack at {url} reports {}; checking each with a real request …",
        if wanted.is_empty() {
            "none of kinesis, s3, dynamodb".to_owned()
        } else {
            wanted.join(", ")
        }
    ));
    let results: Vec<(&str, std::result::Result<(), String>)> = thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|&service| {
                let parsed = &parsed;
                scope.spawn(move || (service, probe(parsed, service)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut usable = Vec::new();
    for (service, result) in results {
        match result {
            Ok(()) => usable.push(service.to_owned()),
            Err(why) => say(format!(
                "LocalStack at {url}: {service} is reported available but does not work ({why})"
            )),
        }
    }
    Ok(usable)
}

/// The services a LocalStack reports as available or running at `URL/_localstack/health`.
fn localstack_services(url: &str) -> Result<Vec<String>> {
    let parsed = HttpUrl::parse(url)?;
    let (code, body) = util::http(
        &parsed,
        "GET",
        "/_localstack/health",
        &[],
        "",
        Duration::from_secs(10),
    )
    .with_context(|| format!("no LocalStack answers at {url}"))?;
    if code != 200 {
        bail!("{url}/_localstack/health answered HTTP {code}: {body}");
    }
    let v: Value =
        serde_json::from_str(&body).with_context(|| format!("parsing {url}/_localstack/health"))?;
    let services = v["services"]
        .as_object()
        .context("no `services` in the LocalStack health answer")?;
    Ok(services
        .iter()
        .filter(|(_, status)| matches!(status.as_str(), Some("available" | "running")))
        .map(|(name, _)| name.clone())
        .collect())
}

/// Starts (or reuses) the stack for `mode` and records it.
pub(crate) fn up(mode: &Mode) -> Result<Up> {
    let total = Instant::now();
    fs::create_dir_all(util::logs_dir())
        .with_context(|| format!("creating {}", util::logs_dir().display()))?;
    write_preload()?;
    let (desired, available) = plan(mode)?;
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
            } else if svc.alive() && answers(&svc) {
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
                    stop(&svc);
                } else {
                    say(format!(
                        "{} (pid {}) is dead: restarting it",
                        svc.kind.name(),
                        svc.pid
                    ));
                }
                if let Some(dir) = &svc.data_dir {
                    remove_pg_data(dir);
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
    install_all(&to_start)?;
    let mut started = Vec::new();
    for kind in &to_start {
        let t = Instant::now();
        say(format!("starting {} …", kind.name()));
        let preferred = old_ports.iter().find(|(k, _)| k == kind).map(|(_, p)| *p);
        match start(*kind, preferred) {
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
                    stop(svc);
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
    route(&mut state, &available)?;
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

/// Fills in the endpoint of each AWS service (and notes on fallbacks).
fn route(state: &mut State, available: &[String]) -> Result<()> {
    let url_of = |k: Kind| {
        state
            .get(k)
            .map(Svc::url)
            .with_context(|| format!("{} is not running", k.name()))
    };
    let mut notes = Vec::new();
    let routes = match &state.mode {
        Mode::Embedded => {
            let moto = url_of(Kind::Moto)?;
            Routes {
                default: moto.clone(),
                kinesis: url_of(Kind::Kinesis)?,
                s3: moto.clone(),
                dynamodb: moto,
            }
        }
        Mode::LocalStackHost => {
            let ls = url_of(Kind::LocalStack)?;
            notes.push(
                "DynamoDB goes to moto: the DynamoDB of a LocalStack started on the host does not work here"
                    .to_owned(),
            );
            Routes {
                default: ls.clone(),
                kinesis: ls.clone(),
                s3: ls,
                dynamodb: url_of(Kind::Moto)?,
            }
        }
        Mode::LocalStackUrl(url) => {
            let ls = HttpUrl::parse(url)?.base();
            let mut pick = |svc: &str, fallback: Kind| -> Result<String> {
                if available.iter().any(|a| a == svc) {
                    Ok(ls.clone())
                } else {
                    notes.push(format!(
                        "{svc} goes to {}: the LocalStack at {url} does not serve it \
                         (not available in its health, or a request to it failed)",
                        fallback.name()
                    ));
                    url_of(fallback)
                }
            };
            Routes {
                kinesis: pick("kinesis", Kind::Kinesis)?,
                s3: pick("s3", Kind::Moto)?,
                dynamodb: pick("dynamodb", Kind::Moto)?,
                default: ls.clone(),
            }
        }
    };
    state.routes = routes;
    state.notes = notes;
    Ok(())
}

/// Installs what the services in `kinds` need, in parallel.
fn install_all(kinds: &[Kind]) -> Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|&kind| {
                scope.spawn(move || -> Result<()> {
                    match kind {
                        Kind::Kinesis => install::ensure_kinesis_local(),
                        Kind::Moto => install::ensure_moto(),
                        Kind::Postgres => install::ensure_postgres().map(drop),
                        Kind::Redis => install::ensure_redis().map(drop),
                        Kind::LocalStack => {
                            install::ensure_program("node", "nodejs")?;
                            install::ensure_program("npm", "npm")?;
                            install::ensure_localstack()
                        }
                    }
                    .with_context(|| format!("installing {}", kind.name()))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("an install thread panicked".to_owned()),
            })
            .collect()
    });
    if !errors.is_empty() {
        bail!("could not install the stack:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// Writes the node preload that forces `listen()` onto 127.0.0.1.
fn write_preload() -> Result<PathBuf> {
    let path = preload_path();
    let content = include_str!("preload.js");
    if fs::read_to_string(&path).ok().as_deref() != Some(content) {
        fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

fn preload_path() -> PathBuf {
    util::stack_dir().join("listen-localhost.js")
}

/// Spawns a service in its own process group with its output in `log`.
fn spawn(cmd: &mut Command, log: &Path) -> Result<(u32, u64)> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not run `{}`", util::show(cmd)))?;
    let pid = child.id();
    // The child is not waited for: it outlives the xtask (and is reaped by init).
    drop(child);
    let start_time = util::process_start_time(pid).with_context(|| {
        format!(
            "`{}` exited at once; log:\n{}",
            util::show(cmd),
            util::tail(log, 20)
        )
    })?;
    Ok((pid, start_time))
}

/// Waits until `svc` answers; on failure stops it and shows its log.
fn wait_ready(svc: &Svc, timeout: Duration) -> Result<()> {
    let res = util::wait_until(svc.kind.name(), timeout, || svc.alive(), || answers(svc));
    if let Err(e) = res {
        stop(svc);
        bail!(
            "{e}; last lines of {}:\n{}",
            svc.log.display(),
            util::tail(&svc.log, 25)
        );
    }
    Ok(())
}

/// Starts one service on `preferred` when that port is free, else on a free
/// port, and waits until it answers.
fn start(kind: Kind, preferred: Option<u16>) -> Result<Svc> {
    let log = util::logs_dir().join(format!("{}.log", kind.name()));
    let port = match preferred {
        Some(p) if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
        _ => util::free_port()?,
    };
    match kind {
        Kind::Kinesis => start_kinesis(log, port),
        Kind::Moto => start_moto(log, port),
        Kind::Postgres => start_postgres(log, port),
        Kind::Redis => start_redis(log, port),
        Kind::LocalStack => start_localstack(log, port),
    }
}

/// The `*_DURATION` settings of kinesis-mock, all set to `0ms` so that stream
/// operations complete at once.
const KINESIS_DURATIONS: &[&str] = &[
    "CREATE_STREAM_DURATION",
    "DELETE_STREAM_DURATION",
    "REGISTER_STREAM_CONSUMER_DURATION",
    "DEREGISTER_STREAM_CONSUMER_DURATION",
    "START_STREAM_ENCRYPTION_DURATION",
    "STOP_STREAM_ENCRYPTION_DURATION",
    "MERGE_SHARDS_DURATION",
    "SPLIT_SHARD_DURATION",
    "UPDATE_SHARD_COUNT_DURATION",
    "UPDATE_STREAM_MODE_DURATION",
];

fn start_kinesis(log: PathBuf, port: u16) -> Result<Svc> {
    let pkg = install::kinesis_local_dir();
    let mut tls_port = util::free_port()?;
    while tls_port == port {
        tls_port = util::free_port()?;
    }
    let dir = util::stack_dir().join("kinesis");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("node");
    cmd.arg("--require")
        .arg(preload_path())
        .arg(pkg.join("main.js"))
        .current_dir(&dir)
        .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
        .env("KINESIS_MOCK_TLS_PORT", tls_port.to_string())
        .env("KINESIS_MOCK_CERT_PATH", pkg.join("server.json"))
        .env("AWS_REGION", REGION)
        .env("SHOULD_PERSIST_DATA", "false")
        // The default of 50 shards per account is used up by a few parallel
        // integration tests; real accounts allow far more.
        .env("SHARD_LIMIT", "1000")
        .env("LOG_LEVEL", "WARN");
    for var in KINESIS_DURATIONS {
        cmd.env(var, "0ms");
    }
    let (pid, start_time) = spawn(&mut cmd, &log)?;
    let svc = Svc {
        kind: Kind::Kinesis,
        pid,
        start_time,
        port,
        data_dir: None,
        log,
    };
    wait_ready(&svc, Duration::from_secs(60))?;
    Ok(svc)
}

fn start_moto(log: PathBuf, port: u16) -> Result<Svc> {
    let dir = util::stack_dir().join("moto");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(install::moto_venv().join("bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&dir)
        .env("AWS_DEFAULT_REGION", REGION);
    let (pid, start_time) = spawn(&mut cmd, &log)?;
    let svc = Svc {
        kind: Kind::Moto,
        pid,
        start_time,
        port,
        data_dir: None,
        log,
    };
    wait_ready(&svc, Duration::from_secs(60))?;
    Ok(svc)
}

fn start_redis(log: PathBuf, port: u16) -> Result<Svc> {
    let redis = install::ensure_redis()?;
    let dir = util::stack_dir().join("redis");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(redis);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes", "--logfile", ""])
        .arg("--dir")
        .arg(&dir)
        .current_dir(&dir);
    let (pid, start_time) = spawn(&mut cmd, &log)?;
    let svc = Svc {
        kind: Kind::Redis,
        pid,
        start_time,
        port,
        data_dir: None,
        log,
    };
    wait_ready(&svc, Duration::from_secs(30))?;
    Ok(svc)
}

/// The user PostgreSQL runs as: `postgres` when this process is root (it
/// refuses to run as root), else the current user (`None`).
fn pg_user() -> Result<Option<(u32, u32)>> {
    if util::euid()? != 0 {
        return Ok(None);
    }
    util::user_ids("postgres").map(Some).context(
        "running as root, PostgreSQL must run as another user and there is no `postgres` user: \
         create one (`useradd --system postgres`)",
    )
}

/// Applies the PostgreSQL user to a command.
fn as_pg_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// The folder holding the cluster: `target/stack/pg` when the postgres user can
/// reach it, else a folder under /tmp named after this workspace.
fn pg_base(user: Option<(u32, u32)>) -> Result<PathBuf> {
    let stack = util::stack_dir();
    let preferred = stack.join("pg");
    if user.is_none() {
        return Ok(preferred);
    }
    let reachable = as_pg_user(Command::new("test").arg("-x").arg(&stack), user)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return Ok(preferred);
    }
    let hash = util::fnv1a(stack.to_string_lossy().as_bytes());
    let base = std::env::temp_dir()
        .join(format!("kc-stack-{hash:016x}"))
        .join("pg");
    say(format!(
        "the postgres user cannot reach {}: the cluster lives in {}",
        stack.display(),
        base.display()
    ));
    Ok(base)
}

fn remove_pg_data(dir: &Path) {
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
}

fn start_postgres(log: PathBuf, port: u16) -> Result<Svc> {
    let bin = install::ensure_postgres()?;
    let user = pg_user()?;
    let base = pg_base(user)?;
    let data = base.join("data");
    remove_pg_data(&data);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&base, Some(uid), Some(gid))
            .with_context(|| format!("chown postgres {}", base.display()))?;
    }
    let t = Instant::now();
    let initdb_log = util::logs_dir().join("postgres-initdb.log");
    let _ = fs::remove_file(&initdb_log);
    util::run_logged(
        as_pg_user(&mut Command::new(bin.join("initdb")), user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&base),
        &initdb_log,
    )?;
    say(format!("initdb in {}", secs(t.elapsed())));
    let mut cmd = Command::new(bin.join("postgres"));
    as_pg_user(&mut cmd, user)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=200"])
        .current_dir(&base);
    let (pid, start_time) = spawn(&mut cmd, &log)?;
    let svc = Svc {
        kind: Kind::Postgres,
        pid,
        start_time,
        port,
        data_dir: Some(data),
        log,
    };
    // `answers` checks the test database, which does not exist yet.
    let ready = util::wait_until(
        "postgres",
        Duration::from_secs(60),
        || svc.alive(),
        || pg_isready(port, "postgres"),
    );
    if let Err(e) = ready {
        stop(&svc);
        bail!(
            "{e}; last lines of {}:\n{}",
            svc.log.display(),
            util::tail(&svc.log, 25)
        );
    }
    let created = util::output(
        Command::new(bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                TEST_DATABASE,
            ])
            .env_remove("PGPASSWORD"),
    );
    if let Err(e) = created {
        stop(&svc);
        return Err(e.context("creating the test database"));
    }
    Ok(svc)
}

fn pg_isready(port: u16, db: &str) -> bool {
    let Ok(bin) = install::pg_bin_dir() else {
        return false;
    };
    Command::new(bin.join("pg_isready"))
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-t",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_localstack(log: PathBuf, port: u16) -> Result<Svc> {
    let root = util::stack_dir().join("localstack");
    fs::create_dir_all(&root)?;
    let preload = preload_path();
    let preload = preload.to_string_lossy();
    let node_options = if preload.contains(' ') {
        format!("--require=\"{preload}\"")
    } else {
        format!("--require={preload}")
    };
    let mut cmd = Command::new(install::localstack_venv().join("bin/python"));
    cmd.args(["-m", "localstack.runtime.main"])
        .current_dir(&root)
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEWAY_SERVER", "hypercorn")
        .env("OVERRIDE_IN_DOCKER", "0")
        .env("FILESYSTEM_ROOT", &root)
        .env("DISABLE_EVENTS", "1")
        .env("KINESIS_LATENCY", "0")
        .env("KINESIS_SHARD_LIMIT", "1000")
        .env("DNS_ADDRESS", "0")
        .env("SKIP_SSL_CERT_DOWNLOAD", "1")
        .env("NODE_OPTIONS", node_options)
        .env("AWS_DEFAULT_REGION", REGION);
    let (pid, start_time) = spawn(&mut cmd, &log)?;
    let svc = Svc {
        kind: Kind::LocalStack,
        pid,
        start_time,
        port,
        data_dir: None,
        log,
    };
    wait_ready(&svc, Duration::from_secs(180))?;
    // LocalStack starts its Kinesis engine (kinesis-local, installed from npm on
    // first use) lazily: do it now so that the tests' first call is not slow.
    let t = Instant::now();
    say(
        "LocalStack: starting its Kinesis engine (the first time it installs kinesis-local from npm) …",
    );
    let url = HttpUrl::parse(&svc.url())?;
    let warm = util::wait_until(
        "LocalStack Kinesis",
        Duration::from_secs(300),
        || svc.alive(),
        || probe(&url, "kinesis").is_ok(),
    );
    if let Err(e) = warm {
        stop(&svc);
        bail!(
            "{e}; last lines of {}:\n{}",
            svc.log.display(),
            util::tail(&svc.log, 25)
        );
    }
    say(format!(
        "LocalStack Kinesis answers ({})",
        secs(t.elapsed())
    ));
    Ok(svc)
}

/// Whether a running service answers its protocol.
fn answers(svc: &Svc) -> bool {
    let get = |path: &str| {
        HttpUrl::parse(&svc.url())
            .and_then(|u| util::http(&u, "GET", path, &[], "", Duration::from_secs(5)))
            .is_ok_and(|(code, _)| code == 200)
    };
    match svc.kind {
        Kind::Kinesis => get("/healthcheck"),
        Kind::Moto => get("/moto-api/"),
        Kind::LocalStack => get("/_localstack/health"),
        Kind::Postgres => pg_isready(svc.port, TEST_DATABASE),
        Kind::Redis => redis_ping(svc.port),
    }
}

fn redis_ping(port: u16) -> bool {
    let ping = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"+PONG"))
    };
    ping().unwrap_or(false)
}

/// Stops one service: `pg_ctl stop` for PostgreSQL, else SIGTERM to its
/// process group, a grace period, then SIGKILL. Returns whether it is gone.
fn stop(svc: &Svc) -> bool {
    if !svc.alive() {
        if let Some(dir) = &svc.data_dir {
            remove_pg_data(dir);
        }
        return true;
    }
    if svc.kind == Kind::Postgres
        && let Some(data) = &svc.data_dir
        && let (Ok(bin), Ok(user)) = (install::pg_bin_dir(), pg_user())
    {
        // A fast shutdown; the signals below only act if it did not finish.
        let _ = as_pg_user(&mut Command::new(bin.join("pg_ctl")), user)
            .arg("stop")
            .arg("-D")
            .arg(data)
            .args(["-m", "fast", "-w", "-t", "30"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let grace = match svc.kind {
        Kind::LocalStack => Duration::from_secs(20),
        _ => Duration::from_secs(10),
    };
    let gone = util::terminate(svc.pid, svc.start_time, grace);
    if let Some(dir) = &svc.data_dir {
        remove_pg_data(dir);
    }
    gone
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
        if stop(svc) {
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
        } else if answers(svc) {
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
    fn state_round_trips() -> Result<()> {
        let svc = Svc {
            kind: Kind::Postgres,
            pid: 42,
            start_time: 7,
            port: 5432,
            data_dir: Some(PathBuf::from("/tmp/x")),
            log: PathBuf::from("/tmp/x.log"),
        };
        let back = Svc::from_json(&svc.to_json())?;
        assert_eq!(
            (back.kind, back.pid, back.start_time, back.port),
            (Kind::Postgres, 42, 7, 5432)
        );
        assert_eq!(back.data_dir, svc.data_dir);
        for mode in [
            Mode::Embedded,
            Mode::LocalStackHost,
            Mode::LocalStackUrl("http://h:1".into()),
        ] {
            assert_eq!(Mode::from_json(&mode.to_json())?, mode);
        }
        Ok(())
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("http://127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn routes_an_external_localstack() -> Result<()> {
        let svc = |kind, port| Svc {
            kind,
            pid: 1,
            start_time: 1,
            port,
            data_dir: None,
            log: PathBuf::new(),
        };
        let mut state = State {
            mode: Mode::LocalStackUrl("http://localhost:4566/".into()),
            services: vec![
                svc(Kind::Moto, 5000),
                svc(Kind::Postgres, 5432),
                svc(Kind::Redis, 6379),
            ],
            routes: Routes::default(),
            notes: Vec::new(),
        };
        route(&mut state, &["kinesis".to_owned(), "s3".to_owned()])?;
        assert_eq!(state.routes.kinesis, "http://localhost:4566");
        assert_eq!(state.routes.s3, "http://localhost:4566");
        assert_eq!(state.routes.dynamodb, "http://127.0.0.1:5000");
        assert_eq!(state.notes.len(), 1);
        let vars = state.env_vars()?;
        assert!(vars.contains(&("KC_STACK", "localstack".to_owned())));
        assert!(vars.contains(&("REDIS_URL", "redis://127.0.0.1:6379".to_owned())));
        Ok(())
    }
}
