//! Fault-injecting TCP proxy on loopback: cut (FIN or RST), slice, delay, blackhole.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

#[derive(Default)]
struct Settings {
    slice: AtomicUsize,
    delay_ms: AtomicU64,
    reset: AtomicBool,
    blackhole: AtomicBool,
    schedule: Mutex<VecDeque<u64>>,
    connections: AtomicU64,
}

/// A running proxy; dropping it stops it and its connections.
pub struct Proxy {
    addr: SocketAddr,
    settings: Arc<Settings>,
    cut: broadcast::Sender<()>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.cut.send(());
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let settings = Arc::new(Settings::default());
        let (cut, _) = broadcast::channel(16);
        let (s, c) = (settings.clone(), cut.clone());
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::Relaxed);
                let limit = s
                    .schedule
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                tokio::spawn(pipe(down, upstream, s.clone(), c.subscribe(), limit));
            }
        });
        Ok(Proxy {
            addr,
            settings,
            cut,
            accept,
        })
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Forward in pieces of at most `n` bytes, each written separately.
    pub fn set_slice(&self, n: Option<usize>) {
        self.settings.slice.store(n.unwrap_or(0), Ordering::Relaxed);
    }
    /// Delays every forwarded chunk, both directions, by `d` (latency injection).
    pub fn set_delay(&self, d: std::time::Duration) {
        self.settings
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// Connections opened from now on end with a TCP RST instead of a FIN when cut.
    pub fn set_reset(&self, on: bool) {
        self.settings.reset.store(on, Ordering::Relaxed);
    }
    /// While on, nothing is forwarded in either direction but connections stay open.
    pub fn set_blackhole(&self, on: bool) {
        self.settings.blackhole.store(on, Ordering::Relaxed);
    }
    /// Successive new connections are cut after the next offset of server→client bytes.
    pub fn set_cut_schedule(&self, offsets: Vec<u64>) {
        *self
            .settings
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = offsets.into();
    }
    /// Closes every current connection abruptly.
    pub fn cut_all(&self) {
        let _ = self.cut.send(());
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.settings.connections.load(Ordering::Relaxed)
    }
}

async fn pipe(
    down: TcpStream,
    upstream: SocketAddr,
    s: Arc<Settings>,
    mut cut: broadcast::Receiver<()>,
    limit: Option<u64>,
) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    if s.reset.load(Ordering::Relaxed) {
        // Linger 0: closing sends RST, as a crashed peer or a middlebox does.
        let _ = socket2::SockRef::from(&down).set_linger(Some(std::time::Duration::ZERO));
    }
    let mut down = down;
    down.set_nodelay(true).ok();
    up.set_nodelay(true).ok();
    // Borrowed halves: dropping them sends no FIN, so with linger 0 the peer sees a bare RST.
    let (mut dr, mut dw) = down.split();
    let (mut ur, mut uw) = up.into_split();
    let s2 = s.clone();
    let upward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !forward(&s2, &mut uw, &buf[..n]).await {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            let mut done = false;
            if let Some(l) = limit {
                let left = l.saturating_sub(sent) as usize;
                if chunk.len() >= left {
                    chunk = &chunk[..left];
                    done = true;
                }
            }
            sent += chunk.len() as u64;
            if !forward(&s, &mut dw, chunk).await || done {
                return;
            }
        }
    };
    // Whichever side ends (or a cut) drops both sockets: an abrupt close for the peer.
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
        _ = cut.recv() => {}
    }
}

async fn forward<W: AsyncWriteExt + Unpin>(s: &Settings, w: &mut W, data: &[u8]) -> bool {
    if s.blackhole.load(Ordering::Relaxed) {
        return true;
    }
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let slice = s.slice.load(Ordering::Relaxed);
    let pieces = if slice == 0 { data.len().max(1) } else { slice };
    for piece in data.chunks(pieces) {
        if w.write_all(piece).await.is_err() {
            return false;
        }
        if slice != 0 {
            tokio::task::yield_now().await;
        }
    }
    true
}
