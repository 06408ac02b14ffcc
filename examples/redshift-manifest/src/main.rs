//! `redshift-manifest --config redshift-manifest.toml`: runs both stages of
//! the manifest pipeline until Ctrl-C or SIGTERM, then shuts down
//! gracefully (flush, emit, checkpoint).

use anyhow::Result;
use clap::Parser;
use example_support::{ConfigArgs, init_tracing, load_config, sdk_config, shutdown_signal};
use redshift_manifest::{Config, Pipelines};
use tracing::info;

/// Stream → S3 + manifest stream → Redshift (or PostgreSQL), exactly once.
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
    let aws = sdk_config().await;
    let cancel = shutdown_signal();
    let pipelines = Pipelines::start(&config, &aws, cancel).await?;
    let counts = pipelines.counts.clone();
    let (stage1, stage2) = pipelines.join().await?;
    info!(
        records_archived = counts.records_archived(),
        objects_written = counts.objects_written(),
        manifests_loaded = counts.manifests_loaded(),
        stage1_emitted = stage1.records_emitted(),
        stage2_emitted = stage2.records_emitted(),
        "stopped"
    );
    Ok(())
}
