//! `dynamodb-sink --config dynamodb-sink.toml`: writes the JSON events of a
//! Kinesis stream into a DynamoDB table until Ctrl-C (or SIGTERM), then
//! writes and checkpoints what it read.

use anyhow::{Context, Result};
use clap::Parser;
use dynamodb_sink::{Config, run};
use example_support::{
    ConfigArgs, check_report, init_tracing, load_config, sdk_config, shutdown_signal,
};

/// Writes the JSON events of a Kinesis stream into a DynamoDB table.
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
    check_report("dynamodb-sink", &report)
}
