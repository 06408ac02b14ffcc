//! kinesis-local (the kinesis-mock engine, a node program): the stack's Kinesis.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::state::Svc;
use super::{Kind, REGION, process};
use crate::install;
use crate::util;

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

pub(super) fn start(log: PathBuf, port: u16) -> Result<Svc> {
    let pkg = install::kinesis_local_dir();
    let mut tls_port = util::free_port()?;
    while tls_port == port {
        tls_port = util::free_port()?;
    }
    let dir = util::stack_dir().join("kinesis");
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("node");
    cmd.arg("--require")
        .arg(process::preload_path())
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
    process::start_ready(Kind::Kinesis, &mut cmd, port, log, Duration::from_secs(60))
}
