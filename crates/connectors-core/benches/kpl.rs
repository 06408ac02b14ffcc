//! CPU per record through KPL de-aggregation, against the plain path.
//!
//! `plain_passthrough`: `kpl::deaggregate` on a 1 KiB record without the
//! magic — what every record of a non-KPL stream pays with de-aggregation on.
//! `deaggregate_100x1KiB`: one aggregate of 100 sub-records of 1 KiB (MD5,
//! protobuf, one `Record` per sub-record), per sub-record (throughput).
//! `hash_range_filter`: the shard-range check `PollingSource` adds per
//! sub-record (MD5 of the partition key). Run with
//! `cargo bench -p kinesis-connectors-core --bench kpl`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kinesis_connectors_core::Record;
use kinesis_connectors_core::kpl::{self, HashKeyRange};

fn kpl_benches(c: &mut Criterion) {
    let payload = vec![b'a'; 1024];
    let plain = Record::new(payload.clone(), "user-1", 1u64);
    let users: Vec<Record> = (0..100)
        .map(|i| Record::new(payload.clone(), format!("user-{i}"), 1u64))
        .collect();
    let aggregate = Record::new(kpl::aggregate(&users), "user-0", 1u64);
    let subs = kpl::deaggregate(&aggregate).unwrap();
    let mut group = c.benchmark_group("kpl");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain_passthrough", |b| {
        b.iter(|| kpl::deaggregate(black_box(&plain)).unwrap())
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("deaggregate_100x1KiB", |b| {
        b.iter(|| kpl::deaggregate(black_box(&aggregate)).unwrap())
    });
    let range = HashKeyRange {
        start: 0,
        end: u128::MAX / 2,
    };
    group.bench_function("hash_range_filter_100", |b| {
        b.iter(|| black_box(&subs).iter().filter(|r| range.owns(r)).count())
    });
    group.finish();
}

criterion_group!(benches, kpl_benches);
criterion_main!(benches);
