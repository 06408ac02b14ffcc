#![doc = include_str!("../README.md")]

mod emitter;
mod error;
mod polling;

pub use emitter::{
    Aggregation, DEFAULT_RETRY, KinesisEmitter, KinesisEmitterBuilder, MAX_BYTES_PER_REQUEST,
    MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, MAX_RECORDS_PER_REQUEST,
};
pub use error::Error;
pub use polling::PollingSource;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
