#![doc = include_str!("../README.md")]

mod emitter;
mod error;
mod key;
mod manifest;

pub use emitter::{
    DEFAULT_PART_SIZE, DEFAULT_UPLOAD_CONCURRENCY, MAX_PART_SIZE, MIN_PART_SIZE, ObjectLocation,
    S3Emitter, S3EmitterBuilder, Upload,
};
pub use error::Error;
pub use key::DEFAULT_KEY_TEMPLATE;
pub use manifest::S3ManifestEmitter;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
