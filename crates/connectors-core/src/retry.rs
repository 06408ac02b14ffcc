//! Retry policy: capped exponential backoff with jitter, the one backoff
//! of the workspace (the consumer loop and emitters that retry in `emit`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{Error, Result};

/// How failed calls are retried: by the consumer loop (reads, emits,
/// checkpoints) and by emitters that retry inside `emit`.
///
/// Each delay doubles from `initial_delay` up to `max_delay`, plus up to
/// 100 % random jitter so that shards throttled together do not retry in
/// lockstep. Build one from the defaults with the `with_*` setters, which
/// are `const` so emitters can declare their default policy as a constant:
///
/// ```
/// use std::time::Duration;
/// use kinesis_connectors_core::RetryPolicy;
///
/// const PATIENT: RetryPolicy = RetryPolicy::new()
///     .with_initial_delay(Duration::from_millis(50))
///     .with_max_delay(Duration::from_secs(5))
///     .with_max_attempts(20);
///
/// let mut delays = PATIENT.delays();
/// let first = delays.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// assert_eq!(RetryPolicy::default().with_max_attempts(5).max_attempts, 5);
/// ```
///
/// `#[non_exhaustive]`: new settings can be added without breaking callers,
/// so build it with [`new`](Self::new) or [`Default`] and the setters rather
/// than a struct literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The first delay (default 100 ms).
    pub initial_delay: Duration,
    /// The largest delay before jitter (default 10 s).
    pub max_delay: Duration,
    /// Attempts per batch emit, first one included, before the shard stops
    /// (default 10). Throttled reads and checkpoint writes are retried
    /// without limit until shutdown, since waiting is always safe for them.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// The default policy: 100 ms doubling to 10 s, with jitter, 10 attempts.
    /// The same as [`Default`], usable in `const` items.
    pub const fn new() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 10,
        }
    }

    /// The policy with `delay` as the first delay.
    pub const fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The policy with `delay` as the largest delay before jitter.
    pub const fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The policy with `attempts` attempts, the first one included.
    pub const fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Checks the policy can make progress.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::Config(
                "retry max_attempts must be at least 1".into(),
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::Config(format!(
                "retry initial_delay {:?} is above max_delay {:?}",
                self.initial_delay, self.max_delay
            )));
        }
        Ok(())
    }

    /// The delays of one retry sequence, endless: the caller counts attempts
    /// against [`max_attempts`](Self::max_attempts) where they are bounded.
    /// Start a new sequence for each operation retried, so each starts again
    /// from `initial_delay`.
    pub fn delays(&self) -> Backoff {
        Backoff {
            delays: ExponentialBuilder::new()
                .with_min_delay(self.initial_delay)
                .with_max_delay(self.max_delay)
                .with_jitter()
                .without_max_times()
                .build(),
            max_delay: self.max_delay,
        }
    }
}

/// The delays of one retry sequence (see [`RetryPolicy::delays`]), so that
/// every retry in the workspace backs off the same way.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    max_delay: Duration,
}

impl Backoff {
    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // The sequence is endless; the fallback only guards that.
        self.delays.next().unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy::new()
            .with_initial_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(80))
            .with_max_attempts(3);
        let mut delays = policy.delays();
        let first = delays.next_delay();
        assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(20));
        for _ in 0..20 {
            let delay = delays.next_delay();
            assert!(delay <= Duration::from_millis(160), "{delay:?}");
        }
    }

    #[test]
    fn setters_change_one_setting_each() {
        let policy = RetryPolicy::default().with_max_attempts(5);
        assert_eq!(
            (policy.initial_delay, policy.max_delay, policy.max_attempts),
            (Duration::from_millis(100), Duration::from_secs(10), 5)
        );
        assert_eq!(RetryPolicy::new(), RetryPolicy::default());
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(
            RetryPolicy::default()
                .with_max_attempts(0)
                .validate()
                .is_err()
        );
        let inverted = RetryPolicy::default().with_initial_delay(Duration::from_secs(20));
        assert!(inverted.validate().is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
