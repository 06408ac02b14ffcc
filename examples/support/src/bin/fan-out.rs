//! `fan-out`: register, list and deregister the enhanced fan-out consumers
//! of a stream (what `[retrieval] kind = "fan_out"` reads through).
//!
//! ```text
//! fan-out register   --stream clicks --consumer clicks-archiver
//! fan-out list       --stream clicks
//! fan-out deregister --stream clicks --consumer clicks-archiver
//! ```
//!
//! Endpoints and credentials come from the environment
//! (`AWS_ENDPOINT_URL_KINESIS` for an emulator). The library never
//! deregisters a consumer by itself: other workers may read through it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use example_support::sdk_config;
use kinesis_connectors_kinesis::FanOutConsumer;

#[derive(Debug, Parser)]
#[command(about = "Register, list and deregister enhanced fan-out consumers of a stream")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Registers the consumer (or finds it registered), waits until it is
    /// ACTIVE and prints its ARN.
    Register {
        /// The stream.
        #[arg(long)]
        stream: String,
        /// The consumer's name.
        #[arg(long)]
        consumer: String,
    },
    /// Prints each consumer of the stream: name, status, ARN.
    List {
        /// The stream.
        #[arg(long)]
        stream: String,
    },
    /// Deregisters the consumer, ending its subscriptions in every process.
    Deregister {
        /// The stream.
        #[arg(long)]
        stream: String,
        /// The consumer's name.
        #[arg(long)]
        consumer: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = aws_sdk_kinesis::Client::new(&sdk_config().await);
    match args.command {
        Command::Register { stream, consumer } => {
            let registered = FanOutConsumer::register(&client, &stream, &consumer).await?;
            println!("{}", registered.arn());
        }
        Command::List { stream } => {
            for (consumer, status) in FanOutConsumer::list(&client, &stream).await? {
                println!(
                    "{}\t{}\t{}",
                    consumer.name(),
                    status.as_str(),
                    consumer.arn()
                );
            }
        }
        Command::Deregister { stream, consumer } => {
            match FanOutConsumer::find(&client, &stream, &consumer).await? {
                Some(registered) => {
                    registered.deregister(&client).await?;
                    println!("deregistered {}", registered.arn());
                }
                None => println!("no consumer {consumer} on {stream}: nothing to deregister"),
            }
        }
    }
    Ok(())
}
