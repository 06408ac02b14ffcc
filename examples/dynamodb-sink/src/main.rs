//! `dynamodb-sink --config dynamodb-sink.toml`: writes the JSON events of a
//! Kinesis stream into a DynamoDB table until Ctrl-C (or SIGTERM), then
//! writes and checkpoints what it read.

use anyhow::Result;
use clap::Parser;
use dynamodb_sink::{Config, run};
use example_support::{ConfigArgs, run_example};

/// Writes the JSON events of a Kinesis stream into a DynamoDB table.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    run_example("dynamodb-sink", &args.config, Config::validate, run).await
}
