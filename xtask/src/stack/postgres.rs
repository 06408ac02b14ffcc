//! PostgreSQL (the Redshift stand-in): a throwaway cluster, `initdb` at every
//! start, run as the `postgres` user when the xtask runs as root.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::state::Svc;
use super::{Kind, TEST_DATABASE, probe, process};
use crate::install;
use crate::util::{self, say, secs};

/// The user PostgreSQL runs as: `postgres` when this process is root (it
/// refuses to run as root), else the current user (`None`).
pub(super) fn pg_user() -> Result<Option<(u32, u32)>> {
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

pub(super) fn remove_pg_data(dir: &Path) {
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
}

pub(super) fn start(log: PathBuf, port: u16) -> Result<Svc> {
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
    let svc = process::spawn(Kind::Postgres, &mut cmd, port, Some(data), log)?;
    // `answers` checks the test database, which does not exist yet.
    let ready = util::wait_until(
        "postgres",
        Duration::from_secs(60),
        || svc.alive(),
        || probe::pg_isready(port, "postgres"),
    );
    if let Err(e) = ready {
        process::stop(&svc);
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
        process::stop(&svc);
        return Err(e.context("creating the test database"));
    }
    Ok(svc)
}

/// Asks PostgreSQL for a fast shutdown (`pg_ctl stop -m fast`) of the cluster
/// in `data`; best effort, the caller signals the process if it did not end.
pub(super) fn fast_shutdown(data: &Path) {
    let (Ok(bin), Ok(user)) = (install::pg_bin_dir(), pg_user()) else {
        return;
    };
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
