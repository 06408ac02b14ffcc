//! `stream-to-stream --config stream-to-stream.toml`: forwards a Kinesis
//! stream into another one, keeping only the configured event kinds, until
//! Ctrl-C (or SIGTERM), then forwards and checkpoints what it read.

use anyhow::{Context, Result};
use clap::Parser;
use example_support::{
    ConfigArgs, check_report, init_tracing, load_config, sdk_config, shutdown_signal,
};
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
    init_tracing();
    let args = Args::parse();
    let config: Config = load_config(&args.config.config)?;
    config
        .validate()
        .with_context(|| format!("bad configuration in {}", args.config.config.display()))?;
    let aws = sdk_config().await;
    let report = run(&config, &aws, shutdown_signal()).await?;
    check_report("stream-to-stream", &report)
}
