//! `stream-to-stream --config stream-to-stream.toml`: forwards a Kinesis
//! stream into another one, keeping only the configured event kinds, until
//! Ctrl-C (or SIGTERM), then forwards and checkpoints what it read.

use anyhow::Result;
use clap::Parser;
use example_support::{ConfigArgs, run_example};
use stream_to_stream::{Config, run};

/// Forwards a Kinesis stream into another one, optionally filtered.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    run_example("stream-to-stream", &args.config, Config::validate, run).await
}
