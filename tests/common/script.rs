//! A scripted server for misbehaviour the testkit backend cannot produce: wrong HTTP answers,
//! slowloris, silence, and hand-built websocket frames written byte for byte after a real
//! upgrade. It counts connections so tests can check retries and that the client let go.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with every connection.
#[derive(Clone, Debug)]
pub enum Script {
    /// Answers the HTTP request (upgrade or auth POST) with this status and closes.
    Http(u16),
    /// Answers `101` but dribbles the head one byte every 200 ms and never finishes it.
    Slowloris,
    /// Accepts the TCP connection and never writes a byte.
    Silent,
    /// Writes bytes that are not HTTP at all, then closes.
    NotHttp,
    /// Answers the HTTP request with these bytes as they are (head and body), then closes.
    Answer(Vec<u8>),
    /// Completes the websocket upgrade, then runs the steps and keeps the socket open.
    Upgrade(Vec<Step>),
}

/// One step after the upgrade.
#[derive(Clone, Debug)]
pub enum Step {
    /// Raw bytes onto the socket (build frames with [`frame`]).
    Raw(Vec<u8>),
    /// Wait this long.
    Sleep(Duration),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// A running scripted server; dropping it stops accepting.
pub struct ScriptServer {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements the open-connection count however the handler ends.
struct OpenGuard(Arc<AtomicU64>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ScriptServer {
    /// Listens on 127.0.0.1:0 and plays `script` on every connection.
    pub async fn start(script: Script) -> ScriptServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard(o.clone());
                let script = script.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let _ = play(sock, script).await;
                });
            }
        });
        ScriptServer {
            addr,
            accepted,
            open,
            task,
        }
    }

    /// `http://` base URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until no connection is open (the client closed its side); false on timeout.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        while self.open.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Reads until the end of the HTTP head (bounded); returns the head.
async fn read_head(sock: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Holds the socket until the peer closes it, discarding what it sends.
async fn hold(sock: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = sock.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn play(mut sock: TcpStream, script: Script) -> std::io::Result<()> {
    match script {
        Script::Silent => hold(&mut sock).await,
        Script::NotHttp => {
            read_head(&mut sock).await?;
            sock.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await?;
        }
        Script::Answer(bytes) => {
            read_head(&mut sock).await?;
            sock.write_all(&bytes).await?;
            sock.shutdown().await?;
            hold(&mut sock).await;
        }
        Script::Http(code) => {
            read_head(&mut sock).await?;
            let resp = format!(
                "HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(resp.as_bytes()).await?;
            sock.shutdown().await?;
            hold(&mut sock).await;
        }
        Script::Slowloris => {
            read_head(&mut sock).await?;
            for b in b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                .iter()
                .cycle()
            {
                sock.write_all(&[*b]).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Script::Upgrade(steps) => {
            let head = read_head(&mut sock).await?;
            let key = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            sock.write_all(resp.as_bytes()).await?;
            for step in steps {
                match step {
                    Step::Raw(b) => sock.write_all(&b).await?,
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::Drop => return Ok(()),
                }
            }
            hold(&mut sock).await;
        }
    }
    Ok(())
}

/// WebSocket opcodes (RFC 6455 §5.2).
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

/// One unmasked server frame with FIN set.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(0x80 | opcode, payload, None)
}

/// A frame with an explicit first byte (FIN/RSV/opcode) and an optional mask (servers must
/// never mask, RFC 6455 §5.1).
pub fn frame_with(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A close frame with this code and reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    frame(CLOSE, &p)
}

/// Raw deflate of `data` ending in a sync flush, as gomuks compresses one batch (§5).
pub fn deflate_sync(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    out
}
