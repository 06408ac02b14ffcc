//! Time limits on external calls: every call to a source, an emitter, a
//! checkpoint store or a lease store has one, so a hung dependency turns
//! into an error the loop handles (retry, restart) instead of a frozen shard.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Runs `call`, failing with `timed_out(limit)` when it takes longer than
/// `limit` (the call is dropped, which cancels it).
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T>>,
    timed_out: impl FnOnce(Duration) -> Error,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_limit_becomes_the_given_error() {
        let slow = within(
            Duration::from_secs(1),
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(1)
            },
            |after| Error::emit_retryable(format!("timed out after {after:?}")),
        )
        .await;
        let error = slow.err().map(|e| (e.is_retryable(), e.to_string()));
        assert_eq!(
            error,
            Some((
                true,
                "emit failed (retryable): timed out after 1s".to_owned()
            ))
        );
        let fast = within(Duration::from_secs(1), async { Ok(2) }, |_| {
            Error::Config("unused".into())
        })
        .await;
        assert_eq!(fast.ok(), Some(2));
    }
}
