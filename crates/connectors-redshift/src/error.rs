//! The crate's one error type, and how database and S3 errors are classified.

use std::fmt;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kinesis_connectors_aws::{Service, classify};

/// Errors of the Redshift emitters and loaders.
///
/// Every variant says whether retrying the batch may succeed
/// ([`Error::is_retryable`]). A failed load is always rolled back as a whole
/// (the file-table rows, the `COPY`), so retrying never loads a file twice.
/// Converted into the core's [`Error::Emit`](kinesis_connectors_core::Error::Emit)
/// (or [`Error::Config`](kinesis_connectors_core::Error::Config)) by `From`,
/// so the consumer loop retries what is retryable and stops the shard on the
/// rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder or loader was given a configuration that cannot work (bad
    /// identifier, a value that cannot be a SQL literal, missing option).
    #[error("invalid Redshift emitter configuration: {0}")]
    Config(String),

    /// The database could not be reached, or the connection broke (I/O, TLS,
    /// pool timeout). Retryable, unless the pool was closed.
    #[error("database connection failed during {operation}: {source}")]
    Connection {
        /// What was being done (`BEGIN`, `COPY`, `COMMIT`, …).
        operation: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },

    /// A statement failed. Retryable for serialization failures, deadlocks,
    /// lock timeouts, a concurrent loader inserting the same file, and
    /// server shutdowns; not for the rest (missing table, permissions, …).
    #[error(
        "{operation} on {table} failed{}{}: {message}",
        code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    Database {
        /// The statement (`LOCK`, `SELECT file table`, `INSERT file table`,
        /// `COPY`, `COMMIT`, …).
        operation: &'static str,
        /// The table the statement was about (quoted).
        table: String,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
        /// Whether the batch may succeed when retried.
        retryable: bool,
        /// The database's message (with its detail and hint).
        message: String,
    },

    /// The `COPY` was rejected because of the data (a value that does not
    /// fit its column, a malformed JSON line, a mandatory file that is
    /// missing…). Not retryable: the batch's transaction was rolled back, no
    /// row and no file-table entry of the batch remain.
    #[error(
        "COPY into {table} from {manifest} was rejected{}: {message}",
        code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
    )]
    CopyRejected {
        /// The data table (quoted).
        table: String,
        /// The `s3://` URL the `COPY` read: the manifest, or the single
        /// object of [`RedshiftBasicEmitter`](crate::RedshiftBasicEmitter).
        manifest: String,
        /// The SQLSTATE code, when the database rejected the data.
        code: Option<String>,
        /// The database's message (with where in the input it failed), or
        /// what the PostgreSQL loader found wrong with a line.
        message: String,
    },

    /// An S3 request of this crate failed: writing a manifest, or reading an
    /// object or a JSONPaths file in [`PostgresLoader`](crate::PostgresLoader).
    #[error(
        "S3 {operation} of {url} failed{}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        if *.retryable { ", retryable" } else { "" }
    )]
    S3 {
        /// The S3 operation (`PutObject`, `GetObject`).
        operation: &'static str,
        /// The object's `s3://bucket/key` URL.
        url: String,
        /// The S3 error code, when S3 answered with one.
        code: Option<String>,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// The SDK's description of the failure.
        message: String,
    },

    /// The access keys for a Redshift `COPY` could not be loaded from the
    /// credentials provider. Retryable (timeouts and provider errors are
    /// common; a chain that finds no credentials at all fails again on every
    /// retry until the consumer gives up on the batch).
    #[error("could not load AWS credentials for COPY (retryable): {message}")]
    Credentials {
        /// The provider's error.
        message: String,
    },

    /// Uploading the batch's object ([`RedshiftBasicEmitter`](crate::RedshiftBasicEmitter)) failed.
    #[error(transparent)]
    Upload(#[from] kinesis_connectors_s3::Error),
}

impl Error {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connection { source, .. } => !matches!(source, sqlx::Error::PoolClosed),
            Self::Database { retryable, .. } | Self::S3 { retryable, .. } => *retryable,
            Self::Credentials { .. } => true,
            Self::Upload(error) => error.is_retryable(),
            Self::Config(_) | Self::CopyRejected { .. } => false,
        }
    }
}

/// Lets builders take a [`TableName`](crate::TableName) where they take
/// names to parse.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
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

/// SQLSTATE codes worth retrying: the transaction was rolled back because of
/// other transactions or the server's state, not because of this batch.
fn sqlstate_retryable(code: &str) -> bool {
    // Class 08: connection exception; class 40: transaction rollback
    // (serialization failure 40001, deadlock 40P01, …).
    code.starts_with("08")
        || code.starts_with("40")
        || matches!(
            code,
            // admin / crash shutdown, cannot connect now
            "57P01" | "57P02" | "57P03"
            // too many connections, out of memory
            | "53300" | "53200"
            // lock not available
            | "55P03"
        )
}

/// What a database error said, pulled out of sqlx's error.
struct DbFailure {
    code: Option<String>,
    message: String,
}

/// Whether Redshift reported a serializable isolation violation (its error
/// 1023, sent with the generic SQLSTATE `XX000`).
fn is_serializable_violation(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("serializable isolation violation")
}

fn db_failure(error: &sqlx::Error) -> Option<DbFailure> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    let code = db.code().map(|c| c.into_owned());
    let mut message = db.message().to_owned();
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            message.push_str("; detail: ");
            message.push_str(detail);
        }
        if let Some(hint) = pg.hint() {
            message.push_str("; hint: ");
            message.push_str(hint);
        }
        if let Some(place) = pg.r#where() {
            message.push_str("; where: ");
            message.push_str(place);
        }
    }
    Some(DbFailure { code, message })
}

/// Whether the error means the connection (not the statement) failed.
fn is_connection_failure(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    )
}

/// Classifies an error of a statement other than the `COPY` itself.
///
/// `unique_violation_retryable`: a unique violation on the file table means
/// another loader inserted the same file concurrently; the retry finds the
/// file loaded and skips it.
pub(crate) fn classify_sql(
    operation: &'static str,
    table: &str,
    error: sqlx::Error,
    unique_violation_retryable: bool,
) -> Error {
    if is_connection_failure(&error) {
        return Error::Connection {
            operation,
            source: error,
        };
    }
    match db_failure(&error) {
        Some(DbFailure { code, message }) => {
            let retryable = code.as_deref().is_some_and(sqlstate_retryable)
                || (unique_violation_retryable && code.as_deref() == Some("23505"))
                || is_serializable_violation(&message);
            Error::Database {
                operation,
                table: table.to_owned(),
                code,
                retryable,
                message,
            }
        }
        None => Error::Database {
            operation,
            table: table.to_owned(),
            code: None,
            retryable: false,
            message: error.to_string(),
        },
    }
}

/// Classifies an error of the `COPY` of `manifest` into `table`: connection
/// failures and serialization failures are retryable; anything else the
/// database said is a rejection of the data (or of the statement), which
/// carries the database's message and the manifest.
pub(crate) fn classify_copy(table: &str, manifest: &str, error: sqlx::Error) -> Error {
    if is_connection_failure(&error) {
        return Error::Connection {
            operation: "COPY",
            source: error,
        };
    }
    match db_failure(&error) {
        Some(DbFailure { code, message }) => {
            if code.as_deref().is_some_and(sqlstate_retryable)
                || is_serializable_violation(&message)
            {
                Error::Database {
                    operation: "COPY",
                    table: table.to_owned(),
                    code,
                    retryable: true,
                    message: format!("{message} (loading {manifest})"),
                }
            } else {
                Error::CopyRejected {
                    table: table.to_owned(),
                    manifest: manifest.to_owned(),
                    code,
                    message,
                }
            }
        }
        None => Error::CopyRejected {
            table: table.to_owned(),
            manifest: manifest.to_owned(),
            code: None,
            message: error.to_string(),
        },
    }
}

/// The S3 error code of an SDK error, if S3 sent one.
pub(crate) fn s3_code<E>(error: &SdkError<E, HttpResponse>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    classify(Service::S3, error).code
}

/// Classifies an S3 SDK error of `operation` on `url` with the workspace's
/// shared classification ([`kinesis_connectors_aws::classify`]).
pub(crate) fn classify_s3<E>(
    operation: &'static str,
    url: &str,
    error: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classified = classify(Service::S3, &error);
    Error::S3 {
        operation,
        url: url.to_owned(),
        code: classified.code,
        retryable: classified.class.is_retryable(),
        message: DisplayErrorContext(&error).to_string(),
    }
}

/// A byte-stream error while reading an object: the connection broke.
pub(crate) fn s3_read_error(url: &str, error: impl fmt::Display) -> Error {
    Error::S3 {
        operation: "GetObject",
        url: url.to_owned(),
        code: None,
        retryable: true,
        message: format!("reading the body failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        for code in [
            "08006", "08003", "40001", "40P01", "57P01", "53300", "55P03",
        ] {
            assert!(sqlstate_retryable(code), "{code}");
        }
        for code in ["22P02", "42P01", "42501", "23505", "XX000", "23502"] {
            assert!(!sqlstate_retryable(code), "{code}");
        }
        assert!(is_serializable_violation(
            "1023 DETAIL: Serializable isolation violation on table - 123, transactions forming the cycle are: 1, 2"
        ));
    }

    #[test]
    fn connection_failures_are_retryable_unless_the_pool_is_closed() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let error = classify_sql("BEGIN", "\"t\"", sqlx::Error::Io(io), false);
        assert!(matches!(
            error,
            Error::Connection {
                operation: "BEGIN",
                ..
            }
        ));
        assert!(error.is_retryable());
        let timeout = classify_copy("\"t\"", "s3://b/m", sqlx::Error::PoolTimedOut);
        assert!(timeout.is_retryable());
        let closed = classify_sql("BEGIN", "\"t\"", sqlx::Error::PoolClosed, false);
        assert!(!closed.is_retryable());
    }

    #[test]
    fn other_errors_are_permanent_and_name_the_manifest() {
        let error = classify_copy(
            "\"t\"",
            "s3://b/manifests/m",
            sqlx::Error::Protocol("x".into()),
        );
        assert!(
            error.is_retryable(),
            "protocol errors mean a broken connection"
        );
        let error = classify_copy("\"t\"", "s3://b/manifests/m", sqlx::Error::RowNotFound);
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(text.contains("s3://b/manifests/m"), "{text}");
        assert!(text.contains("\"t\""), "{text}");
    }

    #[test]
    fn conversion_into_the_core_error() {
        let config = kinesis_connectors_core::Error::from(Error::Config("no table".into()));
        assert!(matches!(config, kinesis_connectors_core::Error::Config(_)));
        let rejected = kinesis_connectors_core::Error::from(Error::CopyRejected {
            table: "\"t\"".into(),
            manifest: "s3://b/m".into(),
            code: Some("22P02".into()),
            message: "invalid input syntax for type bigint: \"x\"".into(),
        });
        assert!(!rejected.is_retryable());
        let text = rejected.to_string();
        assert!(
            text.contains("s3://b/m") && text.contains("22P02"),
            "{text}"
        );
        let serialization = kinesis_connectors_core::Error::from(Error::Database {
            operation: "COPY",
            table: "\"t\"".into(),
            code: Some("40001".into()),
            retryable: true,
            message: "could not serialize access".into(),
        });
        assert!(serialization.is_retryable());
    }
}
