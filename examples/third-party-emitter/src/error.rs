//! The crate's one error type, and which failures are worth retrying.

use std::io;
use std::path::PathBuf;

/// Errors of [`RotatingFileEmitter`](crate::RotatingFileEmitter).
///
/// Every variant names the path (or the name) it is about and says whether
/// retrying the same batch may succeed ([`Error::is_retryable`]). Converted
/// into the core's [`Error::Emit`](kinesis_connectors_core::Error::Emit) (or
/// [`Error::Config`](kinesis_connectors_core::Error::Config)) by `From`, so
/// the consumer loop retries transient failures and stops the shard on the
/// others.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given a configuration that cannot work: the directory
    /// is a file or cannot be created or written, the extension is empty, a
    /// retention limit is zero.
    #[error("invalid file emitter configuration: {0}")]
    Config(String),

    /// A stream name or shard id of a batch cannot be used as a path segment
    /// (empty, `.` or `..`, or holding a path separator). Kinesis names never
    /// are; a custom record source may produce them. Not retryable.
    #[error("{what} {name:?} cannot be used in a file path: {reason}")]
    InvalidName {
        /// `"stream name"` or `"shard id"`.
        what: &'static str,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A file system operation failed. Retryable when the failure is
    /// transient (interrupted, would block, timed out, busy, a stale NFS
    /// handle, a directory removed under us); not for a full disk, a quota,
    /// a read-only file system, a denied permission or anything else, which
    /// need an operator.
    #[error(
        "could not {operation} {}{}: {source}",
        path.display(),
        if io_retryable(source.kind()) { " (retryable)" } else { "" }
    )]
    Io {
        /// What was being done: `"create directory"`, `"write"`, `"rename"`…
        operation: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Compressing the file's content failed.
    #[error("compressing {} failed: {source}", path.display())]
    Compress {
        /// The file being written.
        path: PathBuf,
        /// The compressor's error.
        #[source]
        source: io::Error,
    },

    /// The blocking task that writes the file did not finish: it was
    /// cancelled because the runtime is shutting down (retryable: a restart
    /// writes the batch again) or it panicked (not retryable).
    #[error(
        "the task writing {} {}",
        path.display(),
        if *.cancelled { "was cancelled" } else { "panicked" }
    )]
    Task {
        /// The file being written.
        path: PathBuf,
        /// Whether the task was cancelled rather than panicked.
        cancelled: bool,
    },
}

impl Error {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { source, .. } => io_retryable(source.kind()),
            Self::Task { cancelled, .. } => *cancelled,
            Self::Config(_) | Self::InvalidName { .. } | Self::Compress { .. } => false,
        }
    }

    /// An [`Error::Io`] of `operation` on `path`.
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Whether an I/O error of this kind may go away by itself.
///
/// `NotFound` counts as transient: the emitter creates every directory it
/// writes to, so a missing one was removed concurrently (by retention on
/// another shard, or an operator) and the next attempt creates it again.
pub(crate) fn io_retryable(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::NotFound
            | io::ErrorKind::ResourceBusy
            | io::ErrorKind::StaleNetworkFileHandle
    )
}

impl From<Error> for kinesis_connectors_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Config(message) => Self::Config(message),
            error if error.is_retryable() => Self::emit_retryable(error),
            error => Self::emit_permanent(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(kind: io::ErrorKind) -> Error {
        Error::io("write", "/data/clicks/x.jsonl", io::Error::from(kind))
    }

    #[test]
    fn transient_io_errors_are_retryable() {
        for kind in [
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
            io::ErrorKind::TimedOut,
            io::ErrorKind::NotFound,
            io::ErrorKind::ResourceBusy,
        ] {
            let error = io_error(kind);
            assert!(error.is_retryable(), "{kind:?}");
            assert!(error.to_string().contains("(retryable)"), "{error}");
            assert!(kinesis_connectors_core::Error::from(error).is_retryable());
        }
    }

    #[test]
    fn operator_problems_are_not_retryable() {
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::StorageFull,
            io::ErrorKind::ReadOnlyFilesystem,
            io::ErrorKind::AlreadyExists,
            io::ErrorKind::InvalidInput,
        ] {
            let error = io_error(kind);
            assert!(!error.is_retryable(), "{kind:?}");
            let message = error.to_string();
            assert!(
                message.contains("could not write /data/clicks/x.jsonl"),
                "{message}"
            );
            assert!(!message.contains("retryable"), "{message}");
            let core = kinesis_connectors_core::Error::from(error);
            assert!(
                matches!(
                    core,
                    kinesis_connectors_core::Error::Emit {
                        retryable: false,
                        ..
                    }
                ),
                "{core:?}"
            );
        }
    }

    #[test]
    fn config_errors_stay_config_errors() {
        let core = kinesis_connectors_core::Error::from(Error::Config("no directory".into()));
        assert!(
            matches!(core, kinesis_connectors_core::Error::Config(ref m) if m == "no directory")
        );
        assert!(!core.is_retryable());
    }

    #[test]
    fn tasks_and_names() {
        let cancelled = Error::Task {
            path: "/d/f".into(),
            cancelled: true,
        };
        assert!(cancelled.is_retryable());
        assert!(cancelled.to_string().contains("cancelled"), "{cancelled}");
        let panicked = Error::Task {
            path: "/d/f".into(),
            cancelled: false,
        };
        assert!(!panicked.is_retryable());
        let name = Error::InvalidName {
            what: "stream name",
            name: "..".into(),
            reason: "it names a parent directory",
        };
        assert!(!name.is_retryable());
        assert!(name.to_string().contains("stream name \"..\""), "{name}");
    }
}
