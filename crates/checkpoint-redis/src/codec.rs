//! Key names and value formats: pure functions, tested without a server.

use std::collections::HashMap;

use kinesis_connectors_core::{Checkpoint, Position, SequenceNumber, ShardKey, StoredLease};

use crate::error::Error;

/// The value stored for a shard that reached its end.
pub(crate) const SHARD_END: &str = "SHARD_END";

/// Lease hash fields.
pub(crate) const FIELD_OWNER: &str = "owner";
pub(crate) const FIELD_COUNTER: &str = "counter";
pub(crate) const FIELD_PARENTS: &str = "parents";
/// `parent.0`, `parent.1`, …: one field per parent shard id.
pub(crate) const FIELD_PARENT_PREFIX: &str = "parent.";

/// Builds the Redis key names of one store.
///
/// `{prefix}{application}:checkpoint:{stream}:{shard}` is the key
/// harlow/kinesis-connectors (Go) used, so with an empty prefix a Go
/// application's checkpoints are read as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The string holding a shard's checkpoint.
    pub(crate) fn checkpoint(&self, key: &ShardKey) -> String {
        format!(
            "{}{}:checkpoint:{}:{}",
            self.prefix, key.application, key.stream, key.shard_id
        )
    }

    /// The string holding a shard's pending batch: the last position of a
    /// batch cut by time that was about to be emitted. Named like the
    /// checkpoint key, so a shard's keys sort together and the Go scheme's
    /// `{app}:checkpoint:…` keys stay untouched.
    pub(crate) fn pending_batch(&self, key: &ShardKey) -> String {
        format!(
            "{}{}:pending:{}:{}",
            self.prefix, key.application, key.stream, key.shard_id
        )
    }

    /// The hash holding a shard's lease (owner, counter, parents).
    pub(crate) fn lease(&self, key: &ShardKey) -> String {
        format!(
            "{}{}:lease:{}:{}",
            self.prefix, key.application, key.stream, key.shard_id
        )
    }

    /// The set of shard ids that have a lease, per application and stream.
    pub(crate) fn lease_index(&self, application: &str, stream: &str) -> String {
        format!("{}{application}:leases:{stream}", self.prefix)
    }
}

/// The stored form of a checkpoint: `SHARD_END`, `<sequence>` for a whole
/// record (the Go library's format too), or `<sequence>/<sub-sequence>` for
/// a record de-aggregated from a KPL record. Sequence and sub-sequence are
/// one string, so they are always written together.
pub(crate) fn encode_checkpoint(checkpoint: &Checkpoint) -> String {
    match checkpoint {
        Checkpoint::ShardEnd => SHARD_END.to_owned(),
        Checkpoint::At(Position {
            sequence,
            sub_sequence: None,
        }) => sequence.to_string(),
        Checkpoint::At(Position {
            sequence,
            sub_sequence: Some(sub),
        }) => format!("{sequence}/{sub}"),
    }
}

/// Reads any stored form [`encode_checkpoint`] writes, including the plain
/// sequence numbers the Go library wrote; `None` for anything else. Must
/// accept exactly what the Lua scripts' `parse` accepts.
pub(crate) fn decode_checkpoint(value: &str) -> Option<Checkpoint> {
    if value == SHARD_END {
        return Some(Checkpoint::ShardEnd);
    }
    let (sequence, sub_sequence) = match value.split_once('/') {
        Some((sequence, sub)) => {
            if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (sequence, Some(sub.parse::<u64>().ok()?))
        }
        None => (value, None),
    };
    let sequence = SequenceNumber::parse(sequence).ok()?;
    Some(Checkpoint::At(Position {
        sequence,
        sub_sequence,
    }))
}

/// The stored value of a checkpoint key, decoded.
pub(crate) fn decode_stored_checkpoint(key: &str, value: &[u8]) -> Result<Checkpoint, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(decode_checkpoint)
        .ok_or_else(|| Error::InvalidCheckpoint {
            key: key.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        })
}

/// The stored form of a pending batch's end: the same as a checkpoint at
/// that position (`<sequence>` or `<sequence>/<sub-sequence>`), so a whole
/// record and its sub-record 0 stay apart and a replay ends exactly there.
pub(crate) fn encode_position(position: &Position) -> String {
    encode_checkpoint(&Checkpoint::At(position.clone()))
}

/// The stored value of a pending-batch key, decoded; `SHARD_END` or
/// anything else that is not a position is an error naming the key.
pub(crate) fn decode_stored_position(key: &str, value: &[u8]) -> Result<Position, Error> {
    match decode_stored_checkpoint(key, value)? {
        Checkpoint::At(position) => Ok(position),
        Checkpoint::ShardEnd => Err(Error::InvalidCheckpoint {
            key: key.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        }),
    }
}

/// The fields of a new lease hash after `counter` (set by the script):
/// the number of parents, then one field per parent.
pub(crate) fn parent_fields(parents: &[String]) -> Vec<(String, String)> {
    let mut fields = Vec::with_capacity(parents.len() + 1);
    fields.push((FIELD_PARENTS.to_owned(), parents.len().to_string()));
    fields.extend(
        parents
            .iter()
            .enumerate()
            .map(|(i, parent)| (format!("{FIELD_PARENT_PREFIX}{i}"), parent.clone())),
    );
    fields
}

/// A lease from its hash fields (`HGETALL`); `Ok(None)` when the hash is
/// gone (listed in the index but deleted since).
pub(crate) fn decode_lease(
    key: &str,
    shard_id: &str,
    fields: &HashMap<String, String>,
    checkpoint: Option<Checkpoint>,
) -> Result<Option<StoredLease>, Error> {
    if fields.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| Error::InvalidLease {
        key: key.to_owned(),
        reason,
    };
    let counter = fields
        .get(FIELD_COUNTER)
        .ok_or_else(|| invalid("no counter field".to_owned()))?;
    let counter = counter
        .parse::<u64>()
        .map_err(|_| invalid(format!("counter {counter:?} is not a number")))?;
    let parent_count = match fields.get(FIELD_PARENTS) {
        None => 0,
        Some(count) => count
            .parse::<usize>()
            .map_err(|_| invalid(format!("parents {count:?} is not a number")))?,
    };
    let parent_shard_ids = (0..parent_count)
        .map(|i| {
            let field = format!("{FIELD_PARENT_PREFIX}{i}");
            fields
                .get(&field)
                .cloned()
                .ok_or_else(|| invalid(format!("{field} is missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(StoredLease {
        shard_id: shard_id.to_owned(),
        owner: fields.get(FIELD_OWNER).cloned(),
        counter,
        checkpoint,
        parent_shard_ids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINESIS_SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

    fn at(sequence: &str, sub: Option<u64>) -> Checkpoint {
        Checkpoint::At(Position {
            sequence: SequenceNumber::parse(sequence).unwrap(),
            sub_sequence: sub,
        })
    }

    #[test]
    fn keys_follow_the_go_scheme() {
        let key = ShardKey::new("my-app", "orders", "shardId-000000000001");
        let keys = Keys::default();
        assert_eq!(
            keys.checkpoint(&key),
            "my-app:checkpoint:orders:shardId-000000000001"
        );
        assert_eq!(keys.lease(&key), "my-app:lease:orders:shardId-000000000001");
        assert_eq!(keys.lease_index("my-app", "orders"), "my-app:leases:orders");
        assert_eq!(
            keys.pending_batch(&key),
            "my-app:pending:orders:shardId-000000000001"
        );
    }

    #[test]
    fn the_prefix_goes_first_verbatim() {
        let key = ShardKey::new("my-app", "orders", "shardId-000000000001");
        let keys = Keys::new("prod:");
        assert_eq!(keys.prefix(), "prod:");
        assert_eq!(
            keys.checkpoint(&key),
            "prod:my-app:checkpoint:orders:shardId-000000000001"
        );
        assert_eq!(
            keys.lease(&key),
            "prod:my-app:lease:orders:shardId-000000000001"
        );
        assert_eq!(
            keys.lease_index("my-app", "orders"),
            "prod:my-app:leases:orders"
        );
        assert_eq!(
            keys.pending_batch(&key),
            "prod:my-app:pending:orders:shardId-000000000001"
        );
    }

    #[test]
    fn pending_positions_round_trip_and_keep_whole_records_apart() {
        for (position, stored) in [
            (
                Position::new(SequenceNumber::parse(KINESIS_SEQ).unwrap()),
                KINESIS_SEQ.to_owned(),
            ),
            (
                Position {
                    sequence: SequenceNumber::parse(KINESIS_SEQ).unwrap(),
                    sub_sequence: Some(0),
                },
                format!("{KINESIS_SEQ}/0"),
            ),
        ] {
            assert_eq!(encode_position(&position), stored);
            assert_eq!(
                decode_stored_position("k", stored.as_bytes()).unwrap(),
                position
            );
        }
        for bad in [&b"SHARD_END"[..], b"x", b"42/"] {
            match decode_stored_position("pending-key", bad) {
                Err(Error::InvalidCheckpoint { key, .. }) => assert_eq!(key, "pending-key"),
                other => panic!("{bad:?}: expected InvalidCheckpoint, got {other:?}"),
            }
        }
    }

    #[test]
    fn checkpoints_round_trip() {
        for checkpoint in [
            Checkpoint::ShardEnd,
            at("0", None),
            at("42", None),
            at("42", Some(0)),
            at("42", Some(3)),
            at(KINESIS_SEQ, None),
            at(KINESIS_SEQ, Some(u64::MAX)),
            at(&"9".repeat(128), Some(7)),
        ] {
            let stored = encode_checkpoint(&checkpoint);
            assert_eq!(decode_checkpoint(&stored), Some(checkpoint), "{stored}");
        }
        assert_eq!(encode_checkpoint(&Checkpoint::ShardEnd), "SHARD_END");
        assert_eq!(encode_checkpoint(&at("42", Some(3))), "42/3");
        assert_eq!(encode_checkpoint(&at(KINESIS_SEQ, None)), KINESIS_SEQ);
    }

    #[test]
    fn reads_the_go_format() {
        // harlow/kinesis-connectors stored the plain sequence number string.
        assert_eq!(decode_checkpoint(KINESIS_SEQ), Some(at(KINESIS_SEQ, None)));
        // What this crate writes for a whole record is that same format, so a
        // Go consumer can read it back too.
        assert_eq!(encode_checkpoint(&at(KINESIS_SEQ, None)), KINESIS_SEQ);
        // Leading zeros are ignored, as by `SequenceNumber::parse`.
        assert_eq!(decode_checkpoint("0042"), Some(at("42", None)));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            " 42",
            "42 ",
            "42\n",
            "-1",
            "+42",
            "4e5",
            "42/",
            "/3",
            "42/+3",
            "42/-3",
            "42/3/4",
            "42/18446744073709551616", // u64::MAX + 1
            "shard_end",
            "SHARD_END ",
            "{\"sequence\":\"42\"}",
        ] {
            assert_eq!(decode_checkpoint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_values_that_do_not_decode_name_key_and_value() {
        match decode_stored_checkpoint("k", b"\xff\xfe") {
            Err(Error::InvalidCheckpoint { key, value }) => {
                assert_eq!(key, "k");
                assert_eq!(value, "\u{fffd}\u{fffd}");
            }
            other => panic!("expected InvalidCheckpoint, got {other:?}"),
        }
        assert_eq!(
            decode_stored_checkpoint("k", b"7/1").unwrap(),
            at("7", Some(1))
        );
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn leases_decode_from_their_hash() {
        let parents = vec!["shardId-0".to_owned(), "shardId-1".to_owned()];
        let mut hash: HashMap<String, String> = parent_fields(&parents).into_iter().collect();
        hash.insert("counter".into(), "7".into());
        hash.insert("owner".into(), "worker-a".into());
        let lease = decode_lease("k", "shardId-2", &hash, Some(at("5", None)))
            .unwrap()
            .unwrap();
        assert_eq!(lease.shard_id, "shardId-2");
        assert_eq!(lease.owner.as_deref(), Some("worker-a"));
        assert_eq!(lease.counter, 7);
        assert_eq!(lease.parent_shard_ids, parents);
        assert_eq!(lease.checkpoint, Some(at("5", None)));

        let free = decode_lease("k", "s", &fields(&[("counter", "0")]), None)
            .unwrap()
            .unwrap();
        assert_eq!(free.owner, None);
        assert!(free.parent_shard_ids.is_empty());

        assert_eq!(decode_lease("k", "s", &HashMap::new(), None).unwrap(), None);
    }

    #[test]
    fn malformed_leases_are_errors() {
        for hash in [
            fields(&[("owner", "w")]),
            fields(&[("counter", "-1")]),
            fields(&[("counter", "x")]),
            fields(&[("counter", "1"), ("parents", "two")]),
            fields(&[("counter", "1"), ("parents", "2"), ("parent.0", "a")]),
        ] {
            match decode_lease("lease-key", "s", &hash, None) {
                Err(Error::InvalidLease { key, .. }) => assert_eq!(key, "lease-key"),
                other => panic!("{hash:?}: expected InvalidLease, got {other:?}"),
            }
        }
    }
}
