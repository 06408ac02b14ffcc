//! The processes of a scenario, `chaos-pipeline drive` and one or more
//! `chaos-pipeline consume`: spawned with piped stdin/stdout, their JSON
//! lines collected by a thread, their stderr in a log file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

/// A child process and the JSON lines it printed, with when they arrived.
pub(crate) struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<(Instant, Value)>>>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (stdin and stdout piped, stderr appended to `log`).
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let err = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = Arc::clone(&lines);
            let log = log.to_path_buf();
            thread::spawn(move || collect(stdout, &lines, &log));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            log: log.to_path_buf(),
        })
    }

    /// Its name in messages: `driver`, `consumer`, `worker-2`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The process id (for messages).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends one line on its stdin.
    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the {}", self.name))
    }

    /// The last line that has `key`, and when it arrived.
    pub(crate) fn last_with(&self, key: &str) -> Option<(Instant, Value)> {
        let lines = self.lines.lock().ok()?;
        lines
            .iter()
            .rev()
            .find(|(_, v)| v.get(key).is_some())
            .cloned()
    }

    /// Every line that has `key`, and when each arrived.
    pub(crate) fn lines_with(&self, key: &str) -> Vec<(Instant, Value)> {
        self.lines.lock().map_or_else(
            |_| Vec::new(),
            |lines| {
                lines
                    .iter()
                    .filter(|(_, v)| v.get(key).is_some())
                    .cloned()
                    .collect()
            },
        )
    }

    /// The first line where `key` is `value`, and when it arrived.
    pub(crate) fn first_where(&self, key: &str, value: &str) -> Option<Instant> {
        let lines = self.lines.lock().ok()?;
        lines
            .iter()
            .find(|(_, v)| v.get(key).and_then(Value::as_str) == Some(value))
            .map(|(at, _)| *at)
    }

    /// Fails with the process's own error line (or its log's tail) when it
    /// has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if self.alive() {
            return Ok(());
        }
        let said = self
            .last_with("error")
            .and_then(|(_, v)| v["error"].as_str().map(str::to_owned));
        bail!(
            "the {} exited: {}; log {}:\n{}",
            self.name,
            said.unwrap_or_else(|| "no error line".to_owned()),
            self.log.display(),
            crate::util::tail(&self.log, 15)
        )
    }

    /// Waits up to `timeout` for `check` to hold, looking every 100 ms; the
    /// instant it held, or `None`. Stops early when the process exits.
    pub(crate) fn wait_for(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> bool,
    ) -> Result<Option<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self) {
                return Ok(Some(Instant::now()));
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// SIGKILL, then reap it.
    pub(crate) fn kill(&mut self) {
        // Fails only when it already exited, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin (the processes' signal to stop gracefully) and waits up
    /// to `grace` for the exit; kills it after that. True when it exited by
    /// itself with success.
    pub(crate) fn stop(&mut self, grace: Duration) -> bool {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => thread::sleep(POLL),
                Err(_) => break,
            }
        }
        self.kill();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.kill();
        }
    }
}

/// Reads JSON lines from `stdout` until it closes. Every line is also
/// copied into the log with the seconds since the process started, so a
/// failed run can be read back in time order.
fn collect(stdout: impl std::io::Read, lines: &Mutex<Vec<(Instant, Value)>>, log: &Path) {
    let started = Instant::now();
    let mut file = File::options().append(true).open(log).ok();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = &mut file {
            // The copy is for reading afterwards; losing it loses nothing else.
            let _ = writeln!(
                file,
                "(stdout +{:.1} s) {line}",
                started.elapsed().as_secs_f64()
            );
        }
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && let Ok(mut lines) = lines.lock()
        {
            lines.push((Instant::now(), value));
        }
    }
}
