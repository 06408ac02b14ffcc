//! A TCP proxy on 127.0.0.1 in front of one service of the stack, for tests
//! that cut connections (no emulator loses state) and count the calls of
//! one operation on the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

/// Forwards every connection to `upstream`; [`cut`](Self::cut) resets the
/// open ones, and [`calls`](Self::calls) counts requests whose bytes carry
/// the marker given at start (e.g. `Kinesis_20131202.SubscribeToShard`, the
/// `X-Amz-Target` of an operation: the SDK speaks plain HTTP/1.1 to an
/// `http://` endpoint, so the proxy sees the headers).
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    calls: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr, marker: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let marker = marker.as_bytes().to_vec();
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            let calls = Arc::clone(&calls);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let calls = Arc::clone(&calls);
                    let marker = marker.clone();
                    connections
                        .lock()
                        .await
                        .spawn(forward(client, upstream, marker, calls));
                }
            }
        });
        Ok(Self {
            addr,
            connections,
            calls,
            accept,
        })
    }

    /// The URL clients use instead of the service's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every open connection (as a server that went away would);
    /// new connections are forwarded again.
    pub async fn cut(&self) {
        self.connections.lock().await.abort_all();
    }

    /// How many requests carried the marker so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies both ways until either side closes, counting the marker in what
/// the client sends.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    marker: Vec<u8>,
    calls: Arc<AtomicU64>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        let mut buffer = vec![0u8; 64 * 1024];
        // The end of the previous read, so a marker split across two reads
        // is still seen once.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut seen = std::mem::take(&mut carry);
            let old = seen.len();
            seen.extend_from_slice(&buffer[..n]);
            let found = seen
                .windows(marker.len())
                .enumerate()
                .filter(|(at, window)| *window == marker.as_slice() && at + marker.len() > old)
                .count();
            calls.fetch_add(found as u64, Ordering::Relaxed);
            let keep = marker.len().saturating_sub(1).min(seen.len());
            carry = seen[seen.len() - keep..].to_vec();
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let responses = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, responses);
}
