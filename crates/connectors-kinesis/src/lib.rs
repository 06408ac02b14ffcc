#![doc = include_str!("../README.md")]

mod emitter;
mod error;
mod fan_out;
mod polling;
mod registration;

pub use emitter::{
    Aggregation, DEFAULT_RETRY, KinesisEmitter, KinesisEmitterBuilder, MAX_BYTES_PER_REQUEST,
    MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, MAX_RECORDS_PER_REQUEST,
};
pub use error::Error;
pub use fan_out::{EVENT_WAIT, FanOutSource, SESSION_LIMIT, SUBSCRIPTIONS_METRIC};
pub use polling::PollingSource;
pub use registration::{ACTIVE_WAIT, FanOutConsumer};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
