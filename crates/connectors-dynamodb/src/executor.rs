//! Running a batch's requests: at most `max_in_flight` at once, none started
//! after a failure, and the failure worth reporting.

use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Runs `start(input)` for each input, at most `max_in_flight` at a time.
/// After the first failure no more start and the ones in flight finish, so
/// nothing is left half-done. Returns every success and every failure, in
/// the order they came, and the inputs never started.
pub(crate) async fn run_bounded<I, F, Fut, O, E>(
    max_in_flight: usize,
    inputs: I,
    mut start: F,
) -> (Vec<O>, Vec<E>, I::IntoIter)
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = std::result::Result<O, E>>,
{
    let mut inputs = inputs.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut successes = Vec::new();
    let mut failures = Vec::new();
    loop {
        while failures.is_empty() && in_flight.len() < max_in_flight {
            match inputs.next() {
                Some(input) => in_flight.push(start(input)),
                None => break,
            }
        }
        match in_flight.next().await {
            Some(Ok(success)) => successes.push(success),
            Some(Err(failure)) => failures.push(failure),
            None => return (successes, failures, inputs),
        }
    }
}

/// The failure a batch reports: the first one, unless it is retryable and
/// a later one is not (retrying the batch would then be in vain).
pub(crate) fn first_to_report<E>(failures: Vec<E>, is_retryable: impl Fn(&E) -> bool) -> Option<E> {
    let mut failures = failures.into_iter();
    let first = failures.next()?;
    if !is_retryable(&first) {
        return Some(first);
    }
    Some(
        failures
            .find(|failure| !is_retryable(failure))
            .unwrap_or(first),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_permanent_failure_is_reported_before_retryable_ones() {
        let retryable = |e: &(&str, bool)| e.1;
        assert_eq!(first_to_report(Vec::new(), retryable), None);
        assert_eq!(
            first_to_report(vec![("a", true), ("b", true)], retryable),
            Some(("a", true))
        );
        assert_eq!(
            first_to_report(vec![("a", true), ("b", false), ("c", false)], retryable),
            Some(("b", false))
        );
        assert_eq!(
            first_to_report(vec![("a", false), ("b", false)], retryable),
            Some(("a", false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_bounded_starts_nothing_after_a_failure_and_lets_the_rest_finish() {
        // Input n sleeps n ms; 2 fails. With 3 in flight: 1, 2 and 3 start;
        // 1 ends at 1 ms and 4 starts; 2 fails at 2 ms; 3 and 4 still finish
        // (at 3 and 5 ms); 5 never starts.
        let started = std::sync::Mutex::new(Vec::new());
        let finished = std::sync::Mutex::new(Vec::new());
        let (successes, failures, unsent) = run_bounded(3, 1..=5u64, |n| {
            started.lock().unwrap().push(n);
            let finished = &finished;
            async move {
                tokio::time::sleep(Duration::from_millis(n)).await;
                finished.lock().unwrap().push(n);
                if n == 2 { Err(n) } else { Ok(n * 10) }
            }
        })
        .await;
        assert_eq!(successes, [10, 30, 40]);
        assert_eq!(failures, [2]);
        assert_eq!(unsent.collect::<Vec<_>>(), [5]);
        assert_eq!(*started.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!(*finished.lock().unwrap(), [1, 2, 3, 4]);

        // Without failures everything runs, at most 2 at a time.
        let running = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let (_, failures, mut unsent) = run_bounded(2, 0..7u64, |_| async {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert!(failures.is_empty());
        assert_eq!(unsent.next(), None);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
