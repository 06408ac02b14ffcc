//! LocalStack started on this machine (`--localstack`): the stack's Kinesis
//! and S3 in that mode.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::state::Svc;
use super::{Kind, REGION, probe, process};
use crate::install;
use crate::util::{self, HttpUrl, say, secs};

pub(super) fn start(log: PathBuf, port: u16) -> Result<Svc> {
    let root = util::stack_dir().join("localstack");
    fs::create_dir_all(&root)?;
    let preload = process::preload_path();
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
        // Twisted, LocalStack's default: LocalStack serves SubscribeToShard
        // from a generator that sleeps 3 s on an idle shard, and under the
        // hypercorn gateway that sleep holds up every other request.
        .env("GATEWAY_SERVER", "twisted")
        .env("OVERRIDE_IN_DOCKER", "0")
        .env("FILESYSTEM_ROOT", &root)
        .env("DISABLE_EVENTS", "1")
        .env("KINESIS_LATENCY", "0")
        .env("KINESIS_SHARD_LIMIT", "1000")
        // kinesis-mock otherwise writes its whole state to disk every 5 s,
        // which stalls its GetRecords answers past the read timeout once
        // the tests have put some hundred MiB into it.
        .env("KINESIS_PERSISTENCE", "0")
        .env("DNS_ADDRESS", "0")
        .env("SKIP_SSL_CERT_DOWNLOAD", "1")
        .env("NODE_OPTIONS", node_options)
        .env("AWS_DEFAULT_REGION", REGION);
    let svc = process::start_ready(
        Kind::LocalStack,
        &mut cmd,
        port,
        log,
        Duration::from_secs(180),
    )?;
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
        || probe::localstack_request(&url, "kinesis").is_ok(),
    );
    if let Err(e) = warm {
        process::stop(&svc);
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
