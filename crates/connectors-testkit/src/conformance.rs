//! What the conformance suites share: the failure of one rule, the report
//! of a whole run, and the plumbing that builds both.
//!
//! Each suite ([`checkpoint_store_conformance`](crate::checkpoint_store_conformance),
//! [`emitter_conformance`](crate::emitter_conformance),
//! [`lease_conformance`](crate::lease_conformance)) has one public function
//! per rule, returning a [`RuleResult`], and a `run_all` that runs every rule
//! the backend supports, keeps going after a failure and returns a
//! [`ConformanceReport`].

use std::any::Any;
use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use kinesis_connectors_core::SequenceNumber;

/// A broken conformance rule: which suite, which rule, and what went wrong,
/// so a failing test says exactly which promise the backend broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleFailure {
    /// The suite, e.g. `"checkpoint store"`.
    pub suite: &'static str,
    /// The rule, e.g. `"never-backwards"`.
    pub rule: &'static str,
    /// What the backend did instead (the call that failed, the value read).
    pub details: String,
}

impl Display for RuleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conformance, rule `{}`: {}",
            self.suite, self.rule, self.details
        )
    }
}

impl std::error::Error for RuleFailure {}

/// What one rule function returns: `Ok` when the backend follows the rule,
/// or the [`RuleFailure`] naming it.
pub type RuleResult = Result<(), RuleFailure>;

/// A rule `run_all` did not run because the backend declared it
/// unsupported, kept in the report so it is never mistaken for a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedRule {
    /// The rule, e.g. `"sub-sequence-positions"`.
    pub rule: &'static str,
    /// Which capability the backend declared missing.
    pub reason: String,
}

/// The outcome of a suite's `run_all`: every rule by name, passed, skipped
/// or failed, so one run shows every broken rule, not only the first.
///
/// Its `Display` lists the failures first (each as
/// ``<suite> conformance, rule `<rule>`: …``), then the skipped and the
/// passed rules; use it as the message of the test's assertion:
/// `assert!(report.is_success(), "{report}")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceReport {
    suite: &'static str,
    passed: Vec<&'static str>,
    skipped: Vec<SkippedRule>,
    failed: Vec<RuleFailure>,
    notes: Vec<String>,
}

impl ConformanceReport {
    pub(crate) fn new(suite: &'static str) -> Self {
        Self {
            suite,
            passed: Vec::new(),
            skipped: Vec::new(),
            failed: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The suite that ran, e.g. `"emitter"`.
    pub fn suite(&self) -> &'static str {
        self.suite
    }

    /// `true` when no rule failed (skipped rules are listed by
    /// [`skipped`](Self::skipped), not failures).
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }

    /// The rules that passed, in the order they ran.
    pub fn passed(&self) -> &[&'static str] {
        &self.passed
    }

    /// The rules not run because the backend declared them unsupported.
    pub fn skipped(&self) -> &[SkippedRule] {
        &self.skipped
    }

    /// The broken rules, each with what went wrong.
    pub fn failed(&self) -> &[RuleFailure] {
        &self.failed
    }

    /// The names of the broken rules, for a test that expects some.
    pub fn failed_rules(&self) -> Vec<&'static str> {
        self.failed.iter().map(|f| f.rule).collect()
    }

    /// The names of the skipped rules.
    pub fn skipped_rules(&self) -> Vec<&'static str> {
        self.skipped.iter().map(|s| s.rule).collect()
    }

    /// What the run could not check although no rule was skipped (e.g. an
    /// emitter suite without a delivered count).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Runs one rule and records its outcome; a panic inside the backend
    /// (e.g. a mock's assertion) fails the rule instead of the whole run.
    pub(crate) async fn run(
        &mut self,
        rule: &'static str,
        check: impl Future<Output = RuleResult>,
    ) {
        match AssertUnwindSafe(check).catch_unwind().await {
            Ok(Ok(())) => self.passed.push(rule),
            Ok(Err(failure)) => self.failed.push(failure),
            Err(payload) => self.failed.push(RuleFailure {
                suite: self.suite,
                rule,
                details: format!("panicked: {}", panic_message(payload.as_ref())),
            }),
        }
    }

    /// Runs `rule` if the backend supports it, or records it as skipped
    /// with `unsupported` as the reason.
    pub(crate) async fn run_if(
        &mut self,
        supported: bool,
        rule: &'static str,
        unsupported: &str,
        check: impl Future<Output = RuleResult>,
    ) {
        if supported {
            self.run(rule, check).await;
        } else {
            self.skipped.push(SkippedRule {
                rule,
                reason: unsupported.to_owned(),
            });
        }
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

impl Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conformance: {} passed, {} skipped, {} failed",
            self.suite,
            self.passed.len(),
            self.skipped.len(),
            self.failed.len()
        )?;
        for failure in &self.failed {
            write!(f, "\n  FAILED  {failure}")?;
        }
        for skipped in &self.skipped {
            write!(f, "\n  skipped `{}`: {}", skipped.rule, skipped.reason)?;
        }
        if !self.passed.is_empty() {
            let names: Vec<String> = self.passed.iter().map(|r| format!("`{r}`")).collect();
            write!(f, "\n  passed  {}", names.join(", "))?;
        }
        for note in &self.notes {
            write!(f, "\n  note    {note}")?;
        }
        Ok(())
    }
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| String::from("(no message)"))
}

/// One rule of one suite: builds the failures that name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub(crate) suite: &'static str,
    pub(crate) name: &'static str,
}

impl Rule {
    /// A failure of this rule.
    pub(crate) fn fail(self, details: impl Into<String>) -> RuleFailure {
        RuleFailure {
            suite: self.suite,
            rule: self.name,
            details: details.into(),
        }
    }

    /// The value of `result`, or a failure saying which `call` failed.
    pub(crate) fn call<T>(
        self,
        call: &str,
        result: kinesis_connectors_core::Result<T>,
    ) -> Result<T, RuleFailure> {
        result.map_err(|error| self.fail(format!("{call} failed: {error}")))
    }

    /// `Ok` if `actual == expected`, else a failure showing both.
    pub(crate) fn ensure_eq<T: PartialEq + Debug>(
        self,
        what: &str,
        actual: T,
        expected: T,
    ) -> RuleResult {
        if actual == expected {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: expected {expected:?}, got {actual:?}")))
        }
    }

    /// A sequence number the suite builds from `digits`.
    pub(crate) fn sequence(self, digits: &str) -> Result<SequenceNumber, RuleFailure> {
        self.call(
            &format!("SequenceNumber::parse({digits:?}) (suite setup)"),
            SequenceNumber::parse(digits),
        )
    }
}

/// A fresh number for names that must not collide with earlier runs
/// against a shared (persistent) backend, nor with concurrent runs.
pub(crate) fn unique_run_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Mix in the process id so parallel test binaries differ too.
    nanos
        .wrapping_add(count.wrapping_mul(1_000_003))
        .wrapping_add(u64::from(std::process::id()).wrapping_mul(1_000_000_007))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        suite: "test",
        name: "a-rule",
    };

    #[test]
    fn run_ids_differ() {
        assert_ne!(unique_run_id(), unique_run_id());
    }

    #[test]
    fn a_failure_names_its_suite_and_rule() {
        let failure = RULE.fail("it broke");
        assert_eq!(
            failure.to_string(),
            "test conformance, rule `a-rule`: it broke"
        );
        let err = RULE.ensure_eq("the value", 1, 2).unwrap_err();
        assert_eq!(err.details, "the value: expected 2, got 1");
    }

    #[tokio::test]
    async fn the_report_keeps_going_and_lists_every_outcome() {
        let mut report = ConformanceReport::new("test");
        report.run("first", async { Err(RULE.fail("no")) }).await;
        report.run("second", async { Ok(()) }).await;
        report
            .run("third", async { panic!("a mock's assertion") })
            .await;
        report
            .run_if(false, "fourth", "not supported", async { Ok(()) })
            .await;
        report.note("something was not counted");
        assert!(!report.is_success());
        assert_eq!(report.passed(), ["second"]);
        assert_eq!(report.failed_rules(), ["a-rule", "third"]);
        assert_eq!(report.skipped_rules(), ["fourth"]);
        let text = report.to_string();
        assert!(
            text.starts_with("test conformance: 1 passed, 1 skipped, 2 failed"),
            "{text}"
        );
        assert!(
            text.contains("rule `third`: panicked: a mock's assertion"),
            "{text}"
        );
        assert!(text.contains("skipped `fourth`: not supported"), "{text}");
        assert!(text.contains("note    something was not counted"), "{text}");
    }
}
