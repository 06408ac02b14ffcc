//! `chaos-pipeline`: the pipeline under test of `cargo xtask chaos`, and the
//! driver that feeds it and counts what arrived.
//!
//! ```text
//! chaos-pipeline drive   --stream S --sink s3|postgres --bucket B --prefix P [--table T] [--rate N] [--shards N]
//! chaos-pipeline consume --stream S --app A --sink s3|postgres --bucket B --prefix P [--table T] [--worker ID [--failover SECS]] [fault flags]
//! ```
//!
//! `drive` creates the stream, the bucket (and the table), prints
//! `{"ready":true}`, then writes events with unique ids (0, 1, 2, …) at
//! `--rate` events/s and every 500 ms prints one JSON line of what the sink
//! holds: `{"produced":…,"producing":…,"rows":…,"distinct":…,"prefix":…}`,
//! where `prefix` is the lowest id not delivered yet. A `stop` line on stdin
//! ends producing; the end of stdin ends the driver.
//!
//! `consume` runs a `StreamConsumer` (Redis checkpoints) delivering each
//! batch as an S3 object of JSON lines, or as rows in PostgreSQL through
//! `RedshiftBasicEmitter` + `PostgresLoader`, until stdin ends; then it
//! shuts down gracefully and prints `{"report":…}`. Its emitter can be
//! wrapped in fault injection (`--panic-after`/`--panics`,
//! `--hang-after`/`--hang-secs`); it prints `{"fault":"start"}` and
//! `{"fault":"end"}` when its own fault window opens and closes. With
//! `--worker ID` it is one of several workers sharing the stream through
//! leases in the same Redis (`LeaseCoordinator`, `--failover` seconds).
//! Every 500 ms it prints the shards it holds and reads:
//! `{"status":{"worker":…,"held":…,"reading":…,"shards":[…]}}`.
//!
//! Endpoints come from the environment (`AWS_ENDPOINT_URL_KINESIS`,
//! `AWS_ENDPOINT_URL_S3`, `REDIS_URL`, `DATABASE_URL`): the xtask points the
//! consumer's at its fault-injecting proxies and the driver's at the real
//! services, so the driver sees the truth while the consumer suffers.

mod args;
mod consume;
mod drive;
mod faults;
mod tally;

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Result, bail};
use kinesis_connectors_core::CancellationToken;

use crate::args::Args;

/// Where the pipeline delivers, and so where the driver counts.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// One S3 object of JSON lines per batch under `prefix`.
    S3 { bucket: String, prefix: String },
    /// Rows of `table` (`id BIGINT`), loaded from S3 objects under `prefix`.
    Postgres {
        bucket: String,
        prefix: String,
        table: String,
    },
}

impl Sink {
    fn from_args(args: &Args) -> Result<Self> {
        let bucket = args.string("bucket")?;
        let prefix = args.string("prefix")?;
        match args.string("sink")?.as_str() {
            "s3" => Ok(Sink::S3 { bucket, prefix }),
            "postgres" => Ok(Sink::Postgres {
                bucket,
                prefix,
                table: args.string("table")?,
            }),
            other => bail!("--sink is s3 or postgres, got {other:?}"),
        }
    }

    pub(crate) fn bucket(&self) -> &str {
        match self {
            Sink::S3 { bucket, .. } | Sink::Postgres { bucket, .. } => bucket,
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        match self {
            Sink::S3 { prefix, .. } | Sink::Postgres { prefix, .. } => prefix,
        }
    }
}

/// Prints one JSON line on stdout, the channel the xtask reads.
pub(crate) fn report(line: &serde_json::Value) {
    // Stdout is line-buffered: the xtask sees each line at once.
    println!("{line}");
}

/// A thread reading stdin: a `stop` line cancels `stop`, the end of stdin
/// (the xtask closed it, or died) cancels `end`. A blocking thread because
/// the workspace's tokio has no `io-std` feature here, and none is needed.
pub(crate) fn watch_stdin(stop: Option<CancellationToken>, end: CancellationToken) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "stop"
                && let Some(stop) = &stop
            {
                stop.cancel();
            }
        }
        end.cancel();
    });
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos-pipeline: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let Some((command, rest)) = argv.split_first() else {
            bail!("usage: chaos-pipeline drive|consume --flag value …");
        };
        match command.as_str() {
            "drive" => drive::run(Args::parse(rest, drive::FLAGS)?).await,
            "consume" => consume::run(Args::parse(rest, consume::FLAGS)?).await,
            other => bail!("unknown command {other:?}: drive or consume"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chaos-pipeline: error: {error:#}");
            report(&serde_json::json!({ "error": format!("{error:#}") }));
            ExitCode::FAILURE
        }
    }
}
