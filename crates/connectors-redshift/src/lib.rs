#![doc = include_str!("../README.md")]

mod basic;
mod config;
mod copy;
mod csv;
mod error;
mod file_decoder;
mod jsonpaths;
mod loader;
mod manifest;
mod manifest_emitter;
mod postgres;
mod sql;
mod target;

pub use basic::{RedshiftBasicEmitter, RedshiftBasicEmitterBuilder};
pub use config::DEFAULT_FILE_COLUMN;
pub use copy::{CopyFormat, CopyOptions, Credentials};
pub use error::Error;
pub use loader::{LoadRequest, LoadSource, Loader, RedshiftLoader};
pub use manifest::{Manifest, ManifestEntry};
pub use manifest_emitter::{
    DEFAULT_MANIFEST_PREFIX, RedshiftManifestEmitter, RedshiftManifestEmitterBuilder,
};
pub use postgres::PostgresLoader;
pub use sql::{Identifier, MAX_IDENTIFIER_BYTES, TableName, quote_literal};
pub use target::LoadReport;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
