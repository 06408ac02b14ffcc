#![doc = include_str!("../README.md")]

mod emitter;
mod error;
mod files;
mod path;

pub use emitter::{
    DEFAULT_EXTENSION, RotatingFileEmitter, RotatingFileEmitterBuilder, WrittenFile,
};
pub use error::Error;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
