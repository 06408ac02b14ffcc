//! `producer --config producer.toml [--count N] [--rate R] [--aggregate]`: fills a stream
//! with synthetic JSON events, showing progress. Ctrl-C stops it after the
//! request in flight.

use anyhow::Result;
use clap::Parser;
use example_support::{
    ConfigArgs, Progress, init_tracing, load_config, sdk_config, shutdown_signal,
};
use producer::{ProducerConfig, produce};
use tracing::info;

/// Fills a Kinesis stream with synthetic JSON events.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Events to send (overrides `count` in the file).
    #[arg(long)]
    count: Option<u64>,
    /// Events per second, 0 for unlimited (overrides `rate`).
    #[arg(long)]
    rate: Option<u64>,
    /// Packs events into KPL aggregates, as the Kinesis Producer Library
    /// does (sets `aggregate = true`).
    #[arg(long)]
    aggregate: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    let args = Args::parse();
    let mut config: ProducerConfig = load_config(&args.config.config)?;
    config.count = args.count.unwrap_or(config.count);
    config.rate = args.rate.unwrap_or(config.rate);
    config.aggregate |= args.aggregate;
    config.validate()?;
    let client = aws_sdk_kinesis::Client::new(&sdk_config().await);
    let cancel = shutdown_signal();
    let mut progress = Progress::new(config.count, "events sent");
    let report = produce(&client, &config, &cancel, |n| progress.inc(n)).await?;
    progress.finish();
    info!(
        stream = config.stream,
        sent = report.sent,
        resent = report.resent,
        elapsed = ?report.elapsed,
        "done: {:.0} events/s",
        report.rate()
    );
    Ok(())
}
