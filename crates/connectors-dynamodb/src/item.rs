//! Items: sizes as DynamoDB counts them, request payload estimates, primary
//! key extraction, and splitting into request-sized chunks.

use std::collections::HashMap;
use std::ops::Range;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{DynamoDbError, Result};

/// A DynamoDB item: attribute names to values.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's largest item: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Items per `BatchWriteItem` request (a service limit).
pub const MAX_BATCH_ITEMS: usize = 25;

/// The largest `BatchWriteItem` request payload (a service limit: 16 MiB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Room left in each request for the envelope around the items (table name,
/// options), so chunks stay below [`MAX_REQUEST_BYTES`].
const REQUEST_ENVELOPE_BYTES: usize = 64 * 1024;

/// The payload budget of the items of one request.
pub(crate) const CHUNK_PAYLOAD_BYTES: usize = MAX_REQUEST_BYTES - REQUEST_ENVELOPE_BYTES;

/// Largest partition key value (bytes).
const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// Largest sort key value (bytes).
const MAX_SORT_KEY_BYTES: usize = 1024;

/// The size of `item` as DynamoDB counts it against the 400 KB limit and
/// capacity units: attribute name lengths plus value sizes, where numbers
/// take about one byte per two significant digits plus one, lists and maps
/// three bytes plus one per element, booleans and nulls one byte.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(values) => values.iter().map(String::len).sum(),
        AttributeValue::Ns(values) => values.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(values) => values.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| 1 + name.len() + value_size(v))
                .sum::<usize>()
        }
        // A variant this version of the SDK does not know: count it generously.
        _ => 21,
    }
}

/// Bytes of a number: one per two significant digits, plus one (at most 21).
fn number_size(text: &str) -> usize {
    let significant = canonical_number(text).map_or(text.len(), |c| c.digits.len());
    (significant.div_ceil(2) + 1).min(21)
}

/// Estimated bytes of `item` in a `BatchWriteItem` JSON request body (an
/// upper bound: every string is counted as if escaped where JSON needs it,
/// binary as base64). Used to keep each request below [`MAX_REQUEST_BYTES`].
pub(crate) fn wire_size(item: &Item) -> usize {
    // {"PutRequest":{"Item":{…}}},
    28 + item
        .iter()
        .map(|(name, value)| json_string_size(name) + 2 + value_wire_size(value))
        .sum::<usize>()
}

fn value_wire_size(value: &AttributeValue) -> usize {
    // {"S":…} and friends: 7 bytes of wrapper, a few more for longer tags.
    const WRAP: usize = 8;
    match value {
        AttributeValue::S(s) => WRAP + json_string_size(s),
        AttributeValue::N(n) => WRAP + json_string_size(n),
        AttributeValue::B(b) => WRAP + 2 + b.as_ref().len().div_ceil(3) * 4,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => WRAP + 8,
        AttributeValue::Ss(values) | AttributeValue::Ns(values) => {
            WRAP + 2
                + values
                    .iter()
                    .map(|s| json_string_size(s) + 1)
                    .sum::<usize>()
        }
        AttributeValue::Bs(values) => {
            WRAP + 2
                + values
                    .iter()
                    .map(|b| 3 + b.as_ref().len().div_ceil(3) * 4)
                    .sum::<usize>()
        }
        AttributeValue::L(values) => {
            WRAP + 2 + values.iter().map(|v| value_wire_size(v) + 1).sum::<usize>()
        }
        AttributeValue::M(map) => {
            WRAP + 2
                + map
                    .iter()
                    .map(|(name, v)| json_string_size(name) + 2 + value_wire_size(v))
                    .sum::<usize>()
        }
        _ => WRAP + 64,
    }
}

/// Bytes of `s` as a JSON string: quotes, `\"` and `\\` escapes, `\u00XX`
/// for control characters.
fn json_string_size(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// A number in a canonical form: `1`, `1.0`, `10e-1` and `+1` are the same
/// DynamoDB number, so the same key.
#[derive(Debug, PartialEq, Eq)]
struct CanonicalNumber {
    negative: bool,
    /// Significant digits, without leading or trailing zeros (`"0"` for zero).
    digits: String,
    /// The value is `digits × 10^exponent`.
    exponent: i64,
}

fn canonical_number(text: &str) -> Option<CanonicalNumber> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int_part}{frac_part}");
    let mut exponent = exponent.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
    let trimmed = all.trim_start_matches('0');
    let without_trailing = trimmed.trim_end_matches('0');
    exponent = exponent.checked_add(i64::try_from(trimmed.len() - without_trailing.len()).ok()?)?;
    if without_trailing.is_empty() {
        return Some(CanonicalNumber {
            negative: false,
            digits: "0".to_owned(),
            exponent: 0,
        });
    }
    Some(CanonicalNumber {
        negative,
        digits: without_trailing.to_owned(),
        exponent,
    })
}

/// The names of the table's key attributes: the partition key, then the
/// sort key if the table has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySchema {
    pub(crate) attributes: Vec<String>,
}

/// A primary key value, comparable across items of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyValue(Vec<u8>);

impl KeySchema {
    /// Checks the names: a partition key and at most a sort key, non-empty,
    /// distinct, at most 255 bytes.
    pub(crate) fn new(attributes: Vec<String>) -> Result<Self> {
        if attributes.is_empty() || attributes.len() > 2 {
            return Err(DynamoDbError::Config(format!(
                "key_attributes must name the table's partition key and, if it has one, its sort key \
                 (1 or 2 names), got {}",
                attributes.len()
            )));
        }
        if let Some(bad) = attributes.iter().find(|a| a.is_empty() || a.len() > 255) {
            return Err(DynamoDbError::Config(format!(
                "key attribute names must be 1 to 255 bytes long, got {bad:?}"
            )));
        }
        if attributes.len() == 2 && attributes[0] == attributes[1] {
            return Err(DynamoDbError::Config(format!(
                "the partition and sort key attributes must differ, got {:?} twice",
                attributes[0]
            )));
        }
        Ok(Self { attributes })
    }

    /// The primary key of `item`, or why DynamoDB would refuse it: a key
    /// attribute missing, empty, too long, not a string, number or binary,
    /// or not a valid number.
    pub(crate) fn key_of(&self, item: &Item) -> Result<KeyValue> {
        let mut key = Vec::new();
        for (position, name) in self.attributes.iter().enumerate() {
            let limit = if position == 0 {
                MAX_PARTITION_KEY_BYTES
            } else {
                MAX_SORT_KEY_BYTES
            };
            let value = item
                .get(name)
                .ok_or_else(|| DynamoDbError::invalid_item(name, "(a key attribute) is missing"))?;
            let (tag, bytes): (u8, Vec<u8>) = match value {
                AttributeValue::S(s) => (b'S', s.as_bytes().to_vec()),
                AttributeValue::B(b) => (b'B', b.as_ref().to_vec()),
                AttributeValue::N(n) => {
                    let number = canonical_number(n).ok_or_else(|| {
                        DynamoDbError::invalid_item(
                            name,
                            format!("(a key attribute) is not a valid number: {n:?}"),
                        )
                    })?;
                    let text = format!(
                        "{}{}e{}",
                        if number.negative { "-" } else { "" },
                        number.digits,
                        number.exponent
                    );
                    (b'N', text.into_bytes())
                }
                other => {
                    return Err(DynamoDbError::invalid_item(
                        name,
                        format!(
                            "(a key attribute) must be a string, number or binary, got {}",
                            type_name(other)
                        ),
                    ));
                }
            };
            let size = match value {
                AttributeValue::N(n) => number_size(n),
                _ => bytes.len(),
            };
            if size == 0 {
                return Err(DynamoDbError::invalid_item(
                    name,
                    "(a key attribute) must not be empty",
                ));
            }
            if size > limit {
                return Err(DynamoDbError::invalid_item(
                    name,
                    format!("(a key attribute) is {size} bytes, over the limit of {limit}"),
                ));
            }
            key.push(tag);
            key.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            key.extend_from_slice(&bytes);
        }
        Ok(KeyValue(key))
    }
}

/// The DynamoDB type tag of `value`, for messages.
fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S (string)",
        AttributeValue::N(_) => "N (number)",
        AttributeValue::B(_) => "B (binary)",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::Ss(_) => "SS (string set)",
        AttributeValue::Ns(_) => "NS (number set)",
        AttributeValue::Bs(_) => "BS (binary set)",
        AttributeValue::L(_) => "L (list)",
        AttributeValue::M(_) => "M (map)",
        _ => "an unknown type",
    }
}

/// Splits items of the given payload sizes, in order, into consecutive runs
/// of at most `max_items` items and at most `max_bytes` bytes (an item
/// larger than `max_bytes` on its own gets a run of its own).
pub(crate) fn chunk_ranges(
    sizes: impl IntoIterator<Item = usize>,
    max_items: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    let mut end = 0;
    for size in sizes {
        let count = end - start;
        if count > 0 && (count >= max_items || bytes + size > max_bytes) {
            ranges.push(start..end);
            start = end;
            bytes = 0;
        }
        bytes += size;
        end += 1;
    }
    if end > start {
        ranges.push(start..end);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_owned())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn sizes_follow_dynamodb_accounting() {
        // name (2) + value (5)
        assert_eq!(item_size(&item(&[("id", s("hello"))])), 7);
        // 1234.5: five significant digits → 3 + 1 bytes
        assert_eq!(item_size(&item(&[("n", n("1234.5"))])), 1 + 4);
        assert_eq!(item_size(&item(&[("b", AttributeValue::Bool(true))])), 2);
        assert_eq!(
            item_size(&item(&[(
                "bin",
                AttributeValue::B(Blob::new(vec![0u8; 10]))
            )])),
            13
        );
        // list: 3 + (1 + 1) + (1 + 2)
        let list = AttributeValue::L(vec![s("a"), s("bc")]);
        assert_eq!(item_size(&item(&[("l", list)])), 1 + 3 + 2 + 3);
        // map: 3 + (1 + 1 + 3)
        let map = AttributeValue::M(item(&[("k", s("abc"))]));
        assert_eq!(item_size(&item(&[("m", map)])), 1 + 3 + 5);
    }

    #[test]
    fn wire_size_bounds_the_json_body() {
        let plain = item(&[("id", s("abc"))]);
        // {"PutRequest":{"Item":{"id":{"S":"abc"}}}}
        assert!(wire_size(&plain) >= r#"{"PutRequest":{"Item":{"id":{"S":"abc"}}}},"#.len());
        let control = item(&[("id", s(&"\u{1}".repeat(100)))]);
        assert!(
            wire_size(&control) >= 600,
            "control characters are escaped as \\u0001"
        );
        let binary = item(&[("b", AttributeValue::B(Blob::new(vec![0u8; 300])))]);
        assert!(wire_size(&binary) >= 400, "binary goes as base64");
    }

    #[test]
    fn numbers_are_canonical() {
        let canon = |t: &str| canonical_number(t).map(|c| (c.negative, c.digits, c.exponent));
        assert_eq!(canon("1"), Some((false, "1".into(), 0)));
        assert_eq!(canon("1.0"), canon("1"));
        assert_eq!(canon("+1"), canon("1"));
        assert_eq!(canon("10e-1"), canon("1"));
        assert_eq!(canon("0100"), Some((false, "1".into(), 2)));
        assert_eq!(canon("-0.00"), Some((false, "0".into(), 0)));
        assert_eq!(canon("-12.50"), Some((true, "125".into(), -1)));
        assert_eq!(canon(".5"), Some((false, "5".into(), -1)));
        assert_eq!(canon("1e"), None);
        assert_eq!(canon("abc"), None);
        assert_eq!(canon("."), None);
        assert_eq!(canon(""), None);
    }

    #[test]
    fn keys_identify_items_by_value_and_type() {
        let schema = KeySchema::new(vec!["pk".into(), "sk".into()]).unwrap();
        let a = schema
            .key_of(&item(&[("pk", s("a")), ("sk", n("1")), ("x", s("1"))]))
            .unwrap();
        let same = schema
            .key_of(&item(&[("pk", s("a")), ("sk", n("1.00")), ("x", s("2"))]))
            .unwrap();
        assert_eq!(a, same);
        let other_type = schema
            .key_of(&item(&[("pk", s("a")), ("sk", s("1"))]))
            .unwrap();
        assert_ne!(a, other_type);
        // No ambiguity from concatenation: ("ab", "c") vs ("a", "bc").
        let ab_c = schema
            .key_of(&item(&[("pk", s("ab")), ("sk", s("c"))]))
            .unwrap();
        let a_bc = schema
            .key_of(&item(&[("pk", s("a")), ("sk", s("bc"))]))
            .unwrap();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn bad_keys_are_named() {
        let schema = KeySchema::new(vec!["pk".into()]).unwrap();
        let missing = schema.key_of(&item(&[("other", s("x"))])).unwrap_err();
        assert!(missing.to_string().contains("`pk`"), "{missing}");
        let empty = schema.key_of(&item(&[("pk", s(""))])).unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let wrong = schema
            .key_of(&item(&[("pk", AttributeValue::Bool(true))]))
            .unwrap_err();
        assert!(wrong.to_string().contains("BOOL"), "{wrong}");
        let nan = schema.key_of(&item(&[("pk", n("twelve"))])).unwrap_err();
        assert!(nan.to_string().contains("number"), "{nan}");
        let long = schema
            .key_of(&item(&[("pk", s(&"x".repeat(2049)))]))
            .unwrap_err();
        assert!(long.to_string().contains("2049"), "{long}");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(KeySchema::new(vec![]).is_err());
        assert!(KeySchema::new(vec!["a".into(), "b".into(), "c".into()]).is_err());
        assert!(KeySchema::new(vec!["".into()]).is_err());
        assert!(KeySchema::new(vec!["a".into(), "a".into()]).is_err());
        assert!(KeySchema::new(vec!["a".into(), "b".into()]).is_ok());
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        assert_eq!(chunk_ranges([1; 60], 25, 1000), vec![0..25, 25..50, 50..60]);
        assert_eq!(chunk_ranges([400; 5], 25, 1000), vec![0..2, 2..4, 4..5]);
        // An oversized item goes alone; neighbours are not dropped.
        assert_eq!(
            chunk_ranges([10, 5000, 10], 25, 1000),
            vec![0..1, 1..2, 2..3]
        );
        assert!(chunk_ranges(std::iter::empty(), 25, 1000).is_empty());
        assert_eq!(chunk_ranges([1; 25], 25, 1000), vec![0..25]);
    }
}
