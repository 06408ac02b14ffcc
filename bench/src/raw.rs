//! The floor: a hand-written aws-sdk-kinesis loop, what a team would write
//! instead of a library. One task per shard, `GetRecords` at most five
//! times a second, a pause after an empty page, each record decoded with
//! borrowed strings and dropped; no checkpoints, no batches.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::event::EventRef;
use crate::measure::Clock;
use crate::target::Target;

/// Kinesis allows five `GetRecords` calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// The pause after a page that found the shard caught up (the library's default).
const IDLE_DELAY: Duration = Duration::from_secs(1);

/// Reads every shard of `stream` from TRIM_HORIZON, handing each decoded
/// event to `visit` and counting pages into `target`, until the task is
/// dropped; returns only with an error (a shard ending is one: the
/// benchmark's streams stay open).
pub(crate) async fn read(
    client: &Client,
    stream: &str,
    clock: Arc<Clock>,
    target: Arc<Target>,
    visit: impl Fn(&EventRef<'_>) + Clone + Send + Sync + 'static,
) -> Result<Infallible> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("ListShards {stream}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards.shards() {
        let client = client.clone();
        let stream = stream.to_owned();
        let shard_id = shard.shard_id().to_owned();
        let (clock, target, visit) = (Arc::clone(&clock), Arc::clone(&target), visit.clone());
        tasks.spawn(async move {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .with_context(|| format!("GetShardIterator {shard_id}"))?
                .shard_iterator
                .context("no shard iterator")?;
            loop {
                let called = Instant::now();
                let page = client
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(10_000)
                    .send()
                    .await
                    .with_context(|| format!("GetRecords {shard_id}"))?;
                let mut id_sum = 0;
                for record in page.records() {
                    clock.saw_record();
                    let event: EventRef<'_> = serde_json::from_slice(record.data().as_ref())
                        .context("a record that is not an event")?;
                    id_sum += event.id;
                    std::hint::black_box((event.user, event.kind, event.payload));
                    visit(&event);
                }
                target.add(page.records().len() as u64, id_sum);
                let pause = if page.records().is_empty() {
                    IDLE_DELAY
                } else {
                    MIN_CALL_INTERVAL.saturating_sub(called.elapsed())
                };
                match page.next_shard_iterator {
                    Some(next) => iterator = next,
                    None => return Ok::<_, anyhow::Error>(()),
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a shard task panicked")??;
    }
    bail!("every shard of {stream} ended before the run was done")
}
