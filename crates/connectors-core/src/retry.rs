//! Retry policy: capped exponential backoff with jitter.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{Error, Result};

/// How failed calls are retried.
///
/// Each delay doubles from `initial_delay` up to `max_delay`, plus up to
/// 100 % random jitter so that shards throttled together do not retry in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
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

    /// An endless sequence of delays.
    pub(crate) fn delays(&self) -> Backoff {
        Backoff(
            ExponentialBuilder::new()
                .with_min_delay(self.initial_delay)
                .with_max_delay(self.max_delay)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

/// The delays of one retry sequence.
pub(crate) struct Backoff(backon::ExponentialBackoff);

impl Backoff {
    /// The next delay to wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.0.next().unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_attempts: 3,
        };
        let mut delays = policy.delays();
        let first = delays.next_delay();
        assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(20));
        for _ in 0..20 {
            let delay = delays.next_delay();
            assert!(delay <= Duration::from_millis(160), "{delay:?}");
        }
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(zero.validate().is_err());
        let inverted = RetryPolicy {
            initial_delay: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        assert!(inverted.validate().is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
