//! Ready-made values for tests: a shard context, records and batches.

use kinesis_connectors_core::{Batch, ItemSource, Position, Record, ShardContext};

/// The application name every fixture uses.
pub const TEST_APPLICATION: &str = "test-app";

/// The stream name every fixture uses.
pub const TEST_STREAM: &str = "test-stream";

/// A context for `shard_id` of stream `"test-stream"` consumed by application `"test-app"`.
///
/// ```
/// let context = kinesis_connectors_testkit::shard_context("shard-0");
/// assert_eq!(&*context.application, "test-app");
/// assert_eq!(&*context.stream, "test-stream");
/// assert_eq!(&*context.shard_id, "shard-0");
/// ```
pub fn shard_context(shard_id: &str) -> ShardContext {
    ShardContext::new(TEST_APPLICATION, TEST_STREAM, shard_id)
}

/// `n` records with consecutive sequence numbers from `shard_seq_start`.
///
/// Record `i` (counting from 0) has data `"record-{i}"`, partition key
/// `"pk-{i % 8}"` and sequence number `shard_seq_start + i`; no
/// sub-sequence number, arrival time or explicit hash key.
///
/// ```
/// let records = kinesis_connectors_testkit::records(100, 3);
/// assert_eq!(records[2].data, "record-2");
/// assert_eq!(records[2].partition_key, "pk-2");
/// assert_eq!(records[2].sequence_number.as_str(), "102");
/// ```
pub fn records(shard_seq_start: u64, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::new(
                format!("record-{i}"),
                format!("pk-{}", i % 8),
                shard_seq_start + i as u64,
            )
        })
        .collect()
}

/// A batch of `items` from the shard in `context`, item `i` at sequence
/// number `first_seq + i`, each with partition key `"pk-{i % 8}"` and a
/// payload size of 1 byte.
///
/// `first` and `last` are the first and last item's positions and
/// `record_count` is the number of items. An empty `items` gives a batch
/// covering the single (filtered) record `first_seq`: `first == last`,
/// `record_count == 1`, no items.
///
/// ```
/// use kinesis_connectors_testkit::{batch, shard_context};
/// let batch = batch(shard_context("shard-0"), vec!["a", "b", "c"], 10);
/// assert_eq!(batch.first.to_string(), "10");
/// assert_eq!(batch.last.to_string(), "12");
/// assert_eq!(batch.record_count, 3);
/// assert_eq!(batch.byte_size, 3);
/// ```
pub fn batch<T>(context: ShardContext, items: Vec<T>, first_seq: u64) -> Batch<T> {
    let count = items.len();
    let first = Position::new(first_seq.into());
    let last = Position::new((first_seq + count.saturating_sub(1) as u64).into());
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let source = ItemSource {
                position: Position::new((first_seq + i as u64).into()),
                partition_key: format!("pk-{}", i % 8),
                explicit_hash_key: None,
                size: 1,
            };
            (item, source)
        })
        .collect();
    let mut batch = Batch::new(context, items, first, last);
    batch.record_count = count.max(1);
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_batch_covers_one_filtered_record() {
        let empty = batch::<u8>(shard_context("s"), Vec::new(), 7);
        assert!(empty.is_empty());
        assert_eq!(empty.first, empty.last);
        assert_eq!(empty.first.to_string(), "7");
        assert_eq!(empty.record_count, 1);
        assert_eq!(empty.byte_size, 0);
    }

    #[test]
    fn batch_sources_follow_the_positions() {
        let b = batch(shard_context("s"), vec![1, 2, 3, 4, 5, 6, 7, 8, 9], 1);
        assert_eq!(b.sources.len(), 9);
        assert_eq!(b.sources[8].position.to_string(), "9");
        assert_eq!(b.sources[8].partition_key, "pk-0");
        assert_eq!(b.context, shard_context("s"));
    }

    #[test]
    fn records_have_the_documented_shape() {
        let rs = records(0, 10);
        assert_eq!(rs.len(), 10);
        assert_eq!(rs[9].partition_key, "pk-1");
        assert_eq!(rs[0].sequence_number.as_str(), "0");
        assert!(rs.iter().all(|r| r.sub_sequence_number.is_none()));
    }
}
