//! redis-server: the stack's Redis, its own process (never the system
//! service), without persistence.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::state::Svc;
use super::{Kind, process};
use crate::install;
use crate::util;

pub(super) fn start(log: PathBuf, port: u16) -> Result<Svc> {
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
    process::start_ready(Kind::Redis, &mut cmd, port, log, Duration::from_secs(30))
}
