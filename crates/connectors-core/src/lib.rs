#![doc = include_str!("../README.md")]

mod budget;
mod buffer;
mod checkpoint;
mod error;
mod json_view;
pub mod kpl;
mod lease;
pub mod metrics;
mod pipeline;
mod record;
mod renewal;
mod retry;
mod shard;
mod source;
mod status;
mod stream;
mod timeout;
mod transform;

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;

pub use budget::MemoryBudget;
pub use buffer::{Buffer, BufferLimits, RecordBuffer};
pub use checkpoint::{Checkpoint, CheckpointStore, MemoryCheckpointStore, ShardKey};
pub use error::{BoxError, Error, Result, SourceErrorKind};
pub use json_view::{JsonView, JsonViewTransformer};
pub use lease::{Lease, LeaseCoordinator, LeaseStore, ShardAssigner, SingleWorker, StoredLease};
pub use pipeline::{
    AllPass, BadRecordPolicy, Batch, EmitOutcome, Emitter, Encoder, FailedRecord, Filter,
    ItemSource, Pipeline, PipelineBuilder, RejectedItem, Transformer,
};
pub use record::{Position, Record, SequenceNumber, ShardContext};
pub use retry::{Backoff, RetryPolicy};
pub use shard::{
    LeaseHandle, ShardConfig, ShardConsumer, ShardEnv, ShardOutcome, ShardReport, ShardStats,
};
pub use source::{Delivery, InitialPosition, RecordSource, RecordsPage, ShardInfo, StartPosition};
pub use status::{ConsumerStatus, ShardState, ShardStatus};
pub use stream::{
    PipelineFactory, REPORTS_KEPT_PER_SHARD, ShardFailurePolicy, StreamConsumer,
    StreamConsumerBuilder, StreamReport,
};
pub use transform::{
    BytesTransformer, Compression, DEFAULT_GZIP_LEVEL, EncodedItems, JsonTransformer,
    RecordTransformer, Utf8Transformer, encode_body, encode_delimited, encode_lines,
};
