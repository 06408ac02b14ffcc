#![doc = include_str!("../README.md")]

mod error;
mod layout;
mod store;
mod table;

pub use error::{DynamoDbCheckpointError, RequestErrorKind, Result};
pub use layout::{attributes, sentinels};
pub use store::{DynamoDbCheckpointStore, DynamoDbCheckpointStoreBuilder};

/// The AWS SDK for DynamoDB this crate is built against, so applications
/// can name the same `Client` type without a version mismatch.
pub use aws_sdk_dynamodb;
