//! The processes of the stack: installing what a service needs, starting it
//! in its own process group (each service's module knows its command line),
//! waiting until it answers, and stopping it.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::state::Svc;
use super::{Kind, kinesalite, kinesis_local, localstack, moto, postgres, probe, redis};
use crate::install;
use crate::util;

/// Installs what the services in `kinds` need, in parallel.
pub(super) fn install_all(kinds: &[Kind]) -> Result<()> {
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
                        Kind::Kinesalite => install::ensure_kinesalite(),
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

/// Starts one service on `preferred` when that port is free, else on a free
/// port, and waits until it answers.
pub(super) fn start(kind: Kind, preferred: Option<u16>) -> Result<Svc> {
    let log = util::logs_dir().join(format!("{}.log", kind.name()));
    let port = match preferred {
        Some(p) if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
        _ => util::free_port()?,
    };
    match kind {
        Kind::Kinesis => kinesis_local::start(log, port),
        Kind::Kinesalite => kinesalite::start(log, port),
        Kind::Moto => moto::start(log, port),
        Kind::Postgres => postgres::start(log, port),
        Kind::Redis => redis::start(log, port),
        Kind::LocalStack => localstack::start(log, port),
    }
}

/// Spawns a service of `kind` on `port` in its own process group with its
/// output in `log`.
pub(super) fn spawn(
    kind: Kind,
    cmd: &mut Command,
    port: u16,
    data_dir: Option<PathBuf>,
    log: PathBuf,
) -> Result<Svc> {
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
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
            util::tail(&log, 20)
        )
    })?;
    Ok(Svc {
        kind,
        pid,
        start_time,
        port,
        data_dir,
        log,
    })
}

/// [`spawn`]s a service and [`wait_ready`]s for it.
pub(super) fn start_ready(
    kind: Kind,
    cmd: &mut Command,
    port: u16,
    log: PathBuf,
    timeout: Duration,
) -> Result<Svc> {
    let svc = spawn(kind, cmd, port, None, log)?;
    wait_ready(&svc, timeout)?;
    Ok(svc)
}

/// Waits until `svc` answers; on failure stops it and shows its log.
pub(super) fn wait_ready(svc: &Svc, timeout: Duration) -> Result<()> {
    let res = util::wait_until(
        svc.kind.name(),
        timeout,
        || svc.alive(),
        || probe::answers(svc),
    );
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

/// Stops one service: `pg_ctl stop` for PostgreSQL, else SIGTERM to its
/// process group, a grace period, then SIGKILL. Returns whether it is gone.
pub(super) fn stop(svc: &Svc) -> bool {
    if !svc.alive() {
        if let Some(dir) = &svc.data_dir {
            postgres::remove_pg_data(dir);
        }
        return true;
    }
    if svc.kind == Kind::Postgres
        && let Some(data) = &svc.data_dir
    {
        // The signals below only act if the fast shutdown did not finish.
        postgres::fast_shutdown(data);
    }
    let grace = match svc.kind {
        Kind::LocalStack => Duration::from_secs(20),
        _ => Duration::from_secs(10),
    };
    let gone = util::terminate(svc.pid, svc.start_time, grace);
    if let Some(dir) = &svc.data_dir {
        postgres::remove_pg_data(dir);
    }
    gone
}

/// Writes the node preload that forces `listen()` onto 127.0.0.1.
pub(super) fn write_preload() -> Result<PathBuf> {
    let path = preload_path();
    let content = include_str!("../preload.js");
    if fs::read_to_string(&path).ok().as_deref() != Some(content) {
        fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

pub(super) fn preload_path() -> PathBuf {
    util::stack_dir().join("listen-localhost.js")
}
