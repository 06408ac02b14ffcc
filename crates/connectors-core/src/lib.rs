//! # kinesis-connectors-core
//!
//! Consume Amazon Kinesis Data Streams shard by shard and run every record
//! through a pipeline: [`Transformer`] → [`Filter`] → [`Buffer`] →
//! [`Emitter`], with the checkpoint written to a [`CheckpointStore`] only
//! after the emitter succeeded (at-least-once, never loss).
//!
//! - [`StreamConsumer`] discovers shards, follows resharding (children start
//!   only after their parents reached SHARD_END), takes shards through a
//!   [`ShardAssigner`] and shuts down gracefully on a [`CancellationToken`].
//! - [`ShardConsumer`] is the loop for one shard; `ARCHITECTURE.md` at the
//!   repository root lists where each of its rules lives.
//! - Backends live in their own crates (`kinesis-connectors-s3`,
//!   `kinesis-checkpoint-redis`, …) so an application compiles only the SDKs
//!   it uses.
//!
//! ```
//! use std::sync::Arc;
//! use kinesis_connectors_core::{
//!     async_trait, Batch, EmitOutcome, Emitter, JsonTransformer, Pipeline, Result,
//! };
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order { id: u64, total_cents: i64 }
//!
//! /// Sums order totals; a real emitter would write to a sink.
//! struct Totals;
//! #[async_trait]
//! impl Emitter<Order> for Totals {
//!     async fn emit(&self, batch: &Batch<Order>) -> Result<EmitOutcome> {
//!         let total: i64 = batch.items.iter().map(|o| o.total_cents).sum();
//!         println!("{} orders, {total} cents, records {}..={}", batch.len(), batch.first, batch.last);
//!         Ok(EmitOutcome::delivered())
//!     }
//! }
//!
//! let pipeline = Pipeline::builder(JsonTransformer::<Order>::new(), Arc::new(Totals))
//!     .filter(|order: &Order| order.total_cents > 0)
//!     .build()?;
//! # Ok::<(), kinesis_connectors_core::Error>(())
//! ```

mod buffer;
mod checkpoint;
mod error;
mod kinesis;
mod lease;
pub mod metrics;
mod pipeline;
mod record;
mod retry;
mod shard;
mod source;
mod stream;
mod transform;

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;

pub use buffer::{Buffer, BufferLimits, RecordBuffer};
pub use checkpoint::{Checkpoint, CheckpointStore, MemoryCheckpointStore, ShardKey};
pub use error::{BoxError, Error, Result, SourceErrorKind};
pub use kinesis::KinesisSource;
pub use lease::{Lease, ShardAssigner, SingleWorker};
pub use pipeline::{
    AllPass, BadRecordPolicy, Batch, EmitOutcome, Emitter, FailedRecord, Filter, ItemSource,
    Pipeline, PipelineBuilder, RejectedItem, Transformer,
};
pub use record::{Position, Record, SequenceNumber, ShardContext};
pub use retry::RetryPolicy;
pub use shard::{
    LeaseHandle, ShardConfig, ShardConsumer, ShardEnv, ShardOutcome, ShardReport, ShardStats,
};
pub use source::{InitialPosition, RecordSource, RecordsPage, ShardInfo, StartPosition};
pub use stream::{PipelineFactory, StreamConsumer, StreamConsumerBuilder, StreamReport};
pub use transform::{
    BytesTransformer, JsonTransformer, RecordTransformer, Utf8Transformer, encode_lines,
};
