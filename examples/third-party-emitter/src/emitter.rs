//! `RotatingFileEmitter`: one local file per batch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use kinesis_connectors_core::{
    Batch, Compression, EmitOutcome, Emitter, Encoder, RejectedItem, async_trait, encode_body,
};

use crate::error::Error;
use crate::files::{self, Retention};
use crate::path::Location;

/// The default file extension.
pub const DEFAULT_EXTENSION: &str = "jsonl";

/// What [`RotatingFileEmitter::write`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WrittenFile {
    /// The file written, or `None` when there was nothing to write (an
    /// empty batch, or every item rejected).
    pub path: Option<PathBuf>,
    /// How many items the file holds.
    pub records: usize,
    /// The file's size in bytes (compressed, when gzip is on).
    pub bytes: usize,
    /// Items the transformer could not encode; they are not in the file.
    pub rejected: Vec<RejectedItem>,
    /// Files deleted by retention after this write.
    pub removed: Vec<PathBuf>,
}

impl WrittenFile {
    fn nothing(rejected: Vec<RejectedItem>) -> Self {
        Self {
            path: None,
            records: 0,
            bytes: 0,
            rejected,
            removed: Vec::new(),
        }
    }
}

/// Writes each batch to its own file under a directory, named after the
/// batch so that a replayed batch replaces its own file instead of adding a
/// copy:
///
/// ```text
/// {dir}/{stream}/{yyyy}/{mm}/{dd}/{HH}/{shard}-{first}-{last}.{extension}[.gz]
/// ```
///
/// The date parts are the UTC hour in which the batch's first record
/// arrived in Kinesis (`1970/01/01/00` when the source does not say);
/// `{first}` and `{last}` are the sequence numbers of the first and last
/// record the batch covers, filtered ones included, with `_<sub>` for
/// records de-aggregated from a KPL record.
///
/// Items are encoded by the pipeline's transformer (its [`Encoder`]) and each followed by
/// the delimiter (`\n` by default). Files are written atomically (temporary
/// file, `fsync`, rename, directory `fsync`), optionally gzipped, and an
/// optional retention pass after each write keeps the stream directory
/// within a file count and age. One emitter can serve every shard: put it
/// in an `Arc` and hand clones to the pipelines.
///
/// See the [crate documentation](crate) for an example.
pub struct RotatingFileEmitter<T: Encoder> {
    dir: PathBuf,
    transformer: T,
    extension: String,
    delimiter: Vec<u8>,
    gzip: bool,
    retention: Retention,
    /// Batches written without an arrival time, for a rate-limited warning.
    undated: AtomicU64,
}

impl<T: Encoder> fmt::Debug for RotatingFileEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingFileEmitter")
            .field("dir", &self.dir)
            .field("extension", &self.extension)
            .field("gzip", &self.gzip)
            .field("max_files", &self.retention.max_files)
            .field("max_age", &self.retention.max_age)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> RotatingFileEmitter<T> {
    /// Starts an emitter writing under `dir`, encoding items with
    /// `transformer` (one per line by default).
    pub fn builder(dir: impl Into<PathBuf>, transformer: T) -> RotatingFileEmitterBuilder<T> {
        RotatingFileEmitterBuilder {
            dir: dir.into(),
            transformer,
            extension: DEFAULT_EXTENSION.to_owned(),
            delimiter: b"\n".to_vec(),
            gzip: false,
            retention: Retention::default(),
        }
    }

    /// The directory files are written under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path `batch` is written to (also for an empty batch, which is
    /// never written).
    ///
    /// Fails with [`Error::InvalidName`] when the batch's stream name or
    /// shard id cannot be a path segment.
    pub fn file_path(&self, batch: &Batch<T::Item>) -> Result<PathBuf, Error> {
        Ok(self.location(batch)?.path())
    }

    fn location(&self, batch: &Batch<T::Item>) -> Result<Location, Error> {
        if self.gzip {
            Location::of(&self.dir, batch, &format!("{}.gz", self.extension))
        } else {
            Location::of(&self.dir, batch, &self.extension)
        }
    }

    /// Encodes `batch` and writes it as one file, then applies retention.
    /// Items the transformer cannot encode are left out and reported in
    /// [`WrittenFile::rejected`]. An empty batch writes nothing.
    ///
    /// This is [`Emitter::emit`] with the file's path in the result. The
    /// file work runs on tokio's blocking pool (inline when called outside a
    /// tokio runtime). Retention failures are logged, not returned: the
    /// batch is written by then.
    pub async fn write(&self, batch: &Batch<T::Item>) -> Result<WrittenFile, Error> {
        if batch.is_empty() {
            return Ok(WrittenFile::nothing(Vec::new()));
        }
        let location = self.location(batch)?;
        if batch.first_arrival.is_none() && self.undated.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                shard_id = %batch.context.shard_id,
                first = %batch.first,
                "batch has no arrival time: its file goes under 1970/01/01/00 (warned once)"
            );
        }
        let (body, records, rejected) = self.encode(batch, &location)?;
        if records == 0 {
            return Ok(WrittenFile::nothing(rejected));
        }
        let bytes = body.len();
        let extension = self.extension.clone();
        let retention = self.retention;
        let job_location = location.clone();
        let job = move || {
            let path = files::write_atomic(&job_location.dir, &job_location.file_name, &body)?;
            let report = files::apply_retention(
                &job_location.stream_dir,
                &path,
                &extension,
                retention,
                SystemTime::now(),
            );
            Ok::<_, Error>((path, report))
        };
        let (path, report) = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(job)
                .await
                .map_err(|e| Error::Task {
                    path: location.path(),
                    cancelled: e.is_cancelled(),
                })??,
            Err(_) => job()?,
        };
        tracing::debug!(
            path = %path.display(),
            records,
            bytes,
            removed = report.removed.len(),
            retention_errors = report.errors,
            "wrote batch"
        );
        Ok(WrittenFile {
            path: Some(path),
            records,
            bytes,
            rejected,
            removed: report.removed,
        })
    }

    /// The file's content: every item the transformer encodes, each followed
    /// by the delimiter, gzipped when gzip is on.
    fn encode(
        &self,
        batch: &Batch<T::Item>,
        location: &Location,
    ) -> Result<(Vec<u8>, usize, Vec<RejectedItem>), Error> {
        let compress_error = |source| Error::Compress {
            path: location.path(),
            source,
        };
        let compression = if self.gzip {
            Compression::GZIP
        } else {
            Compression::None
        };
        let (body, encoded) = encode_body(&self.transformer, batch, &self.delimiter, compression)
            .map_err(compress_error)?;
        let written = encoded.written;
        let rejected = encoded.into_rejected(location.path().display());
        Ok((body, written, rejected))
    }
}

#[async_trait]
impl<T: Encoder> Emitter<T::Item> for RotatingFileEmitter<T> {
    async fn emit(&self, batch: &Batch<T::Item>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let written = self.write(batch).await?;
        Ok(EmitOutcome::with_rejected(written.rejected))
    }
}

/// Builds a [`RotatingFileEmitter`]; see [`RotatingFileEmitter::builder`].
pub struct RotatingFileEmitterBuilder<T: Encoder> {
    dir: PathBuf,
    transformer: T,
    extension: String,
    delimiter: Vec<u8>,
    gzip: bool,
    retention: Retention,
}

impl<T: Encoder> fmt::Debug for RotatingFileEmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingFileEmitterBuilder")
            .field("dir", &self.dir)
            .field("extension", &self.extension)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> RotatingFileEmitterBuilder<T> {
    /// The file extension, without the leading dot (default `jsonl`); `.gz`
    /// is appended when gzip is on. Retention only ever deletes files with
    /// this extension.
    pub fn extension(mut self, extension: impl Into<String>) -> Self {
        self.extension = extension.into();
        self
    }

    /// Written after every item (default `\n`: newline-delimited items).
    /// Empty when the transformer frames items itself.
    pub fn delimiter(mut self, delimiter: impl Into<Vec<u8>>) -> Self {
        self.delimiter = delimiter.into();
        self
    }

    /// Compresses files with gzip (default off); their names end in `.gz`.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Keeps at most `files` files per stream directory, deleting the
    /// oldest (by modification time) after each write (default: no limit).
    /// The file just written is never deleted.
    pub fn max_files(mut self, files: usize) -> Self {
        self.retention.max_files = Some(files);
        self
    }

    /// Deletes files of the stream directory not modified for longer than
    /// `age` after each write (default: no limit). The file just written is
    /// never deleted.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.retention.max_age = Some(age);
        self
    }

    /// Checks the configuration, creates the directory if needed and checks
    /// that files can be created in it, then builds the emitter.
    ///
    /// Fails with [`Error::Config`] when the directory path is empty, names
    /// something that is not a directory, or cannot be created or written;
    /// when the extension is empty or holds a path separator or starts with
    /// a dot; or when a retention limit is zero. Blocks on the file system
    /// briefly: call it while starting up.
    pub fn build(self) -> Result<RotatingFileEmitter<T>, Error> {
        check_extension(&self.extension)?;
        if self.retention.max_files == Some(0) {
            return Err(Error::Config(
                "max_files must be at least 1 (the file just written is always kept)".to_owned(),
            ));
        }
        if self.retention.max_age == Some(Duration::ZERO) {
            return Err(Error::Config("max_age must be longer than zero".to_owned()));
        }
        prepare_dir(&self.dir)?;
        Ok(RotatingFileEmitter {
            dir: self.dir,
            transformer: self.transformer,
            extension: self.extension,
            delimiter: self.delimiter,
            gzip: self.gzip,
            retention: self.retention,
            undated: AtomicU64::new(0),
        })
    }
}

fn check_extension(extension: &str) -> Result<(), Error> {
    let problem = if extension.is_empty() {
        "is empty: retention tells the emitter's files apart by their extension"
    } else if extension.starts_with('.') {
        "starts with `.`: give it without the dot, e.g. \"jsonl\""
    } else if extension.contains(['/', '\\', '\0']) {
        "contains a path separator or NUL"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "file extension {extension:?} {problem}"
    )))
}

/// Creates `dir` if it does not exist and checks that it is a directory in
/// which files can be created.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() {
        return Err(Error::Config(
            "the directory path is empty (use \".\" for the current directory)".to_owned(),
        ));
    }
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Config(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot access directory {}: {e}",
                dir.display()
            )));
        }
    }
    let probe = dir.join(format!(
        ".kinesis-emitter-files-probe-{}",
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| {
            Error::Config(format!(
                "cannot create files in directory {}: {e}",
                dir.display()
            ))
        })?;
    // A leftover probe is harmless: it is hidden and never an output file.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use kinesis_connectors_core::{Result, Transformer, Utf8Transformer};
    use kinesis_connectors_testkit::{batch, shard_context};

    use super::*;

    /// Encodes items, except ones equal to "bad".
    struct Picky;

    impl Transformer for Picky {
        type Item = String;

        fn to_item(&self, record: &kinesis_connectors_core::Record) -> Result<String> {
            Utf8Transformer.to_item(record)
        }
    }

    impl Encoder for Picky {
        fn from_item(&self, item: &String, out: &mut Vec<u8>) -> Result<()> {
            if item == "bad" {
                return Err(kinesis_connectors_core::Error::transform("bad item"));
            }
            out.extend_from_slice(item.as_bytes());
            Ok(())
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn bad_configurations_are_refused_at_build_time() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let cases: Vec<(RotatingFileEmitterBuilder<Utf8Transformer>, &str)> = vec![
            (
                RotatingFileEmitter::builder(&file, Utf8Transformer),
                "is not a directory",
            ),
            (
                RotatingFileEmitter::builder(file.join("below"), Utf8Transformer),
                "cannot access directory",
            ),
            (
                RotatingFileEmitter::builder("", Utf8Transformer),
                "directory path is empty",
            ),
            (
                RotatingFileEmitter::builder(root.path(), Utf8Transformer).extension(""),
                "is empty",
            ),
            (
                RotatingFileEmitter::builder(root.path(), Utf8Transformer).extension(".jsonl"),
                "without the dot",
            ),
            (
                RotatingFileEmitter::builder(root.path(), Utf8Transformer).extension("a/b"),
                "path separator",
            ),
            (
                RotatingFileEmitter::builder(root.path(), Utf8Transformer).max_files(0),
                "max_files",
            ),
            (
                RotatingFileEmitter::builder(root.path(), Utf8Transformer).max_age(Duration::ZERO),
                "max_age",
            ),
        ];
        for (builder, needle) in cases {
            let debug = format!("{builder:?}");
            let err = builder.build().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{debug}: {err}");
            assert!(err.to_string().contains(needle), "{debug}: {err}");
        }
    }

    #[test]
    fn build_creates_the_directory_and_leaves_no_probe() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/nested");
        let emitter = RotatingFileEmitter::builder(&dir, Utf8Transformer)
            .build()
            .unwrap();
        assert_eq!(emitter.dir(), dir);
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn rejected_items_are_left_out_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let emitter = RotatingFileEmitter::builder(root.path(), Picky)
            .build()
            .unwrap();
        let b = batch(shard_context("shard-0"), strings(&["a", "bad", "c"]), 10);
        let written = emitter.write(&b).await.unwrap();
        assert_eq!(written.records, 2);
        assert_eq!(written.rejected.len(), 1);
        assert_eq!(written.rejected[0].index, 1);
        let path = written.path.unwrap();
        assert_eq!(path, emitter.file_path(&b).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nc\n");
        assert_eq!(written.bytes, 4);

        // Every item rejected: no file.
        let all_bad = batch(shard_context("shard-0"), strings(&["bad"]), 20);
        let written = emitter.write(&all_bad).await.unwrap();
        assert_eq!(written.path, None);
        assert_eq!(written.rejected.len(), 1);
        assert!(!emitter.file_path(&all_bad).unwrap().exists());
    }

    #[tokio::test]
    async fn empty_batches_write_nothing_and_delimiters_are_configurable() {
        let root = tempfile::tempdir().unwrap();
        let emitter = RotatingFileEmitter::builder(root.path(), Utf8Transformer)
            .extension("csv")
            .delimiter(b"\r\n".to_vec())
            .build()
            .unwrap();
        let empty = batch::<String>(shard_context("shard-0"), Vec::new(), 1);
        assert_eq!(
            emitter.write(&empty).await.unwrap(),
            WrittenFile::nothing(Vec::new())
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

        let b = batch(shard_context("shard-0"), strings(&["a,1", "b,2"]), 5);
        let path = emitter.write(&b).await.unwrap().path.unwrap();
        assert!(
            path.to_string_lossy().ends_with("shard-0-5-6.csv"),
            "{path:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"a,1\r\nb,2\r\n");
    }

    #[test]
    fn writes_outside_a_tokio_runtime_too() {
        let root = tempfile::tempdir().unwrap();
        let emitter = RotatingFileEmitter::builder(root.path(), Utf8Transformer)
            .build()
            .unwrap();
        let b = batch(shard_context("shard-0"), strings(&["x"]), 1);
        let written = futures_lite_block_on(emitter.write(&b)).unwrap();
        assert_eq!(
            std::fs::read_to_string(written.path.unwrap()).unwrap(),
            "x\n"
        );
    }

    /// Polls a future to completion on this thread, without a runtime.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(output) => return output,
                Poll::Pending => std::thread::park(),
            }
        }
    }

    #[tokio::test]
    async fn invalid_names_fail_the_batch_permanently() {
        let root = tempfile::tempdir().unwrap();
        let emitter = RotatingFileEmitter::builder(root.path(), Utf8Transformer)
            .build()
            .unwrap();
        let b = batch(
            kinesis_connectors_core::ShardContext::new("app", "..", "shard-0"),
            strings(&["x"]),
            1,
        );
        let err = emitter.emit(&b).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("stream name"), "{err}");
    }
}
