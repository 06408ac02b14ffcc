//! Records read from a shard and their positions.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::Error;

/// A Kinesis sequence number.
///
/// Kinesis sequence numbers are decimal strings of up to 128 digits, larger
/// than any integer type, so they are kept as normalized digit strings and
/// ordered numerically (shorter is smaller, then digit by digit), never as
/// plain strings (`"9" < "10"`).
///
/// Every record read carries one, so it is a plain owned string: parsing
/// the SDK's `String` ([`TryFrom<String>`](#impl-TryFrom%3CString%3E-for-SequenceNumber))
/// keeps its allocation instead of making another. A clone copies the
/// digits; the loop clones one per batch, not per record.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Box<str>);

impl SequenceNumber {
    /// Parses a decimal sequence number; leading zeros are ignored.
    ///
    /// ```
    /// use kinesis_connectors_core::SequenceNumber;
    /// let a = SequenceNumber::parse("9")?;
    /// let b = SequenceNumber::parse("10")?;
    /// assert!(a < b);
    /// # Ok::<(), kinesis_connectors_core::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, Error> {
        let zeros = leading_zeros(text)?;
        Ok(Self(Box::from(&text[zeros..])))
    }

    /// The decimal digits, without leading zeros.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many leading zeros to drop from `text` (all but the last digit of
/// zero itself), or the error if `text` is not a decimal number.
fn leading_zeros(text: &str) -> Result<usize, Error> {
    // Every byte checked without an early exit, which the compiler
    // vectorizes: this runs once per record read.
    let digits_only = text
        .bytes()
        .fold(!text.is_empty(), |ok, b| ok & b.is_ascii_digit());
    if !digits_only {
        return Err(Error::InvalidSequenceNumber(text.to_owned()));
    }
    let zeros = text.bytes().take_while(|&b| b == b'0').count();
    Ok(zeros.min(text.len() - 1))
}

impl TryFrom<String> for SequenceNumber {
    type Error = Error;

    /// Parses an owned decimal string, keeping its allocation when it has
    /// no leading zeros (as Kinesis writes them) and no spare capacity.
    ///
    /// ```
    /// use kinesis_connectors_core::SequenceNumber;
    /// let seq = SequenceNumber::try_from(String::from("0042"))?;
    /// assert_eq!(seq, SequenceNumber::from(42));
    /// assert!(SequenceNumber::try_from(String::from("4x2")).is_err());
    /// # Ok::<(), kinesis_connectors_core::Error>(())
    /// ```
    fn try_from(mut text: String) -> Result<Self, Error> {
        let zeros = leading_zeros(&text)?;
        if zeros > 0 {
            text.drain(..zeros);
        }
        Ok(Self(text.into_boxed_str()))
    }
}

impl From<u64> for SequenceNumber {
    fn from(value: u64) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

impl FromStr for SequenceNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_bytes().cmp(other.0.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

impl serde::Serialize for SequenceNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SequenceNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a record sits in its shard: its sequence number plus, for records
/// de-aggregated from one KPL record, the index inside it.
///
/// Sub-records of one KPL record share the sequence number; `sub_sequence:
/// None` stands for the whole record and sorts after all its sub-records, so
/// a checkpoint at `(n, None)` means "record `n` fully done".
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The Kinesis sequence number.
    pub sequence: SequenceNumber,
    /// The index inside an aggregated record, if the record was one.
    pub sub_sequence: Option<u64>,
}

impl Position {
    /// The position of a whole (not aggregated) record.
    pub fn new(sequence: SequenceNumber) -> Self {
        Self {
            sequence,
            sub_sequence: None,
        }
    }

    /// Whether a checkpoint at `done` means this record was processed.
    ///
    /// Ordinarily that is `self <= done`. A whole record is also covered by
    /// a checkpoint with its own sequence number and any sub-sequence
    /// number: the Kinesis Client Library stores `(sequence, 0)` for a
    /// processed record that was not aggregated, and a record without
    /// sub-records has nothing left to process at that sequence number.
    pub fn is_covered_by(&self, done: &Position) -> bool {
        self <= done || (self.sub_sequence.is_none() && self.sequence == done.sequence)
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence.cmp(&other.sequence).then_with(|| {
            match (self.sub_sequence, other.sub_sequence) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(&b),
            }
        })
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sub_sequence {
            Some(sub) => write!(f, "{}/{}", self.sequence, sub),
            None => write!(f, "{}", self.sequence),
        }
    }
}

/// One record read from a shard.
///
/// This is the crate's own type: SDK types never appear in the pipeline traits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The payload.
    pub data: Bytes,
    /// The partition key the producer used.
    pub partition_key: String,
    /// The sequence number Kinesis assigned.
    pub sequence_number: SequenceNumber,
    /// `Some(i)` for the i-th record de-aggregated from a KPL record.
    pub sub_sequence_number: Option<u64>,
    /// When Kinesis received the record.
    pub approximate_arrival: Option<SystemTime>,
    /// The explicit hash key the producer set, if any.
    pub explicit_hash_key: Option<String>,
}

impl Record {
    /// A record with the given payload, partition key and sequence number.
    ///
    /// ```
    /// use kinesis_connectors_core::Record;
    /// let record = Record::new("hello", "user-1", 42u64);
    /// assert_eq!(record.sequence_number.as_str(), "42");
    /// ```
    pub fn new(
        data: impl Into<Bytes>,
        partition_key: impl Into<String>,
        sequence_number: impl Into<SequenceNumber>,
    ) -> Self {
        Self {
            data: data.into(),
            partition_key: partition_key.into(),
            sequence_number: sequence_number.into(),
            sub_sequence_number: None,
            approximate_arrival: None,
            explicit_hash_key: None,
        }
    }

    /// Where this record sits in its shard.
    pub fn position(&self) -> Position {
        Position {
            sequence: self.sequence_number.clone(),
            sub_sequence: self.sub_sequence_number,
        }
    }
}

/// Which shard a batch or a shard task belongs to; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardContext {
    /// The application (consumer) name; checkpoints are kept per application.
    pub application: Arc<str>,
    /// The stream name.
    pub stream: Arc<str>,
    /// The shard id, e.g. `shardId-000000000000`.
    pub shard_id: Arc<str>,
}

impl ShardContext {
    /// A context for one shard of a stream consumed by `application`.
    pub fn new(application: &str, stream: &str, shard_id: &str) -> Self {
        Self {
            application: Arc::from(application),
            stream: Arc::from(stream),
            shard_id: Arc::from(shard_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_sequence_numbers_keep_their_allocation_and_normalize() -> Result<(), Error> {
        let text = String::from("49590338271490256608559692538361571095921575989136588898");
        let at = text.as_ptr();
        let seq = SequenceNumber::try_from(text)?;
        assert_eq!(seq.as_str().as_ptr(), at, "the digits were copied");
        assert_eq!(SequenceNumber::try_from(String::from("000"))?.as_str(), "0");
        assert_eq!(
            SequenceNumber::try_from(String::from("0070"))?.as_str(),
            "70"
        );
        assert_eq!(SequenceNumber::parse("000")?, SequenceNumber::from(0));
        for bad in ["", "-1", "1 2", "١٢"] {
            assert!(SequenceNumber::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn sequence_numbers_order_numerically() {
        let small = SequenceNumber::parse("9").unwrap_or_else(|e| panic!("{e}"));
        let big = SequenceNumber::parse("10").unwrap_or_else(|e| panic!("{e}"));
        assert!(small < big);
        let kinesis_a = "49590338271490256608559692538361571095921575989136588898";
        let kinesis_b = "49590338271490256608559692540925702759324208523137515618";
        assert!(SequenceNumber::parse(kinesis_a).ok() < SequenceNumber::parse(kinesis_b).ok());
        assert_eq!(
            SequenceNumber::parse("007").ok(),
            Some(SequenceNumber::from(7))
        );
        assert_eq!(
            SequenceNumber::parse("0").map(|s| s.to_string()).ok(),
            Some("0".into())
        );
    }

    #[test]
    fn invalid_sequence_numbers_are_rejected() {
        for bad in ["", "12a", "-1", " 1"] {
            assert!(matches!(
                SequenceNumber::parse(bad),
                Err(Error::InvalidSequenceNumber(_))
            ));
        }
    }

    #[test]
    fn sub_records_sort_before_the_whole_record() {
        let whole = Position::new(5u64.into());
        let sub = Position {
            sequence: 5u64.into(),
            sub_sequence: Some(3),
        };
        let next = Position::new(6u64.into());
        assert!(sub < whole);
        assert!(whole < next);
        assert_eq!(sub.to_string(), "5/3");
    }

    #[test]
    fn a_whole_record_is_covered_by_a_sub_record_checkpoint_at_its_sequence() {
        let at = |sequence: u64, sub_sequence| Position {
            sequence: sequence.into(),
            sub_sequence,
        };
        // The KCL's checkpoint of a plain record: (sequence, 0).
        assert!(Position::new(5u64.into()).is_covered_by(&at(5, Some(0))));
        assert!(Position::new(4u64.into()).is_covered_by(&at(5, Some(0))));
        assert!(!Position::new(6u64.into()).is_covered_by(&at(5, Some(0))));
        // Sub-records after the checkpointed one are still to do.
        assert!(at(5, Some(0)).is_covered_by(&at(5, Some(0))));
        assert!(!at(5, Some(1)).is_covered_by(&at(5, Some(0))));
        assert!(at(5, Some(7)).is_covered_by(&Position::new(5u64.into())));
        assert!(!at(6, Some(0)).is_covered_by(&Position::new(5u64.into())));
    }

    #[test]
    fn sequence_numbers_round_trip_through_json() {
        let seq = SequenceNumber::from(123_456);
        let json = serde_json::to_string(&seq).unwrap_or_default();
        assert_eq!(json, "\"123456\"");
        let back: SequenceNumber = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, seq);
        assert!(serde_json::from_str::<SequenceNumber>("\"x\"").is_err());
    }
}
