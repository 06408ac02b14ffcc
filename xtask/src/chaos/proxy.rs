//! A fault-injecting TCP proxy on 127.0.0.1, with std threads only.
//!
//! The consumer under test reaches one service through it; the xtask
//! switches it between three modes while events keep arriving:
//!
//! - [`Mode::Up`]: bytes flow both ways;
//! - [`Mode::Down`]: the service is gone: the listening socket is closed,
//!   so new connections are refused, and every open connection is cut;
//! - [`Mode::Stalled`]: the service hangs: connections are accepted (and
//!   opened upstream) but no byte moves either way until the mode changes;
//!   what live clients sent is then delivered, while connections their
//!   clients closed meanwhile are dropped unforwarded.
//!
//! One accept thread per proxy, two copy threads per connection; every
//! blocking call has a short timeout so that a mode change or [`Drop`]
//! takes effect within about 100 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward everything.
    Up,
    /// Refuse new connections and cut open ones.
    Down,
    /// Accept, but forward nothing.
    Stalled,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Up => 0,
            Mode::Down => 1,
            Mode::Stalled => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Mode::Down,
            2 => Mode::Stalled,
            _ => Mode::Up,
        }
    }
}

/// How long a blocked read or accept waits before it looks at the mode again.
const TICK: Duration = Duration::from_millis(50);
/// How long connecting to the real service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// State shared by the accept thread and the copy threads.
struct Shared {
    mode: AtomicU8,
    /// Bumped when the proxy goes down: connections of an older generation
    /// close themselves.
    generation: AtomicU64,
    /// Set when the proxy is dropped: every thread ends.
    stop: AtomicBool,
    /// Connections accepted so far (for the report).
    accepted: AtomicU64,
    /// Why the accept thread could not listen again, if it could not.
    error: Mutex<Option<String>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::SeqCst))
    }
}

/// A running proxy; dropping it stops it and cuts its connections.
pub(crate) struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = listen(0)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Up.to_u8()),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, port, upstream, &shared))
                .context("starting a proxy thread")?
        };
        Ok(Self {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// The port the consumer connects to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Switches the mode; going down cuts every open connection.
    pub(crate) fn set(&self, mode: Mode) {
        if mode == Mode::Down {
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Why the proxy could not listen again after an outage, if so.
    pub(crate) fn error(&self) -> Option<String> {
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // The accept thread wakes up within a tick; copy threads end on
            // their own once they see `stop`.
            let _ = accept.join();
        }
    }
}

fn listen(port: u16) -> Result<TcpListener> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn accept_loop(first: TcpListener, port: u16, upstream: SocketAddr, shared: &Arc<Shared>) {
    let mut listener = Some(first);
    // Rebinding may fail for a moment (the old socket closing); it is
    // retried every tick, and the reason kept for the report.
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.mode() == Mode::Down {
            // Closing the socket is what makes connecting fail at once
            // (connection refused), as with a stopped service.
            listener = None;
            thread::sleep(TICK);
            continue;
        }
        let Some(open) = &listener else {
            match listen(port) {
                Ok(l) => {
                    listener = Some(l);
                    if let Ok(mut e) = shared.error.lock() {
                        *e = None;
                    }
                }
                Err(e) => {
                    if let Ok(mut slot) = shared.error.lock() {
                        *slot = Some(format!("{e:#}"));
                    }
                    thread::sleep(TICK);
                }
            }
            continue;
        };
        match open.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                // Taken at accept: a cut right after it still reaches this
                // connection.
                let generation = shared.generation.load(Ordering::SeqCst);
                let shared = Arc::clone(shared);
                // A connection whose threads cannot start is dropped: the
                // client sees it closed, like any other cut.
                let _ = thread::Builder::new()
                    .name(format!("proxy-{port}-conn"))
                    .spawn(move || connect(client, upstream, &shared, generation));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK / 5),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Opens the upstream side of an accepted connection and copies both ways.
fn connect(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>, generation: u64) {
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
        return;
    };
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name("proxy-copy".into())
            .spawn(move || copy(server_read, client, &shared, generation, Way::Response))
    };
    if back.is_err() {
        return;
    }
    copy(client_read, server, shared, generation, Way::Request);
}

/// Which way a copy thread moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the client (the consumer) to the service.
    Request,
    /// From the service back to the client.
    Response,
}

/// The most request bytes held for one connection during a stall; beyond
/// it the client's writes block, as they would against a hung server.
const MAX_HELD: usize = 1024 * 1024;

/// Copies `from` → `to` while the mode allows; closes both sockets when the
/// connection's generation is cut or the proxy stops.
///
/// During a stall nothing is forwarded. Requests are read and held, so a
/// client that gives up (closes its end) is noticed and its connection
/// closed without its request ever reaching the service; what live clients
/// sent is delivered when the stall ends. Without that, every abandoned
/// request (one per timed-out read) would reach kinesis-local at once after
/// the stall and keep the slow emulator busy for many seconds: the
/// scenario would measure the emulator's backlog, not the consumer.
fn copy(mut from: TcpStream, mut to: TcpStream, shared: &Shared, generation: u64, way: Way) {
    let cut = |from: &TcpStream, to: &TcpStream| {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    };
    if from.set_read_timeout(Some(TICK)).is_err() {
        cut(&from, &to);
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst)
            || shared.generation.load(Ordering::SeqCst) != generation
        {
            cut(&from, &to);
            return;
        }
        let stalled = shared.mode() == Mode::Stalled;
        if !stalled && !held.is_empty() {
            if to.write_all(&held).is_err() {
                cut(&from, &to);
                return;
            }
            held.clear();
        }
        if stalled && (way == Way::Response || held.len() >= MAX_HELD) {
            // Not reading leaves the bytes in the kernel buffers, as a hung
            // server would.
            thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) if stalled => {
                // The client gave up while the service hung.
                cut(&from, &to);
                return;
            }
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) if stalled => held.extend_from_slice(&buf[..n]),
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    cut(&from, &to);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                cut(&from, &to);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port, for one connection at a time.
    fn echo() -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    fn round_trip(port: u16, timeout: Duration) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn forwards_refuses_and_stalls() -> Result<()> {
        let proxy = Proxy::start(echo()?)?;
        let port = proxy.port();
        assert_eq!(round_trip(port, Duration::from_secs(5))?, b"ping");

        // An open connection is cut when the proxy goes down …
        let mut open = TcpStream::connect(("127.0.0.1", port))?;
        open.set_read_timeout(Some(Duration::from_secs(5)))?;
        open.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf)?;
        proxy.set(Mode::Down);
        thread::sleep(TICK * 4);
        let after = open.read(&mut buf);
        assert!(matches!(after, Ok(0) | Err(_)), "{after:?}");
        // … and new ones are refused.
        let refused = TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "connected while down");

        proxy.set(Mode::Up);
        let mut back = Err(std::io::Error::other("never tried"));
        for _ in 0..40 {
            back = round_trip(port, Duration::from_secs(5));
            if back.is_ok() {
                break;
            }
            thread::sleep(TICK);
        }
        assert_eq!(back?, b"ping");

        // Stalled: accepted, but nothing comes back until it ends.
        proxy.set(Mode::Stalled);
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"ping")?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        assert!(s.read(&mut buf).is_err(), "an answer while stalled");
        proxy.set(Mode::Up);
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        assert!(proxy.accepted() >= 4);
        assert_eq!(proxy.error(), None);
        Ok(())
    }

    #[test]
    fn a_request_abandoned_during_a_stall_never_reaches_the_service() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let upstream = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        {
            let received = Arc::clone(&received);
            thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let received = Arc::clone(&received);
                    thread::spawn(move || {
                        let mut stream = stream;
                        let mut buf = [0u8; 64];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if let Ok(mut r) = received.lock() {
                                r.extend_from_slice(&buf[..n]);
                            }
                        }
                    });
                }
            });
        }
        let proxy = Proxy::start(upstream)?;
        proxy.set(Mode::Stalled);
        let mut gone = TcpStream::connect(("127.0.0.1", proxy.port()))?;
        gone.write_all(b"abandoned")?;
        let mut kept = TcpStream::connect(("127.0.0.1", proxy.port()))?;
        kept.write_all(b"kept")?;
        thread::sleep(TICK * 4);
        drop(gone);
        thread::sleep(TICK * 4);
        proxy.set(Mode::Up);
        for _ in 0..40 {
            thread::sleep(TICK);
            if received.lock().is_ok_and(|r| !r.is_empty()) {
                break;
            }
        }
        thread::sleep(TICK * 4);
        let got = received.lock().map(|r| r.clone()).unwrap_or_default();
        assert_eq!(got, b"kept");
        drop(kept);
        Ok(())
    }
}
