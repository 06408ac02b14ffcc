//! `s3-archiver --config s3-archiver.toml`: archives a Kinesis stream into
//! S3 objects of newline-delimited JSON until Ctrl-C (or SIGTERM), then
//! uploads and checkpoints what it read.

use anyhow::Result;
use clap::Parser;
use example_support::{ConfigArgs, run_example};
use s3_archiver::{Config, run};

/// Archives a Kinesis stream into S3 as newline-delimited JSON.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    run_example("s3-archiver", &args.config, Config::validate, run).await
}
