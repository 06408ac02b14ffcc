//! Polling until a condition holds, with a bound.

use std::time::{Duration, Instant};

/// Polls `done` every `poll` until it returns true; returns how long that
/// took.
///
/// # Panics
///
/// When `done` still returns false after `timeout`, naming `what`.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut done: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if done().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not done within {timeout:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// Polls `check` every `poll` until it answers `(true, _)`; returns how long
/// that took. `check` answers whether it is done and how far it got.
///
/// # Panics
///
/// When `check` fails (naming `what`), or is not done after `timeout`
/// (naming `what` and the last progress it reported).
#[allow(clippy::expect_used)] // test support: a failing check fails the test
pub async fn wait_for_progress(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<(bool, String)>,
) -> Duration {
    let started = Instant::now();
    loop {
        let (finished, progress) = check().await.expect(what);
        if finished {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not done after {timeout:?} ({progress})"
        );
        tokio::time::sleep(poll).await;
    }
}
