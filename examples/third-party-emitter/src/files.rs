//! The blocking file work: atomic writes and retention.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::Error;

/// How often a write is tried again when its directory disappears between
/// creating it and creating the temporary file (retention on another shard
/// removes directories it emptied).
const DIRECTORY_RACE_ATTEMPTS: usize = 3;

/// How deep retention looks under a stream directory
/// (`{yyyy}/{mm}/{dd}/{HH}/file` is 5 levels).
const MAX_DEPTH: usize = 8;

/// The name of a fresh temporary file for `file_name`, in the same
/// directory: hidden, unique to this process and write.
fn temp_name(file_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{file_name}.{}-{count}.tmp", std::process::id())
}

/// Writes `body` to `dir/file_name` atomically: into a temporary file in the
/// same directory, flushed to disk, then renamed over the target, and the
/// directory flushed. A reader sees the old file or the new one, never a
/// part; a replay replaces the file with the same content.
pub(crate) fn write_atomic(dir: &Path, file_name: &str, body: &[u8]) -> Result<PathBuf, Error> {
    let target = dir.join(file_name);
    let mut attempt = 0;
    let (temp, mut file) = loop {
        attempt += 1;
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let temp = dir.join(temp_name(file_name));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if attempt >= DIRECTORY_RACE_ATTEMPTS {
                    return Err(Error::io("create temporary file", temp, e));
                }
            }
            Err(e) => return Err(Error::io("create temporary file", temp, e)),
        }
    };
    let written = file
        .write_all(body)
        .map_err(|e| Error::io("write", &temp, e))
        .and_then(|()| file.sync_all().map_err(|e| Error::io("sync", &temp, e)));
    drop(file);
    if let Err(error) =
        written.and_then(|()| fs::rename(&temp, &target).map_err(|e| Error::io("rename", &temp, e)))
    {
        remove_quietly(&temp);
        return Err(error);
    }
    sync_dir(dir)?;
    Ok(target)
}

/// Flushes a directory's entries (the rename) to disk, where the platform
/// can: on Unix a directory is opened and synced like a file.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), Error> {
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove a temporary file");
    }
}

/// Which files retention keeps, per stream directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Keep at most this many files (the newest by modification time).
    pub(crate) max_files: Option<usize>,
    /// Delete files not modified for longer than this.
    pub(crate) max_age: Option<Duration>,
}

impl Retention {
    pub(crate) fn is_off(&self) -> bool {
        self.max_files.is_none() && self.max_age.is_none()
    }
}

/// What one retention pass did.
#[derive(Debug, Default)]
pub(crate) struct RetentionReport {
    /// The files deleted.
    pub(crate) removed: Vec<PathBuf>,
    /// How many files or directories could not be read or deleted (logged).
    pub(crate) errors: usize,
}

/// Whether `name` is a file this emitter writes with `extension` (with or
/// without gzip); temporary and other hidden files are not.
pub(crate) fn is_output_file(name: &str, extension: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let Some(stem) = name
        .strip_suffix(".gz")
        .unwrap_or(name)
        .strip_suffix(extension)
    else {
        return false;
    };
    stem.ends_with('.') && stem.len() > 1
}

/// Applies `retention` to the output files under `stream_dir`, never
/// deleting `keep` (the file just written). Failures are logged and counted,
/// not returned: the batch is already safely written.
pub(crate) fn apply_retention(
    stream_dir: &Path,
    keep: &Path,
    extension: &str,
    retention: Retention,
    now: SystemTime,
) -> RetentionReport {
    let mut report = RetentionReport::default();
    if retention.is_off() {
        return report;
    }
    let files = list_output_files(stream_dir, extension, &mut report);
    for path in expired(files, keep, retention, now) {
        match fs::remove_file(&path) {
            Ok(()) => {
                remove_empty_parents(&path, stream_dir);
                report.removed.push(path);
            }
            // Another shard's retention pass got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "retention could not delete a file");
                report.errors += 1;
            }
        }
    }
    report
}

/// The files to delete, given every output file with its modification time.
///
/// Files are ranked newest first (ties broken by path, so concurrent passes
/// on several shards agree); a file is deleted when its rank is at or past
/// `max_files` or it is older than `max_age`. `keep` is never deleted.
pub(crate) fn expired(
    mut files: Vec<(PathBuf, SystemTime)>,
    keep: &Path,
    retention: Retention,
    now: SystemTime,
) -> Vec<PathBuf> {
    files.sort_by(|(a_path, a_time), (b_path, b_time)| {
        b_time.cmp(a_time).then_with(|| b_path.cmp(a_path))
    });
    files
        .into_iter()
        .enumerate()
        .filter(|(rank, (path, modified))| {
            if path == keep {
                return false;
            }
            let too_many = retention.max_files.is_some_and(|max| *rank >= max);
            let too_old = retention
                .max_age
                .is_some_and(|max| now.duration_since(*modified).is_ok_and(|age| age > max));
            too_many || too_old
        })
        .map(|(_, (path, _))| path)
        .collect()
}

/// Every output file under `root` (not following symbolic links), with its
/// modification time.
fn list_output_files(
    root: &Path,
    extension: &str,
    report: &mut RetentionReport,
) -> Vec<(PathBuf, SystemTime)> {
    let mut files = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "retention could not list a directory");
                report.errors += 1;
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "retention could not read a directory entry");
                    report.errors += 1;
                    continue;
                }
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push((path, depth + 1));
                }
            } else if kind.is_file()
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| is_output_file(name, extension))
            {
                match entry.metadata().and_then(|m| m.modified()) {
                    Ok(modified) => files.push((path, modified)),
                    // Deleted since it was listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "retention could not read a file's modification time");
                        report.errors += 1;
                    }
                }
            }
        }
    }
    files
}

/// Removes the directories between `file` and `stream_dir` that are empty
/// now, deepest first; stops at the first that is not (or is gone).
fn remove_empty_parents(file: &Path, stream_dir: &Path) {
    let mut dir = file.parent();
    while let Some(current) = dir {
        if current == stream_dir || !current.starts_with(stream_dir) {
            break;
        }
        if fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn files(list: &[(&str, u64)]) -> Vec<(PathBuf, SystemTime)> {
        list.iter()
            .map(|(path, secs)| (PathBuf::from(path), at(*secs)))
            .collect()
    }

    #[test]
    fn output_files_are_recognised_by_extension() {
        assert!(is_output_file("shard-0-1-2.jsonl", "jsonl"));
        assert!(is_output_file("shard-0-1-2.jsonl.gz", "jsonl"));
        assert!(!is_output_file(".shard-0-1-2.jsonl.123-0.tmp", "jsonl"));
        assert!(!is_output_file(".shard-0-1-2.jsonl", "jsonl"));
        assert!(!is_output_file("notes.txt", "jsonl"));
        assert!(!is_output_file("xjsonl", "jsonl"));
        assert!(!is_output_file(".jsonl", "jsonl"));
        assert!(is_output_file("a.csv", "csv"));
    }

    #[test]
    fn max_files_keeps_the_newest_and_never_the_one_just_written() {
        let all = files(&[("a", 10), ("b", 30), ("c", 20), ("d", 40)]);
        let keep_two = Retention {
            max_files: Some(2),
            max_age: None,
        };
        let mut gone = expired(all.clone(), Path::new("d"), keep_two, at(50));
        gone.sort();
        assert_eq!(gone, [PathBuf::from("a"), PathBuf::from("c")]);
        // The file just written is kept even when it is not the newest (a
        // clock step back); the limit is then exceeded by one.
        let keep_one = Retention {
            max_files: Some(1),
            max_age: None,
        };
        let mut gone = expired(all, Path::new("a"), keep_one, at(50));
        gone.sort();
        assert_eq!(
            gone,
            [PathBuf::from("b"), PathBuf::from("c")],
            "d is the newest, a was just written"
        );
    }

    #[test]
    fn max_age_deletes_old_files_only() {
        let all = files(&[("old", 100), ("edge", 400), ("new", 450)]);
        let retention = Retention {
            max_files: None,
            max_age: Some(Duration::from_secs(100)),
        };
        assert_eq!(
            expired(all.clone(), Path::new("new"), retention, at(500)),
            [PathBuf::from("old")]
        );
        // Files from the future (clock skew) are not old.
        assert!(expired(all, Path::new("new"), retention, at(0)).is_empty());
    }

    #[test]
    fn ties_are_broken_by_path_so_concurrent_passes_agree() {
        let all = files(&[("x/1", 10), ("x/2", 10), ("x/3", 10)]);
        let retention = Retention {
            max_files: Some(1),
            max_age: None,
        };
        let from_1 = expired(all.clone(), Path::new("x/1"), retention, at(10));
        let from_3 = expired(all, Path::new("x/3"), retention, at(10));
        assert_eq!(from_1, [PathBuf::from("x/2")]);
        assert_eq!(from_3, [PathBuf::from("x/2"), PathBuf::from("x/1")]);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let path = write_atomic(&dir, "f.jsonl", b"one\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\n");
        write_atomic(&dir, "f.jsonl", b"two\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two\n");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.jsonl"]);
    }

    #[test]
    fn atomic_write_into_a_file_fails_without_retry() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("blocker");
        fs::write(&blocker, b"x").unwrap();
        let err = write_atomic(&blocker.join("sub"), "f.jsonl", b"x").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Io {
                    operation: "create directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn retention_deletes_files_and_empty_directories() {
        let root = tempfile::tempdir().unwrap();
        let stream = root.path().join("s");
        let old = write_atomic(&stream.join("2020/01/01/00"), "a-1-1.jsonl", b"x").unwrap();
        let new = write_atomic(&stream.join("2024/01/01/00"), "a-2-2.jsonl", b"x").unwrap();
        let other = write_atomic(&stream.join("2020/01/01/00"), "notes.txt", b"x").unwrap();
        let file = fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        drop(file);
        let retention = Retention {
            max_files: None,
            max_age: Some(Duration::from_secs(60)),
        };
        let report = apply_retention(&stream, &new, "jsonl", retention, SystemTime::now());
        assert_eq!(report.removed, std::slice::from_ref(&old));
        assert_eq!(report.errors, 0);
        assert!(!old.exists() && new.exists() && other.exists());
        // notes.txt kept its directory; without it, deleting the last old
        // file removes every directory up to the stream directory.
        fs::remove_file(&other).unwrap();
        let again = write_atomic(&stream.join("2020/01/01/00"), "a-0-0.jsonl", b"x").unwrap();
        let file = fs::File::options().write(true).open(&again).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        drop(file);
        apply_retention(&stream, &new, "jsonl", retention, SystemTime::now());
        assert!(!stream.join("2020").exists(), "empty directories removed");
        assert!(stream.join("2024/01/01/00").is_dir());
    }

    #[test]
    fn retention_of_a_missing_directory_is_a_no_op() {
        let root = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_files: Some(1),
            max_age: None,
        };
        let report = apply_retention(
            &root.path().join("nope"),
            Path::new("x"),
            "jsonl",
            retention,
            SystemTime::now(),
        );
        assert!(report.removed.is_empty());
        assert_eq!(report.errors, 0);
    }
}
