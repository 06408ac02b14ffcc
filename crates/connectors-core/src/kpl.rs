//! The KPL aggregation format: many user records packed into one Kinesis
//! record by the Kinesis Producer Library (and `aws-kinesis-agg`).
//!
//! An aggregate is the magic `F3 89 9A C2`, then the protobuf message
//! `AggregatedRecord`, then the 16-byte MD5 of the protobuf bytes. The
//! protobuf holds a table of partition keys, a table of explicit hash keys
//! and the sub-records, each naming its keys by index into those tables.
//!
//! [`deaggregate`] turns one Kinesis record into its sub-records, each with
//! the parent's sequence number and its index as `sub_sequence_number`, so
//! the shard loop can checkpoint inside an aggregate; [`Aggregator`] builds
//! aggregates for a writer. The protobuf messages are written out by hand
//! with prost's derive, so no `protoc` or build script is needed.

use std::collections::HashMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::Message;
use prost::encoding::encoded_len_varint;

use crate::error::{Error, Result};
use crate::record::Record;

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 checksum at the end of an aggregate.
const DIGEST_LEN: usize = 16;

/// The bytes an aggregate adds around its protobuf: magic and checksum.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// `AggregatedRecord` of the KPL's `messages.proto`.
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<SubRecord>,
}

/// `Record` of the KPL's `messages.proto` (one user record).
#[derive(Clone, PartialEq, Message)]
struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    // `Bytes`: decoding from the parent's `Bytes` slices it instead of copying.
    #[prost(bytes = "bytes", required, tag = "3")]
    data: Bytes,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// `Tag` of the KPL's `messages.proto`. The KPL never sets tags and the KCL
/// drops them; they are declared so the format is complete, and ignored.
#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// Why a record that starts with [`MAGIC`] is not a valid aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggregateFault {
    /// The MD5 at the end does not match the protobuf bytes (the KCL then
    /// treats the record as an ordinary one: a payload may start with the
    /// magic by chance).
    Checksum,
    /// The checksum matches but the protobuf does not decode.
    Protobuf(String),
    /// A sub-record names a partition key outside the table.
    PartitionKeyIndex {
        /// The sub-record's index in the aggregate.
        sub_record: u64,
        /// The index it names.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
    /// A sub-record names an explicit hash key outside the table.
    ExplicitHashKeyIndex {
        /// The sub-record's index in the aggregate.
        sub_record: u64,
        /// The index it names.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
}

impl fmt::Display for AggregateFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checksum => f.write_str("MD5 checksum does not match"),
            Self::Protobuf(message) => write!(f, "invalid protobuf: {message}"),
            Self::PartitionKeyIndex {
                sub_record,
                index,
                table_len,
            } => write!(
                f,
                "sub-record {sub_record} names partition key {index} of a table of {table_len}"
            ),
            Self::ExplicitHashKeyIndex {
                sub_record,
                index,
                table_len,
            } => write!(
                f,
                "sub-record {sub_record} names explicit hash key {index} of a table of {table_len}"
            ),
        }
    }
}

/// Whether `data` has the shape of an aggregate: the magic and room for the
/// checksum. Says nothing about whether the checksum matches.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= FRAMING_LEN && data.starts_with(&MAGIC)
}

/// The sub-records of `record`, or `record` itself when it is not an aggregate.
///
/// Each sub-record keeps the parent's sequence number and arrival time, gets
/// its index in the aggregate as `sub_sequence_number` (so a checkpoint
/// `(sequence, i)` means "sub-records up to `i` done" whatever a reader later
/// filters out) and its own partition key and explicit hash key. An empty
/// aggregate yields no records: it carries no user data.
///
/// # Errors
///
/// [`Error::InvalidAggregate`] for a record that starts with the magic but is
/// not a valid aggregate: the checksum does not match, the protobuf does not
/// decode, or a key index lies outside its table. The KCL hands such a record
/// on whole, as an ordinary record, and so should a caller (the payload may
/// begin with the magic by chance); the error says why, for the log.
pub fn deaggregate(record: &Record) -> Result<Vec<Record>> {
    if !is_aggregated(&record.data) {
        return Ok(vec![record.clone()]);
    }
    let fault = |fault| Error::InvalidAggregate {
        sequence: record.sequence_number.clone(),
        fault,
    };
    let body_end = record.data.len() - DIGEST_LEN;
    let body = record.data.slice(MAGIC.len()..body_end);
    if Md5::digest(&body).as_slice() != &record.data[body_end..] {
        return Err(fault(AggregateFault::Checksum));
    }
    let aggregate = AggregatedRecord::decode(body)
        .map_err(|err| fault(AggregateFault::Protobuf(err.to_string())))?;
    let mut records = Vec::with_capacity(aggregate.records.len());
    for (sub_record, sub) in (0u64..).zip(aggregate.records) {
        let partition_key = table_entry(&aggregate.partition_key_table, sub.partition_key_index)
            .ok_or_else(|| {
                fault(AggregateFault::PartitionKeyIndex {
                    sub_record,
                    index: sub.partition_key_index,
                    table_len: aggregate.partition_key_table.len(),
                })
            })?;
        let explicit_hash_key = match sub.explicit_hash_key_index {
            None => None,
            Some(index) => Some(
                table_entry(&aggregate.explicit_hash_key_table, index).ok_or_else(|| {
                    fault(AggregateFault::ExplicitHashKeyIndex {
                        sub_record,
                        index,
                        table_len: aggregate.explicit_hash_key_table.len(),
                    })
                })?,
            ),
        };
        records.push(Record {
            data: sub.data,
            partition_key: partition_key.to_owned(),
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: Some(sub_record),
            approximate_arrival: record.approximate_arrival,
            explicit_hash_key: explicit_hash_key.map(str::to_owned),
        });
    }
    Ok(records)
}

fn table_entry(table: &[String], index: u64) -> Option<&str> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .map(String::as_str)
}

/// The range of 128-bit hash keys a shard owns, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    /// The first hash key of the shard.
    pub start: u128,
    /// The last hash key of the shard.
    pub end: u128,
}

impl HashKeyRange {
    /// Every hash key (a stream with one shard that was never resharded).
    pub const ALL: Self = Self {
        start: 0,
        end: u128::MAX,
    };

    /// The range from the decimal strings `ListShards` returns; `None` if one
    /// is not a number from 0 to 2^128 - 1.
    pub fn parse(start: &str, end: &str) -> Option<Self> {
        Some(Self {
            start: start.parse().ok()?,
            end: end.parse().ok()?,
        })
    }

    /// Whether the shard owns `hash_key`.
    pub fn contains(&self, hash_key: u128) -> bool {
        self.start <= hash_key && hash_key <= self.end
    }

    /// Whether Kinesis routes `record` to this shard: by its explicit hash
    /// key, else by the MD5 of its partition key. A record whose explicit
    /// hash key is not a number is kept (never dropped on a guess).
    pub fn owns(&self, record: &Record) -> bool {
        effective_hash_key(&record.partition_key, record.explicit_hash_key.as_deref())
            .is_none_or(|key| self.contains(key))
    }
}

/// The hash key Kinesis routes a record by: the explicit hash key if there is
/// one, else the MD5 of the partition key's UTF-8 bytes read as a big-endian
/// 128-bit number. `None` if the explicit hash key is not a decimal number
/// from 0 to 2^128 - 1.
pub fn effective_hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> Option<u128> {
    match explicit_hash_key {
        Some(key) => key.parse().ok(),
        None => Some(u128::from_be_bytes(
            Md5::digest(partition_key.as_bytes()).into(),
        )),
    }
}

/// Builds one aggregate, knowing its exact encoded size at every step so a
/// writer can stop before a limit (Kinesis takes at most 1 MiB per record).
///
/// ```
/// use kinesis_connectors_core::{Record, kpl};
/// let mut aggregator = kpl::Aggregator::new();
/// aggregator.push(bytes::Bytes::from_static(b"one"), "user-1", None);
/// aggregator.push(bytes::Bytes::from_static(b"two"), "user-2", None);
/// let size = aggregator.encoded_len();
/// let data = aggregator.finish();
/// assert_eq!(data.len(), size);
/// let subs = kpl::deaggregate(&Record::new(data, "user-1", 7u64))?;
/// assert_eq!(subs.len(), 2);
/// assert_eq!(subs[1].partition_key, "user-2");
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Aggregator {
    aggregate: AggregatedRecord,
    partition_keys: HashMap<String, u64>,
    explicit_hash_keys: HashMap<String, u64>,
    /// The protobuf's encoded length so far.
    body_len: usize,
}

impl Aggregator {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records were pushed.
    pub fn len(&self) -> usize {
        self.aggregate.records.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.aggregate.records.is_empty()
    }

    /// The length of the aggregate [`finish`](Self::finish) would return.
    pub fn encoded_len(&self) -> usize {
        FRAMING_LEN + self.body_len
    }

    /// The length of the aggregate after pushing this record, without pushing it.
    pub fn encoded_len_with(
        &self,
        data_len: usize,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
    ) -> usize {
        self.encoded_len() + self.growth(data_len, partition_key, explicit_hash_key)
    }

    /// Adds a record.
    pub fn push(&mut self, data: Bytes, partition_key: &str, explicit_hash_key: Option<&str>) {
        self.body_len += self.growth(data.len(), partition_key, explicit_hash_key);
        let partition_key_index = intern(
            &mut self.partition_keys,
            &mut self.aggregate.partition_key_table,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.map(|key| {
            intern(
                &mut self.explicit_hash_keys,
                &mut self.aggregate.explicit_hash_key_table,
                key,
            )
        });
        self.aggregate.records.push(SubRecord {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags: Vec::new(),
        });
    }

    /// The aggregate: magic, protobuf, MD5.
    pub fn finish(self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_slice(&MAGIC);
        // Encoding into a buffer of the right capacity cannot fail; the
        // fallback only keeps the code free of panics.
        if self.aggregate.encode(&mut out).is_err() {
            out.truncate(MAGIC.len());
        }
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.put_slice(&digest);
        out.freeze()
    }

    /// How many bytes the protobuf grows by when this record is pushed: the
    /// sub-record, plus its keys if they are new to the tables.
    fn growth(
        &self,
        data_len: usize,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
    ) -> usize {
        let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let mut growth = 0;
        let partition_key_index = match self.partition_keys.get(partition_key) {
            Some(&index) => index,
            None => {
                growth += field(partition_key.len());
                self.partition_keys.len() as u64
            }
        };
        let mut sub = 1 + encoded_len_varint(partition_key_index) + field(data_len);
        if let Some(key) = explicit_hash_key {
            let index = match self.explicit_hash_keys.get(key) {
                Some(&index) => index,
                None => {
                    growth += field(key.len());
                    self.explicit_hash_keys.len() as u64
                }
            };
            sub += 1 + encoded_len_varint(index);
        }
        growth + field(sub)
    }
}

fn intern(index: &mut HashMap<String, u64>, table: &mut Vec<String>, key: &str) -> u64 {
    if let Some(&i) = index.get(key) {
        return i;
    }
    let i = table.len() as u64;
    table.push(key.to_owned());
    index.insert(key.to_owned(), i);
    i
}

/// One aggregate holding `records` (their data, partition keys and explicit
/// hash keys), without any size limit; see [`Aggregator`] for one.
pub fn aggregate<'a>(records: impl IntoIterator<Item = &'a Record>) -> Bytes {
    let mut aggregator = Aggregator::new();
    for record in records {
        aggregator.push(
            record.data.clone(),
            &record.partition_key,
            record.explicit_hash_key.as_deref(),
        );
    }
    aggregator.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(data: Bytes) -> Record {
        let mut record = Record::new(data, "parent-key", 42u64);
        record.approximate_arrival = Some(std::time::UNIX_EPOCH);
        record
    }

    /// An aggregate built from raw protobuf messages, bypassing `Aggregator`.
    fn framed(message: &AggregatedRecord) -> Bytes {
        let body = message.encode_to_vec();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        Bytes::from(out)
    }

    fn sub(pk: u64, ehk: Option<u64>, data: &'static [u8]) -> SubRecord {
        SubRecord {
            partition_key_index: pk,
            explicit_hash_key_index: ehk,
            data: Bytes::from_static(data),
            tags: Vec::new(),
        }
    }

    #[test]
    fn a_plain_record_passes_through_unchanged() {
        let record = parent(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(deaggregate(&record).ok(), Some(vec![record]));
        // The magic alone, without room for a checksum, is an ordinary payload.
        let short = parent(Bytes::copy_from_slice(&MAGIC));
        assert_eq!(deaggregate(&short).ok(), Some(vec![short]));
    }

    #[test]
    fn an_empty_aggregate_yields_nothing() {
        let data = Aggregator::new().finish();
        assert_eq!(data.len(), FRAMING_LEN);
        assert_eq!(deaggregate(&parent(data)).ok(), Some(Vec::new()));
    }

    #[test]
    fn one_sub_record_keeps_the_parents_position_and_arrival() {
        let mut aggregator = Aggregator::new();
        aggregator.push(Bytes::from_static(b"hello"), "pk", Some("12345"));
        let subs = deaggregate(&parent(aggregator.finish())).unwrap_or_default();
        assert_eq!(subs.len(), 1);
        let sub = &subs[0];
        assert_eq!(&sub.data[..], b"hello");
        assert_eq!(sub.partition_key, "pk");
        assert_eq!(sub.explicit_hash_key.as_deref(), Some("12345"));
        assert_eq!(sub.sequence_number, 42u64.into());
        assert_eq!(sub.sub_sequence_number, Some(0));
        assert_eq!(sub.approximate_arrival, Some(std::time::UNIX_EPOCH));
    }

    #[test]
    fn shared_keys_unicode_and_tags() {
        let message = AggregatedRecord {
            partition_key_table: vec!["ключ-🔑".into(), "b".into()],
            explicit_hash_key_table: vec!["340282366920938463463374607431768211455".into()],
            records: vec![
                SubRecord {
                    tags: vec![
                        Tag {
                            key: "k".into(),
                            value: Some("v".into()),
                        },
                        Tag {
                            key: "only-key".into(),
                            value: None,
                        },
                    ],
                    ..sub(0, None, b"x")
                },
                sub(1, Some(0), b""),
                sub(0, Some(0), "ünïcode".as_bytes()),
            ],
        };
        let subs = deaggregate(&parent(framed(&message))).unwrap_or_default();
        let keys: Vec<_> = subs.iter().map(|r| r.partition_key.as_str()).collect();
        assert_eq!(keys, ["ключ-🔑", "b", "ключ-🔑"]);
        assert_eq!(subs[0].explicit_hash_key, None);
        assert_eq!(
            subs[2].explicit_hash_key.as_deref(),
            Some("340282366920938463463374607431768211455")
        );
        assert_eq!(&subs[2].data[..], "ünïcode".as_bytes());
        let subs_seq: Vec<_> = subs.iter().map(|r| r.sub_sequence_number).collect();
        assert_eq!(subs_seq, [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn a_one_mebibyte_aggregate_round_trips_with_an_exact_size() {
        let mut aggregator = Aggregator::new();
        let payload = Bytes::from(vec![7u8; 1000]);
        let mut expected = Vec::new();
        let mut i = 0;
        loop {
            let key = format!("key-{}", i % 37);
            let ehk = (i % 5 == 0).then(|| (i * 1_000_003).to_string());
            if aggregator.encoded_len_with(payload.len(), &key, ehk.as_deref()) > 1024 * 1024 {
                break;
            }
            aggregator.push(payload.clone(), &key, ehk.as_deref());
            expected.push((key, ehk));
            i += 1;
        }
        let size = aggregator.encoded_len();
        let data = aggregator.finish();
        assert_eq!(data.len(), size);
        assert!(size <= 1024 * 1024 && size > 1024 * 1024 - 1100, "{size}");
        let subs = deaggregate(&parent(data)).unwrap_or_default();
        assert_eq!(subs.len(), expected.len());
        for (record, (key, ehk)) in subs.iter().zip(&expected) {
            assert_eq!(&record.partition_key, key);
            assert_eq!(&record.explicit_hash_key, ehk);
            assert_eq!(record.data, payload);
        }
    }

    #[test]
    fn a_wrong_checksum_is_reported_and_not_decoded() {
        let mut data = aggregate(&[Record::new("a", "k", 1u64)]).to_vec();
        let last = data.len() - 1;
        data[last] ^= 1;
        let err = deaggregate(&parent(Bytes::from(data))).err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidAggregate {
                    fault: AggregateFault::Checksum,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_protobuf_with_a_matching_checksum_is_reported() {
        let body = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: Vec::new(),
            records: vec![sub(0, None, b"payload")],
        }
        .encode_to_vec();
        let cut = &body[..body.len() - 3];
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(cut);
        data.extend_from_slice(&Md5::digest(cut));
        let err = deaggregate(&parent(Bytes::from(data))).err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidAggregate {
                    fault: AggregateFault::Protobuf(_),
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_index_outside_its_table_is_reported() {
        let message = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec!["1".into()],
            records: vec![sub(0, None, b"ok"), sub(1, None, b"bad")],
        };
        let err = deaggregate(&parent(framed(&message))).err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidAggregate {
                    fault: AggregateFault::PartitionKeyIndex {
                        sub_record: 1,
                        index: 1,
                        table_len: 1
                    },
                    ..
                })
            ),
            "{err:?}"
        );
        let message = AggregatedRecord {
            records: vec![sub(0, Some(4), b"bad")],
            ..message
        };
        let err = deaggregate(&parent(framed(&message))).map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.contains("explicit hash key 4 of a table of 1")),
            "{err:?}"
        );
    }

    #[test]
    fn hash_key_ranges_route_like_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        let a = u128::from_str_radix("0cc175b9c0f1b6a831c399e269772661", 16).unwrap_or_default();
        assert_eq!(effective_hash_key("a", None), Some(a));
        assert_eq!(effective_hash_key("a", Some("7")), Some(7));
        assert_eq!(effective_hash_key("a", Some("-1")), None);
        let low = HashKeyRange::parse("0", "170141183460469231731687303715884105727");
        assert_eq!(
            low,
            Some(HashKeyRange {
                start: 0,
                end: u128::MAX / 2
            })
        );
        let low = low.unwrap_or(HashKeyRange::ALL);
        assert!(low.owns(&Record::new("", "a", 1u64)));
        let mut high = Record::new("", "a", 1u64);
        high.explicit_hash_key = Some(u128::MAX.to_string());
        assert!(!low.owns(&high));
        high.explicit_hash_key = Some("not a number".into());
        assert!(low.owns(&high));
        assert!(HashKeyRange::ALL.contains(u128::MAX));
        assert_eq!(HashKeyRange::parse("0", "x"), None);
    }
}
