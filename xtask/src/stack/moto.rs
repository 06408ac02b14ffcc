//! moto server: the stack's S3 and DynamoDB.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::state::Svc;
use super::{Kind, REGION, process};
use crate::install;
use crate::util;

pub(super) fn start(log: PathBuf, port: u16) -> Result<Svc> {
    let dir = util::stack_dir().join("moto");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(install::moto_venv().join("bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&dir)
        .env("AWS_DEFAULT_REGION", REGION);
    process::start_ready(Kind::Moto, &mut cmd, port, log, Duration::from_secs(60))
}
