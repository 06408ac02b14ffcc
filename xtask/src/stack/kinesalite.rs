//! kinesalite (a node program on an in-memory LevelDB): the fast Kinesis of
//! `cargo xtask bench`. About 15 times kinesis-local's put rate, so a
//! consumer benchmark measures the consumer; no enhanced fan-out.

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
    let pkg = install::kinesalite_dir();
    let dir = util::stack_dir().join("kinesalite");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("node");
    // The preload keeps its listener on 127.0.0.1 (it binds every
    // interface otherwise); streams change state at once; the default of
    // 10 shards per account is too few for interleaved runs.
    cmd.arg("--require")
        .arg(process::preload_path())
        .arg(pkg.join("cli.js"))
        .args(["--port", &port.to_string()])
        .args([
            "--createStreamMs",
            "0",
            "--deleteStreamMs",
            "0",
            "--updateStreamMs",
            "0",
        ])
        .args(["--shardLimit", "1000"])
        .current_dir(&dir);
    process::start_ready(
        Kind::Kinesalite,
        &mut cmd,
        port,
        log,
        Duration::from_secs(60),
    )
}
