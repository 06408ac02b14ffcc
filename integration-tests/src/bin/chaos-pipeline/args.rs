//! `--flag value` pairs, checked against the flags a command knows (the
//! xtask is the only caller; a typo there must fail, not be ignored).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The parsed flags of one command.
#[derive(Debug)]
pub(crate) struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `--name value` pairs; every name must be in `known`.
    pub(crate) fn parse(argv: &[String], known: &[&str]) -> Result<Self> {
        let mut values = HashMap::new();
        let mut rest = argv.iter();
        while let Some(flag) = rest.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("expected a --flag, got {flag:?}");
            };
            if !known.contains(&name) {
                bail!("unknown flag --{name}; known: --{}", known.join(", --"));
            }
            let value = rest
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            values.insert(name.to_owned(), value.clone());
        }
        Ok(Self { values })
    }

    /// A flag that must be given.
    pub(crate) fn string(&self, name: &str) -> Result<String> {
        self.values
            .get(name)
            .cloned()
            .with_context(|| format!("--{name} is required"))
    }

    /// A flag that may be absent.
    pub(crate) fn optional(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// A number, `default` when the flag is absent.
    pub(crate) fn number(&self, name: &str, default: u64) -> Result<u64> {
        match self.values.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .with_context(|| format!("--{name} takes a whole number, got {text:?}")),
        }
    }

    /// Seconds (fractions allowed), `None` when the flag is absent.
    pub(crate) fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        self.values
            .get(name)
            .map(|text| {
                text.parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .with_context(|| format!("--{name} takes seconds, got {text:?}"))
            })
            .transpose()
    }
}
