#![doc = include_str!("../README.md")]

mod batch;
mod builder;
mod conditional;
mod emitter;
mod error;
mod executor;
mod isolate;
mod item;

pub use builder::DynamoDbEmitterBuilder;
pub use conditional::ConditionalPut;
pub use emitter::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY, DynamoDbEmitter, DynamoDbEmitterStats, ItemMapper,
};
pub use error::{DynamoDbError, RequestErrorKind, Result};
pub use item::{Item, MAX_BATCH_ITEMS, MAX_ITEM_BYTES, MAX_REQUEST_BYTES, item_size};

/// The SDK crate this emitter is built on, so users name the same
/// `Client` and `AttributeValue` types without a version mismatch.
pub use aws_sdk_dynamodb;
