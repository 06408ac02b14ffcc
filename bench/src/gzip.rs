//! `kc-bench gzip`: what encoding an S3 object costs per record, plain
//! and at several gzip levels, with the gzip backend this build links
//! (the workspace's flate2 features pick it). One thread, CPU time, no
//! network: the encoding alone.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use kinesis_connectors_core::{
    Batch, Compression, ItemSource, JsonTransformer, Record, ShardContext, encode_body,
};

use crate::event::{self, Event};
use crate::measure::thread_cpu;

/// Repetitions of each encoding; the fastest counts.
const REPEATS: usize = 5;

/// A markdown table: per compression, µs and MB/s (of plain JSON lines)
/// per core, and the compression ratio.
pub(crate) fn table(records: u64, size: usize) -> Result<String> {
    let items: Vec<(Event, ItemSource)> = (0..records)
        .map(|id| {
            let record = Record::new(event::encode(id, size), format!("pk-{id}"), id + 1);
            let event: Event = serde_json::from_slice(&record.data)?;
            Ok((event, ItemSource::from(record)))
        })
        .collect::<Result<_>>()?;
    let first = items.first().map(|(_, s)| s.position.clone());
    let last = items.last().map(|(_, s)| s.position.clone());
    let (Some(first), Some(last)) = (first, last) else {
        anyhow::bail!("--records must be positive");
    };
    let batch = Batch::new(
        ShardContext::new("bench", "bench", "shard"),
        items,
        first,
        last,
    );
    let json = JsonTransformer::<Event>::new();
    let mut out = String::new();
    let _ = writeln!(out, "| encoding | µs/record | MB/s per core | ratio |");
    let _ = writeln!(out, "|---|---|---|---|");
    let (plain, _) = encode_body(&json, &batch, b"\n", Compression::None)?;
    for (name, compression) in [
        ("plain JSON lines", Compression::None),
        ("gzip level 1", Compression::Gzip { level: 1 }),
        ("gzip level 2", Compression::Gzip { level: 2 }),
        ("gzip level 6 (default)", Compression::GZIP),
    ] {
        let mut best = Duration::MAX;
        let mut size = 0;
        for _ in 0..REPEATS {
            let before = thread_cpu();
            let (body, _) = encode_body(&json, &batch, b"\n", compression)?;
            best = best.min(thread_cpu().saturating_sub(before));
            size = body.len();
        }
        let secs = best.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "| {name} | {:.2} | {:.0} | {:.2} |",
            secs * 1e6 / records as f64,
            plain.len() as f64 / secs / 1e6,
            plain.len() as f64 / size as f64
        );
    }
    Ok(out)
}
