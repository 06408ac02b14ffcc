#![doc = include_str!("../README.md")]

mod codec;
mod error;
mod scripts;
mod store;

pub use error::{Error, Result};
pub use store::RedisCheckpointStore;

/// The redis crate this store is built on, re-exported so applications
/// build the [`ConnectionManager`](redis::aio::ConnectionManager) with the
/// same version.
pub use redis;
