//! Fault injection around an emitter: user code that panics, or that hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use kinesis_connectors_core::{Batch, EmitOutcome, Emitter, async_trait};
use serde_json::json;
use tokio::time::Instant;

use crate::args::Args;
use crate::report;

/// What the wrapped emitter does wrong, and when.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Behaves.
    None,
    /// The first `count` emits that start `after` the consumer started panic.
    Panic { after: Duration, count: u64 },
    /// Every emit that starts within `after .. after + length` waits until
    /// the window closes (an emit that does not return), then delivers.
    Hang { after: Duration, length: Duration },
}

impl Fault {
    pub(crate) fn from_args(args: &Args) -> Result<Self> {
        let panic = args.seconds("panic-after")?;
        let hang = args.seconds("hang-after")?;
        match (panic, hang) {
            (Some(_), Some(_)) => bail!("--panic-after and --hang-after are one fault each"),
            (Some(after), None) => Ok(Fault::Panic {
                after,
                count: args.number("panics", 3)?,
            }),
            (None, Some(after)) => Ok(Fault::Hang {
                after,
                length: args
                    .seconds("hang-secs")?
                    .unwrap_or(Duration::from_secs(20)),
            }),
            (None, None) => Ok(Fault::None),
        }
    }
}

/// An emitter that injects `fault` in front of the real one and reports
/// the fault window on stdout (`{"fault":"start"}`, `{"fault":"end"}`), so
/// the xtask measures recovery from the moment the fault ended.
pub(crate) struct Faulty<T> {
    inner: Arc<dyn Emitter<T>>,
    fault: Fault,
    started: Instant,
    panics: AtomicU64,
}

impl<T> Faulty<T> {
    pub(crate) fn new(inner: Arc<dyn Emitter<T>>, fault: Fault) -> Self {
        let started = Instant::now();
        if let Fault::Hang { after, length } = fault {
            // The window is a matter of time, not of emits: say so on time.
            tokio::spawn(async move {
                tokio::time::sleep_until(started + after).await;
                report(&json!({ "fault": "start" }));
                tokio::time::sleep_until(started + after + length).await;
                report(&json!({ "fault": "end" }));
            });
        }
        Self {
            inner,
            fault,
            started,
            panics: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl<T: Send + Sync> Emitter<T> for Faulty<T> {
    async fn emit(&self, batch: &Batch<T>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let now = Instant::now();
        match self.fault {
            Fault::None => {}
            Fault::Panic { after, count } if now >= self.started + after => {
                let n = self.panics.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= count {
                    if n == 1 {
                        report(&json!({ "fault": "start" }));
                    }
                    if n == count {
                        report(&json!({ "fault": "end" }));
                    }
                    eprintln!(
                        "chaos-pipeline: injected panic {n}/{count} in emit ({} .. {})",
                        batch.first, batch.last
                    );
                    inject_panic(n, count);
                }
            }
            Fault::Panic { .. } => {}
            Fault::Hang { after, length } => {
                let (opens, closes) = (self.started + after, self.started + after + length);
                if now >= opens && now < closes {
                    eprintln!(
                        "chaos-pipeline: emit ({} .. {}) hangs for {:.1} s",
                        batch.first,
                        batch.last,
                        (closes - now).as_secs_f64()
                    );
                    tokio::time::sleep_until(closes).await;
                }
            }
        }
        self.inner.emit(batch).await
    }

    async fn shutdown(&self) -> kinesis_connectors_core::Result<()> {
        self.inner.shutdown().await
    }
}

/// User code that panics: the fault this binary exists to inject.
#[allow(clippy::panic)] // the injected fault itself
fn inject_panic(n: u64, count: u64) -> ! {
    panic!("chaos: injected panic {n} of {count}")
}
