//! Where a batch is written: a path made only of the batch, so a replay
//! lands on the same file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kinesis_connectors_core::{Batch, Position};

use crate::error::Error;

/// The file a batch goes to, and the directories around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// `{root}/{stream}`: the scope of retention.
    pub(crate) stream_dir: PathBuf,
    /// `{root}/{stream}/{yyyy}/{mm}/{dd}/{HH}`.
    pub(crate) dir: PathBuf,
    /// `{shard}-{first}-{last}.{extension}`.
    pub(crate) file_name: String,
}

impl Location {
    /// The full path of the file.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// Where `batch` goes under `root`; `extension` includes `.gz` when
    /// gzip is on. The date parts are the UTC hour of the batch's first
    /// record's arrival in Kinesis (the UNIX epoch when unknown).
    pub(crate) fn of<T>(root: &Path, batch: &Batch<T>, extension: &str) -> Result<Self, Error> {
        let stream = segment("stream name", &batch.context.stream)?;
        let shard = segment("shard id", &batch.context.shard_id)?;
        if shard.starts_with('.') {
            // The file name would start with a dot: hidden, and taken for a
            // temporary file by retention.
            return Err(Error::InvalidName {
                what: "shard id",
                name: shard.to_owned(),
                reason: "it starts with `.`",
            });
        }
        let date =
            time::OffsetDateTime::from_unix_timestamp(batch.first_arrival.map_or(0, unix_seconds))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let stream_dir = root.join(stream);
        let dir = stream_dir
            .join(format!("{:04}", date.year()))
            .join(format!("{:02}", u8::from(date.month())))
            .join(format!("{:02}", date.day()))
            .join(format!("{:02}", date.hour()));
        let mut file_name = String::with_capacity(shard.len() + 128);
        file_name.push_str(shard);
        file_name.push('-');
        write_position(&mut file_name, &batch.first);
        file_name.push('-');
        write_position(&mut file_name, &batch.last);
        file_name.push('.');
        file_name.push_str(extension);
        Ok(Self {
            stream_dir,
            dir,
            file_name,
        })
    }
}

/// `name` if it is usable as one path segment.
fn segment<'a>(what: &'static str, name: &'a str) -> Result<&'a str, Error> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it names the current or parent directory"
    } else if name.contains(['/', '\\']) {
        "it contains a path separator"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(name);
    };
    Err(Error::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

/// A position as the S3 emitter writes it: the sequence number, and
/// `_<sub>` for a record de-aggregated from a KPL record, so batches of
/// sub-records of one record get distinct names.
fn write_position(out: &mut String, position: &Position) {
    out.push_str(position.sequence.as_str());
    if let Some(sub) = position.sub_sequence {
        let _ = write!(out, "_{sub}");
    }
}

/// Whole seconds since the UNIX epoch (negative before it, rounded down).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kinesis_connectors_core::{SequenceNumber, ShardContext};

    use super::*;

    const SEQ_A: &str = "49590338271490256608559692538361571095921575989136588898";
    const SEQ_B: &str = "49590338271490256608559692540925702759324208523137515618";

    fn pos(seq: &str, sub: Option<u64>) -> Position {
        Position {
            sequence: SequenceNumber::parse(seq).unwrap(),
            sub_sequence: sub,
        }
    }

    fn batch(stream: &str, shard: &str, first: Position, last: Position) -> Batch<String> {
        Batch::new(
            ShardContext::new("app", stream, shard),
            Vec::new(),
            first,
            last,
        )
    }

    #[test]
    fn names_come_from_stream_shard_range_and_arrival_hour() {
        let mut b = batch(
            "clicks",
            "shardId-000000000001",
            pos(SEQ_A, None),
            pos(SEQ_B, None),
        );
        // 2024-02-29T13:05:09Z
        b.first_arrival = Some(UNIX_EPOCH + Duration::from_secs(1_709_211_909));
        let location = Location::of(Path::new("/data"), &b, "jsonl").unwrap();
        assert_eq!(location.stream_dir, Path::new("/data/clicks"));
        assert_eq!(location.dir, Path::new("/data/clicks/2024/02/29/13"));
        assert_eq!(
            location.path(),
            Path::new(&format!(
                "/data/clicks/2024/02/29/13/shardId-000000000001-{SEQ_A}-{SEQ_B}.jsonl"
            ))
        );
    }

    #[test]
    fn sub_sequences_gzip_and_unknown_arrival() {
        let b = batch("s", "shard-0", pos("7", Some(0)), pos("7", Some(3)));
        let location = Location::of(Path::new("out"), &b, "jsonl.gz").unwrap();
        assert_eq!(
            location.path(),
            Path::new("out/s/1970/01/01/00/shard-0-7_0-7_3.jsonl.gz")
        );
    }

    #[test]
    fn the_same_batch_always_gets_the_same_name() {
        let mut b = batch("s", "shard-0", pos("10", None), pos("19", None));
        b.first_arrival = Some(SystemTime::now());
        let once = Location::of(Path::new("r"), &b, "jsonl").unwrap();
        let again = Location::of(Path::new("r"), &b.clone(), "jsonl").unwrap();
        assert_eq!(once, again);
    }

    #[test]
    fn unsafe_names_are_refused() {
        for (stream, shard, needle) in [
            ("", "shard-0", "stream name \"\""),
            ("..", "shard-0", "parent directory"),
            ("a/b", "shard-0", "path separator"),
            ("a\\b", "shard-0", "path separator"),
            ("s", "", "shard id \"\""),
            ("s", "../../etc", "path separator"),
            ("s", ".hidden", "starts with `.`"),
            ("s", "x\0y", "NUL"),
        ] {
            let b = batch(stream, shard, pos("1", None), pos("1", None));
            let err = Location::of(Path::new("r"), &b, "jsonl").unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn times_before_the_epoch_and_out_of_range_do_not_panic() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(500)), -1);
        let mut b = batch("s", "shard-0", pos("1", None), pos("1", None));
        b.first_arrival = Some(UNIX_EPOCH - Duration::from_secs(3600));
        let before = Location::of(Path::new("r"), &b, "jsonl").unwrap();
        assert_eq!(before.dir, Path::new("r/s/1969/12/31/23"));
    }
}
