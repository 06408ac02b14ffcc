//! Counting what the sink holds: every delivered id, read back from S3
//! objects or PostgreSQL rows, so losses and duplicates are measured at the
//! sink rather than taken from the consumer's own word.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aws_sdk_s3::error::DisplayErrorContext;
use integration_tests::s3::list_objects;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

/// Rows delivered, distinct ids among them, and the lowest id not yet
/// delivered (every id below it arrived at least once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) rows: u64,
    pub(crate) distinct: u64,
    pub(crate) prefix: u64,
}

/// Counts delivered ids: `rows` occurrences, `distinct` ids, and the first
/// gap.
pub(crate) fn count(ids: impl IntoIterator<Item = u64>) -> Counts {
    let mut seen: Vec<bool> = Vec::new();
    let mut rows = 0;
    let mut distinct = 0;
    for id in ids {
        rows += 1;
        let Ok(index) = usize::try_from(id) else {
            continue;
        };
        if index >= seen.len() {
            seen.resize(index + 1, false);
        }
        if !seen[index] {
            seen[index] = true;
            distinct += 1;
        }
    }
    let prefix = seen.iter().position(|s| !s).unwrap_or(seen.len()) as u64;
    Counts {
        rows,
        distinct,
        prefix,
    }
}

/// The ids of the objects under a prefix, each object read once (its ETag
/// tells a rewritten object, e.g. a replayed batch, from a known one).
#[derive(Debug, Default)]
pub(crate) struct S3Tally {
    objects: HashMap<String, (Option<String>, Vec<u64>)>,
    /// Lines that were not an event with an id (should stay 0).
    pub(crate) unreadable: u64,
}

impl S3Tally {
    /// Lists the prefix, reads new or changed objects, and counts.
    pub(crate) async fn refresh(
        &mut self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
    ) -> Result<Counts> {
        for object in list_objects(s3, bucket, prefix).await? {
            let Some(key) = object.key() else { continue };
            let etag = object.e_tag().map(str::to_owned);
            if self
                .objects
                .get(key)
                .is_some_and(|(known, _)| *known == etag)
            {
                continue;
            }
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("GetObject {key}: {}", DisplayErrorContext(e)))?
                .body
                .collect()
                .await
                .with_context(|| format!("reading {key}"))?
                .into_bytes();
            let mut ids = Vec::new();
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|event| event["id"].as_u64())
                {
                    Some(id) => ids.push(id),
                    None => self.unreadable += 1,
                }
            }
            self.objects.insert(key.to_owned(), (etag, ids));
        }
        Ok(count(
            self.objects
                .values()
                .flat_map(|(_, ids)| ids.iter().copied()),
        ))
    }
}

/// The ids in a PostgreSQL table.
pub(crate) async fn postgres_counts(pool: &PgPool, table: &str) -> Result<Counts> {
    let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {table}")))
        .fetch_all(pool)
        .await
        .with_context(|| format!("SELECT id FROM {table}"))?;
    Ok(count(
        ids.into_iter().filter_map(|id| u64::try_from(id).ok()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_distinct_ids_and_the_first_gap() {
        assert_eq!(count([]), Counts::default());
        assert_eq!(
            count([0, 1, 1, 2, 4]),
            Counts {
                rows: 5,
                distinct: 4,
                prefix: 3
            }
        );
        assert_eq!(count([1, 0]).prefix, 2);
    }
}
