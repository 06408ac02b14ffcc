//! `s3-archiver --config s3-archiver.toml`: archives a Kinesis stream into
//! S3 objects of newline-delimited JSON until Ctrl-C (or SIGTERM), then
//! uploads and checkpoints what it read.

use anyhow::{Context, Result};
use clap::Parser;
use example_support::{
    ConfigArgs, check_report, init_tracing, load_config, sdk_config, shutdown_signal,
};
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
    init_tracing();
    let args = Args::parse();
    let config: Config = load_config(&args.config.config)?;
    config
        .validate()
        .with_context(|| format!("bad configuration in {}", args.config.config.display()))?;
    let aws = sdk_config().await;
    let report = run(&config, &aws, shutdown_signal()).await?;
    check_report("s3-archiver", &report)
}
