//! Built-in transformers and the newline-delimited encoding helper.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::pipeline::{Batch, Encoder, RejectedItem, Transformer};
use crate::record::Record;

/// The constructor, `Default`, `Clone` and `Debug` of a transformer that is
/// generic over its item type only through `PhantomData`: derives would
/// demand the same traits of `T`.
macro_rules! typed_transformer_impls {
    ($name:ident, $new_doc:literal) => {
        impl<T> $name<T> {
            #[doc = $new_doc]
            pub fn new() -> Self {
                Self {
                    _item: std::marker::PhantomData,
                }
            }
        }

        impl<T> Default for $name<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                Self::new()
            }
        }

        impl<T> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    concat!(stringify!($name), "<{}>"),
                    std::any::type_name::<T>()
                )
            }
        }
    };
}
pub(crate) use typed_transformer_impls;

/// Passes the payload through untouched (`Item = Bytes`, no copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesTransformer;

impl Transformer for BytesTransformer {
    type Item = Bytes;

    fn to_item(&self, record: &Record) -> Result<Bytes> {
        Ok(record.data.clone())
    }

    /// Moves the payload; a clone would allocate its shared handle.
    fn take_item(&self, record: &mut Record) -> Result<Bytes> {
        Ok(std::mem::take(&mut record.data))
    }
}

impl Encoder for BytesTransformer {
    fn from_item(&self, item: &Bytes, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(item);
        Ok(())
    }
}

/// Passes whole records through (`Item = Record`), keeping partition keys
/// for emitters that forward to another stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordTransformer;

impl Transformer for RecordTransformer {
    type Item = Record;

    fn to_item(&self, record: &Record) -> Result<Record> {
        Ok(record.clone())
    }
}

impl Encoder for RecordTransformer {
    fn from_item(&self, item: &Record, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&item.data);
        Ok(())
    }
}

/// Decodes payloads as UTF-8 text (`Item = String`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Transformer;

impl Transformer for Utf8Transformer {
    type Item = String;

    fn to_item(&self, record: &Record) -> Result<String> {
        String::from_utf8(record.data.to_vec()).map_err(|e| Error::Transform {
            message: format!("record {} is not UTF-8", record.position()),
            source: Some(Box::new(e)),
        })
    }
}

impl Encoder for Utf8Transformer {
    fn from_item(&self, item: &String, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

/// Decodes JSON payloads into `T` (`T: Deserialize`) and, as an [`Encoder`],
/// encodes `T` back to compact JSON (`T: Serialize` too).
///
/// serde_json decodes. It encodes too, unless the crate's `fast-json`
/// feature is on: then [sonic-rs](https://docs.rs/sonic-rs) encodes (SIMD
/// string escaping), writing the same compact bytes, with the same errors.
/// Items holding serde_json's own `RawValue` or `arbitrary_precision`
/// numbers need the default encoder.
///
/// ```
/// use kinesis_connectors_core::{Encoder, JsonTransformer, Record, Transformer};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Click { user: String, page: String }
///
/// let json = JsonTransformer::<Click>::new();
/// let click = json.to_item(&Record::new(r#"{"user":"u1","page":"/"}"#, "u1", 1u64))?;
/// assert_eq!(click.user, "u1");
/// let mut out = Vec::new();
/// json.from_item(&click, &mut out)?;
/// assert_eq!(out, br#"{"user":"u1","page":"/"}"#);
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
pub struct JsonTransformer<T> {
    _item: PhantomData<fn() -> T>,
}

typed_transformer_impls!(JsonTransformer, "A JSON transformer for `T`.");

impl<T> Transformer for JsonTransformer<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Item = T;

    fn to_item(&self, record: &Record) -> Result<T> {
        json::decode(&record.data).map_err(|e| json::decode_error(record, e))
    }
}

/// Encoding needs `Serialize`; decoding alone does not.
impl<T> Encoder for JsonTransformer<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn from_item(&self, item: &T, out: &mut Vec<u8>) -> Result<()> {
        json::write_item(out, item)
    }
}

/// The codec of [`JsonTransformer`] and [`JsonViewTransformer`](crate::JsonViewTransformer).
pub(crate) mod json {
    use serde::{Deserialize, Serialize};

    use crate::error::{Error, Result};
    use crate::record::Record;

    /// Decodes with serde_json. Checking UTF-8 once over the whole payload
    /// and parsing a `str` made the pipeline benchmark's typed JSON ~10 %
    /// faster than `from_slice`, which checks every string on its own;
    /// invalid UTF-8 takes `from_slice`, so the error (and what is accepted)
    /// stays the same. (sonic-rs decoded these typed structs more slowly.)
    /// Borrowed strings (`&'de str`, `Cow<'de, str>`) borrow from `bytes`.
    pub(crate) fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// Encodes as compact JSON with serde_json.
    #[cfg(not(feature = "fast-json"))]
    use serde_json::to_writer as encode;

    /// Encodes as compact JSON with sonic-rs (SIMD string escaping), byte for
    /// byte what serde_json writes.
    #[cfg(feature = "fast-json")]
    use sonic_rs::to_writer as encode;

    /// The error for a record that does not decode into the target type.
    pub(crate) fn decode_error(record: &Record, error: serde_json::Error) -> Error {
        Error::Transform {
            message: format!(
                "record {} is not valid JSON for the target type",
                record.position()
            ),
            source: Some(Box::new(error)),
        }
    }

    /// Appends `item` to `out` as compact JSON.
    pub(crate) fn write_item<T: Serialize + ?Sized>(out: &mut Vec<u8>, item: &T) -> Result<()> {
        encode(out, item).map_err(|e| Error::Transform {
            message: "item could not be encoded as JSON".to_owned(),
            source: Some(Box::new(e)),
        })
    }
}

/// Encodes `items` one per line (each followed by `\n`), the default body of
/// byte sinks such as S3 objects.
///
/// ```
/// use kinesis_connectors_core::{encode_lines, Utf8Transformer};
/// let mut out = Vec::new();
/// encode_lines(&Utf8Transformer, &["a".to_owned(), "b".to_owned()], &mut out)?;
/// assert_eq!(out, b"a\nb\n");
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
pub fn encode_lines<T: Encoder>(
    transformer: &T,
    items: &[T::Item],
    out: &mut Vec<u8>,
) -> Result<()> {
    for item in items {
        transformer.from_item(item, out)?;
        out.push(b'\n');
    }
    Ok(())
}

/// What [`encode_delimited`] wrote.
#[derive(Debug, Default)]
pub struct EncodedItems {
    /// Items written (each followed by the delimiter).
    pub written: usize,
    /// Items the transformer could not encode, by index, with the error;
    /// nothing of them was written.
    pub failed: Vec<(usize, Error)>,
}

impl EncodedItems {
    /// The failed items as rejections for the pipeline's bad-record policy,
    /// each reason naming where the item was to be written.
    pub fn into_rejected(self, destination: impl std::fmt::Display) -> Vec<RejectedItem> {
        self.failed
            .into_iter()
            .map(|(index, error)| RejectedItem {
                index,
                reason: format!("could not be encoded for {destination}: {error}"),
            })
            .collect()
    }
}

/// Encodes `items` into `out`, each followed by `delimiter`: the body of a
/// byte sink (an S3 object, a file). An item the transformer cannot encode
/// is left out and reported, so one bad item does not fail the batch;
/// `out` can be a compressor, which then sees each item once.
///
/// ```
/// use kinesis_connectors_core::{encode_delimited, Utf8Transformer};
/// let mut out = Vec::new();
/// let encoded = encode_delimited(&Utf8Transformer, &["a".to_owned(), "b".to_owned()], b"\r\n", &mut out)?;
/// assert_eq!(out, b"a\r\nb\r\n");
/// assert_eq!(encoded.written, 2);
/// assert!(encoded.failed.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn encode_delimited<T: Encoder, W: std::io::Write>(
    transformer: &T,
    items: &[T::Item],
    delimiter: &[u8],
    out: &mut W,
) -> std::io::Result<EncodedItems> {
    let mut encoded = EncodedItems::default();
    let mut item_bytes = Vec::new();
    for (index, item) in items.iter().enumerate() {
        item_bytes.clear();
        if let Err(error) = transformer.from_item(item, &mut item_bytes) {
            encoded.failed.push((index, error));
            continue;
        }
        item_bytes.extend_from_slice(delimiter);
        out.write_all(&item_bytes)?;
        encoded.written += 1;
    }
    Ok(encoded)
}

/// zlib's default gzip level, a balance of size and speed: see
/// [`Compression::Gzip`] for what the levels cost.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How [`encode_body`] compresses a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// As is.
    #[default]
    None,
    /// gzip (feature `gzip`, the zlib-rs backend) at `level`, 0 (stored)
    /// to 9 (smallest, slowest). On ~1 KiB JSON events, one core
    /// compresses about 32 MB/s at level 6 ([`DEFAULT_GZIP_LEVEL`]), 220
    /// MB/s at level 2 for 23 % larger output, 345 MB/s at level 1 for 67 %
    /// larger (the S3 crate's README has the measurement).
    Gzip {
        /// 0 to 9.
        level: u32,
    },
}

impl Compression {
    /// gzip at [`DEFAULT_GZIP_LEVEL`].
    pub const GZIP: Self = Self::Gzip {
        level: DEFAULT_GZIP_LEVEL,
    };
}

/// Encodes a batch into the body of a byte sink (an S3 object, a file):
/// [`encode_delimited`] into a buffer sized from the batch, compressed as
/// `compression` says.
///
/// The gzip header has no file name and mtime 0 (flate2's defaults), so a
/// replayed batch gives byte-identical output and overwrites cleanly.
///
/// ```
/// use kinesis_connectors_core::{
///     Batch, Compression, ItemSource, Record, ShardContext, Utf8Transformer, encode_body,
/// };
/// let (a, b) = (Record::new("a", "pk", 1u64), Record::new("b", "pk", 2u64));
/// let batch = Batch::new(
///     ShardContext::new("app", "stream", "shardId-0"),
///     vec![("a".to_owned(), ItemSource::of(&a)), ("b".to_owned(), ItemSource::of(&b))],
///     a.position(),
///     b.position(),
/// );
/// let (body, encoded) = encode_body(&Utf8Transformer, &batch, b"\n", Compression::None)?;
/// assert_eq!(body, b"a\nb\n");
/// assert_eq!(encoded.written, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When compression fails, a gzip level is above 9, or gzip is asked for
/// without the `gzip` feature.
pub fn encode_body<T: Encoder>(
    transformer: &T,
    batch: &Batch<T::Item>,
    delimiter: &[u8],
    compression: Compression,
) -> std::io::Result<(Vec<u8>, EncodedItems)> {
    if let Compression::Gzip { level } = compression {
        if level > 9 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("gzip level {level} is not within 0..=9"),
            ));
        }
        return encode_gzip(transformer, batch, delimiter, level);
    }
    let mut plain = Vec::with_capacity(batch.byte_size + batch.len() * delimiter.len());
    let encoded = encode_delimited(transformer, &batch.items, delimiter, &mut plain)?;
    Ok((plain, encoded))
}

#[cfg(feature = "gzip")]
fn encode_gzip<T: Encoder>(
    transformer: &T,
    batch: &Batch<T::Item>,
    delimiter: &[u8],
    level: u32,
) -> std::io::Result<(Vec<u8>, EncodedItems)> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(batch.byte_size / 4),
        flate2::Compression::new(level),
    );
    let encoded = encode_delimited(transformer, &batch.items, delimiter, &mut encoder)?;
    Ok((encoder.finish()?, encoded))
}

#[cfg(not(feature = "gzip"))]
fn encode_gzip<T: Encoder>(
    _: &T,
    _: &Batch<T::Item>,
    _: &[u8],
    _: u32,
) -> std::io::Result<(Vec<u8>, EncodedItems)> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "gzip needs the `gzip` feature of kinesis-connectors-core",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes numbers; refuses odd ones, having written half of them.
    struct EvenOnly;

    impl Transformer for EvenOnly {
        type Item = u32;
        fn to_item(&self, _record: &Record) -> Result<u32> {
            Ok(0)
        }
    }

    impl Encoder for EvenOnly {
        fn from_item(&self, item: &u32, out: &mut Vec<u8>) -> Result<()> {
            out.extend_from_slice(item.to_string().as_bytes());
            if item % 2 == 1 {
                return Err(Error::Transform {
                    message: format!("{item} is odd"),
                    source: None,
                });
            }
            Ok(())
        }
    }

    #[test]
    fn encode_delimited_leaves_out_items_that_fail_and_reports_them() {
        let mut out = Vec::new();
        let encoded = encode_delimited(&EvenOnly, &[2, 3, 4, 5], b"|", &mut out).unwrap();
        assert_eq!(out, b"2|4|");
        assert_eq!(encoded.written, 2);
        let failed: Vec<(usize, String)> = encoded
            .failed
            .iter()
            .map(|(index, error)| (*index, error.to_string()))
            .collect();
        assert_eq!(failed.len(), 2);
        assert_eq!((failed[0].0, failed[1].0), (1, 3));
        assert!(failed[0].1.contains("3 is odd"), "{}", failed[0].1);
    }

    fn numbers(items: Vec<u32>) -> Batch<u32> {
        let last = items.len() as u64;
        let sourced = items
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let record = Record::new(n.to_string(), "pk", i as u64 + 1);
                (n, crate::ItemSource::of(&record))
            })
            .collect();
        Batch::new(
            crate::ShardContext::new("app", "stream", "shardId-0"),
            sourced,
            crate::Position::new(1u64.into()),
            crate::Position::new(last.into()),
        )
    }

    #[test]
    fn encode_body_plain_leaves_out_items_that_fail() {
        let (body, encoded) =
            encode_body(&EvenOnly, &numbers(vec![2, 3, 4]), b"\n", Compression::None).unwrap();
        assert_eq!(body, b"2\n4\n");
        assert_eq!(encoded.written, 2);
        let rejected = encoded.into_rejected("out.txt");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 1);
        assert!(
            rejected[0]
                .reason
                .starts_with("could not be encoded for out.txt: "),
            "{}",
            rejected[0].reason
        );
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn encode_body_gzip_is_deterministic_and_decodes_to_the_plain_body() {
        use std::io::Read as _;
        let batch = numbers(vec![2, 3, 4, 6]);
        let (gzipped, encoded) = encode_body(&EvenOnly, &batch, b"\n", Compression::GZIP).unwrap();
        assert_eq!(encoded.written, 3);
        let mut plain = String::new();
        flate2::read::GzDecoder::new(gzipped.as_slice())
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "2\n4\n6\n");
        let (again, _) = encode_body(&EvenOnly, &batch, b"\n", Compression::GZIP).unwrap();
        assert_eq!(gzipped, again, "a replayed batch gives the same bytes");
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn the_gzip_level_is_used_and_checked() {
        let batch = numbers((0..2_000).map(|i| i * 2).collect());
        let size = |level| {
            encode_body(&EvenOnly, &batch, b"\n", Compression::Gzip { level })
                .unwrap()
                .0
                .len()
        };
        assert!(size(0) > size(1), "level 0 stores, level 1 compresses");
        assert!(size(1) > size(9), "level 9 compresses harder than 1");
        let error =
            encode_body(&EvenOnly, &batch, b"\n", Compression::Gzip { level: 10 }).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[cfg(not(feature = "gzip"))]
    #[test]
    fn encode_body_gzip_without_the_feature_is_a_clear_error() {
        let error =
            encode_body(&EvenOnly, &numbers(vec![2]), b"\n", Compression::GZIP).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
        assert!(error.to_string().contains("`gzip` feature"), "{error}");
    }

    #[test]
    fn utf8_rejects_invalid_bytes_with_the_position() {
        let record = Record::new(vec![0xff, 0xfe], "k", 12u64);
        let err = Utf8Transformer.to_item(&record).unwrap_err();
        assert!(err.to_string().contains("12"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn json_round_trips_and_reports_bad_input() {
        let json = JsonTransformer::<serde_json::Value>::new();
        let value = json.to_item(&Record::new(r#"{"a":1}"#, "k", 1u64)).unwrap();
        let mut out = Vec::new();
        json.from_item(&value, &mut out).unwrap();
        assert_eq!(out, br#"{"a":1}"#);
        assert!(json.to_item(&Record::new("{", "k", 2u64)).is_err());
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Event {
        id: String,
        user: u64,
        delta: i64,
        score: f64,
        ratio: f32,
        anonymous: bool,
        referrer: Option<String>,
        tags: Vec<String>,
        nested: Vec<Nested>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Nested {
        sku: String,
        quantity: u32,
    }

    // Runs with the default codec and with `--features fast-json`: the output
    // is serde_json's compact JSON byte for byte either way.
    #[test]
    fn json_typed_round_trip_is_compact_serde_json() {
        let event = Event {
            id: "é \"quoted\" back\\slash\ttab\u{1}\u{7f}\u{2028} 😀 </script>".to_owned(),
            user: u64::MAX,
            delta: i64::MIN,
            score: 53.480_759,
            ratio: 0.1,
            anonymous: false,
            referrer: None,
            tags: vec![String::new(), "a".to_owned()],
            nested: vec![Nested {
                sku: "SKU-1".to_owned(),
                quantity: 3,
            }],
        };
        let expected = serde_json::to_vec(&event).unwrap();
        let json = JsonTransformer::<Event>::new();
        let mut out = Vec::new();
        json.from_item(&event, &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );

        let decoded = json.to_item(&Record::new(out.clone(), "k", 1u64)).unwrap();
        assert_eq!(decoded, event);
        // Whitespace and escapes in the input do not matter.
        let spaced = r#" { "user": 7, "delta": -1, "score": 1e3, "ratio": 2.5,
            "anonymous": true, "referrer": "r", "tags": [], "nested": [],
            "id": "\u00e9\n" } "#;
        let decoded = json.to_item(&Record::new(spaced, "k", 2u64)).unwrap();
        assert_eq!(decoded.id, "é\n");
        assert_eq!(decoded.score, 1000.0);
        assert_eq!(decoded.referrer.as_deref(), Some("r"));
        out.clear();
        json.from_item(&decoded, &mut out).unwrap();
        assert_eq!(out, serde_json::to_vec(&decoded).unwrap());
    }

    #[test]
    fn json_rejects_what_serde_json_rejects_with_the_same_message() {
        let json = JsonTransformer::<Nested>::new();
        let bad: [&[u8]; 6] = [
            b"",
            br#"{"sku":"a","quantity":1} x"#,
            br#"{"sku":"a"}"#,
            br#"{"sku":"a","quantity":-1}"#,
            br#"{"sku":1,"quantity":1}"#,
            b"{\"sku\":\"\xff\",\"quantity\":1}",
        ];
        for (i, payload) in bad.into_iter().enumerate() {
            assert!(
                serde_json::from_slice::<Nested>(payload).is_err(),
                "case {i}"
            );
            let err = json
                .to_item(&Record::new(payload.to_vec(), "k", 40u64 + i as u64))
                .unwrap_err();
            assert!(
                matches!(err, Error::Transform { .. }) && !err.is_retryable(),
                "case {i}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!(
                    "record {} is not valid JSON for the target type",
                    40 + i
                )),
                "case {i}: {message}"
            );
        }
        let ok = json
            .to_item(&Record::new(r#"{"quantity":1,"sku":"a"}"#, "k", 1u64))
            .unwrap();
        assert_eq!(
            ok,
            Nested {
                sku: "a".to_owned(),
                quantity: 1
            }
        );
    }

    #[test]
    fn json_encode_errors_are_transform_errors() {
        use std::collections::BTreeMap;
        // Non-string map keys cannot be JSON object keys.
        let json = JsonTransformer::<BTreeMap<Vec<u8>, u8>>::new();
        let item = BTreeMap::from([(vec![1u8], 1u8)]);
        let err = json.from_item(&item, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Transform { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("item could not be encoded as JSON"),
            "{err}"
        );
    }

    #[test]
    fn passthrough_keeps_bytes_and_records() {
        let record = Record::new("payload", "k", 3u64);
        assert_eq!(BytesTransformer.to_item(&record).unwrap(), record.data);
        assert_eq!(RecordTransformer.to_item(&record).unwrap(), record);
        let mut out = Vec::new();
        encode_lines(
            &BytesTransformer,
            std::slice::from_ref(&record.data),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"payload\n");
    }
}
