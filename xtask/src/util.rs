//! Small helpers shared by the xtask commands: paths, running commands,
//! ports, a tiny HTTP client and process bookkeeping through `/proc`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of the `xtask` folder).
pub(crate) fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// Where the local stack keeps its installs, state, data and logs.
pub(crate) fn stack_dir() -> PathBuf {
    target_dir().join("stack")
}

/// Where service and install logs go.
pub(crate) fn logs_dir() -> PathBuf {
    stack_dir().join("logs")
}

/// Formats a duration as seconds with one decimal, e.g. `12.3 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints a progress line prefixed with `xtask:` and flushes stdout.
pub(crate) fn say(msg: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    // Progress output is best effort: a closed stdout must not stop the work.
    let _ = writeln!(out, "xtask: {}", msg.as_ref());
    let _ = out.flush();
}

/// A printable form of a command line, for messages.
pub(crate) fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        s.push(' ');
        if arg.is_empty() || arg.contains([' ', '\'', '"', '*', '[', ']']) {
            s.push('\'');
            s.push_str(&arg.replace('\'', r"'\''"));
            s.push('\'');
        } else {
            s.push_str(&arg);
        }
    }
    s
}

/// Runs a command with inherited stdout/stderr and no stdin; returns its status.
pub(crate) fn run_status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not run `{}`", show(cmd)))
}

/// Runs a command with its output appended to `log`; fails with the log's tail.
pub(crate) fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("could not run `{}`", show(cmd)))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}); last lines of {}:\n{}",
            show(cmd),
            log.display(),
            tail(log, 25)
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails with its stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a text file (empty when it cannot be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Finds an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective user id of this process (read from `/proc/self/status`).
pub(crate) fn euid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid line in /proc/self/status")?;
    // Uid: real effective saved fs
    let effective = line
        .split_whitespace()
        .nth(2)
        .context("malformed Uid line in /proc/self/status")?;
    effective.parse().context("parsing the effective uid")
}

/// The uid and gid of a local user, from `/etc/passwd`.
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A port on 127.0.0.1 that is free right now (the OS picks it).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A parsed `http://host:port/path` URL (no TLS support: the stack speaks plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// Host name or address.
    pub(crate) host: String,
    /// TCP port (80 when the URL has none).
    pub(crate) port: u16,
    /// Path prefix without a trailing slash (may be empty).
    pub(crate) path: String,
}

impl HttpUrl {
    /// Parses a plain `http://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("only plain http:// URLs are supported here, got `{url}`");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .with_context(|| format!("bad port in `{url}`"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            bail!("no host in `{url}`");
        }
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The URL without the path, e.g. `http://127.0.0.1:4566`.
    pub(crate) fn base(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// Sends one HTTP/1.0 request and returns the status code and body.
pub(crate) fn http(
    url: &HttpUrl,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    use std::net::ToSocketAddrs;
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", url.host))?
        .next()
        .with_context(|| format!("no address for {}", url.host))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))
        .with_context(|| format!("connecting to {}", url.base()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {}{path} HTTP/1.0\r\nHost: {}:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
        url.path,
        url.host,
        url.port,
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {}", url.base()))?;
    parse_http_response(&raw)
}

/// Splits a raw HTTP/1.x response into status code and (de-chunked) body.
fn parse_http_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP response: `{status_line}`"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

/// Decodes a `Transfer-Encoding: chunked` body (best effort).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 200 ms until it returns `Ok(true)` or `timeout` passes.
///
/// `alive` is checked too: when the process died, waiting stops with an error.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
    mut check: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if !alive() {
            bail!("{what} exited before it answered");
        }
        if start.elapsed() > timeout {
            bail!("{what} did not answer within {}", secs(timeout));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Start time of a process (clock ticks since boot; field 22 of `/proc/PID/stat`),
/// or `None` when it does not exist or is a zombie.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); field 22 is at index 19.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Parent pid of a process, from `/proc/PID/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` still runs.
pub(crate) fn is_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// All live descendants of `pid`, with their start times.
pub(crate) fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in entries.flatten() {
        if let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            && let Some(pp) = parent_pid(p)
        {
            parents.push((p, pp));
        }
    }
    let mut found: Vec<u32> = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        for &(p, pp) in &parents {
            if pp == current && !found.contains(&p) {
                found.push(p);
            }
        }
        i += 1;
    }
    found
        .into_iter()
        .skip(1)
        .filter_map(|p| process_start_time(p).map(|t| (p, t)))
        .collect()
}

/// Sends `signal` (e.g. `TERM`) to a process group (`group == true`) or a process.
pub(crate) fn signal(pid: u32, signal: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    // Failures (the process is already gone) are expected and harmless.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the process `pid` (started with `start_time`), its process group and
/// every descendant: SIGTERM, up to `grace` to exit, then SIGKILL.
///
/// Returns `true` when everything is gone.
pub(crate) fn terminate(pid: u32, start_time: u64, grace: Duration) -> bool {
    if !is_alive(pid, start_time) {
        return true;
    }
    let children = descendants(pid);
    signal(pid, "TERM", true);
    for &(child, _) in &children {
        signal(child, "TERM", false);
    }
    let all_gone = |children: &[(u32, u64)]| {
        !is_alive(pid, start_time) && children.iter().all(|&(c, t)| !is_alive(c, t))
    };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if all_gone(&children) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    signal(pid, "KILL", true);
    for &(child, t) in &children {
        if is_alive(child, t) {
            signal(child, "KILL", false);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if all_gone(&children) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// 64-bit FNV-1a: a stable hash for naming per-workspace folders.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() -> Result<()> {
        let u = HttpUrl::parse("http://127.0.0.1:4566")?;
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 4566);
        assert_eq!(u.path, "");
        assert_eq!(u.base(), "http://127.0.0.1:4566");
        let u = HttpUrl::parse("http://localhost/prefix/")?;
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/prefix")
        );
        assert!(HttpUrl::parse("https://x:1").is_err());
        assert!(HttpUrl::parse("http://:1").is_err());
        Ok(())
    }

    #[test]
    fn parses_plain_and_chunked_responses() -> Result<()> {
        let (code, body) = parse_http_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n{\"x\":1}")?;
        assert_eq!((code, body.as_str()), (200, "{\"x\":1}"));
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (code, body) = parse_http_response(raw)?;
        assert_eq!((code, body.as_str()), (404, "abcde"));
        assert!(parse_http_response(b"garbage").is_err());
        Ok(())
    }

    #[test]
    fn sees_itself_alive() {
        let me = std::process::id();
        let started = process_start_time(me);
        assert!(started.is_some());
        assert!(started.is_some_and(|t| is_alive(me, t)));
        assert!(started.is_some_and(|t| !is_alive(me, t + 1)));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
