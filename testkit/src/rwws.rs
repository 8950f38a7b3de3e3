//! The server side of the rwws binary protocol (spec: docs/protocol/rwws-binary.md, §5.2),
//! served by the same backend at `/api/ws`, with scriptable misbehaviour.
//!
//! Choices where the spec says "(unknown)": the ping deadline starts at auth success and only
//! a Ping resets it; the version is checked before the key; any auth-phase failure is 3001;
//! a Settings packet is read up to its `ff` terminator and recorded; an unknown client packet
//! ends parsing of that message (recorded, connection kept).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::throttle::Throttled;

/// The key the backend accepts unless told otherwise: base64 of `tether-test-key`.
pub const DEFAULT_KEY: &str = "dGV0aGVyLXRlc3Qta2V5";

/// How the server opens a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    /// `6d 73` in a binary frame (the documented form).
    Binary,
    /// `"ms"` in a text frame.
    Text,
    /// Something else (`6d 78`).
    Wrong,
    /// Nothing at all.
    Silent,
}

/// rwws settings of the backend.
#[derive(Clone, Debug)]
pub struct RwwsConfig {
    /// Accepted keys, as raw bytes.
    pub keys: Vec<Vec<u8>>,
    /// Close 3003 when no Ping arrived for this long after auth (spec: 30 s).
    pub ping_timeout: Duration,
    /// Close 3001 when the auth message does not arrive within this.
    pub auth_timeout: Duration,
    /// The hello.
    pub hello: Hello,
    /// Answer a valid auth with nothing (to test the client's auth deadline).
    pub silent_auth: bool,
    /// Answer a valid auth with this message instead of the Pong, then wait for the client's
    /// close (to test how a client refuses a reply that is not a Pong).
    pub auth_reply: Option<Vec<u8>>,
    /// Send a text frame before the auth Pong (spec §2.1: after the hello, text frames carry
    /// nothing; a client skips it).
    pub text_before_auth_reply: bool,
}

impl Default for RwwsConfig {
    fn default() -> Self {
        RwwsConfig {
            keys: vec![b"tether-test-key".to_vec()],
            ping_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            hello: Hello::Binary,
            silent_auth: false,
            auth_reply: None,
            text_before_auth_reply: false,
        }
    }
}

/// Something to send to every authenticated connection.
#[derive(Clone, Debug)]
pub enum RwwsFault {
    /// An unknown packet id (`7f`) followed by two bytes.
    UnknownPacket,
    /// A Pong cut short (`00 01 02`).
    TruncatedPong,
    /// Two Pongs in one message.
    DoublePong,
    /// A Pong whose time is little-endian.
    LittleEndianPong,
    /// A text frame.
    TextFrame,
    /// One message of this many bytes (Pongs back to back), to hit the client's size cap.
    Oversize(usize),
    /// Stop answering pings (the client's pong deadline must fire).
    Mute,
}

/// What the rwws side has seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RwwsStats {
    /// Connections currently authenticated.
    pub connections: usize,
    /// Successful authentications so far.
    pub authenticated: u64,
    /// Pings received.
    pub pings: u64,
    /// Longest gap between an authenticated client's pings (or auth and its first ping), ms.
    pub max_ping_gap_ms: u64,
    /// Settings packets received, hex.
    pub settings: Vec<String>,
    /// Client bytes the server could not parse, hex.
    pub unknown: Vec<String>,
    /// Close codes the server sent.
    pub closes_sent: Vec<u16>,
    /// Close codes clients sent (during the handshake too).
    pub closes_received: Vec<u16>,
}

enum Out {
    Close(u16, String),
    Fault(RwwsFault),
    Cut,
}

/// Shared rwws state of one backend.
pub struct RwwsState {
    cfg: RwwsConfig,
    revoked: HashSet<Vec<u8>>,
    stats: RwwsStats,
    conns: HashMap<u64, (Vec<u8>, mpsc::UnboundedSender<Out>)>,
    next_conn: u64,
}

impl RwwsState {
    /// State for this configuration.
    pub fn new(cfg: RwwsConfig) -> RwwsState {
        RwwsState {
            cfg,
            revoked: HashSet::new(),
            stats: RwwsStats::default(),
            conns: HashMap::new(),
            next_conn: 0,
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> RwwsStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len();
        s
    }

    /// Closes every authenticated connection with `code`.
    pub fn close_all(&mut self, code: u16, reason: &str) {
        for (_, tx) in self.conns.values() {
            let _ = tx.send(Out::Close(code, reason.to_owned()));
        }
    }

    /// Drops every connection without a close frame.
    pub fn cut_all(&mut self) {
        for (_, tx) in self.conns.values() {
            let _ = tx.send(Out::Cut);
        }
    }

    /// Revokes `key`: live sessions using it end with 3004, new ones get 3001.
    pub fn revoke(&mut self, key: &[u8]) {
        self.revoked.insert(key.to_vec());
        for (k, tx) in self.conns.values() {
            if k == key {
                let _ = tx.send(Out::Close(3004, "access key revoked".into()));
            }
        }
    }

    /// Sends `fault` to every authenticated connection.
    pub fn inject(&mut self, fault: RwwsFault) {
        for (_, tx) in self.conns.values() {
            let _ = tx.send(Out::Fault(fault.clone()));
        }
    }
}

fn lock(s: &Mutex<RwwsState>) -> std::sync::MutexGuard<'_, RwwsState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn pong(le: bool) -> Vec<u8> {
    let t = now_ms();
    let mut m = vec![0x00];
    m.extend_from_slice(&if le { t.to_le_bytes() } else { t.to_be_bytes() });
    m
}

/// Bytes as lowercase hex, the form the stats record packets in.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves one `/api/ws` connection, reading at the backend's read rate.
pub async fn serve(tcp: Throttled<TcpStream>, rwws: Rwws) {
    let state = rwws.0;
    let mut wsc = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    wsc.max_message_size = Some(64 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(wsc)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let cfg = lock(&state).cfg.clone();
    let close = |code: u16, reason: &str| {
        lock(&state).stats.closes_sent.push(code);
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        }))
    };
    let hello = match cfg.hello {
        Hello::Binary => Some(Message::binary(b"ms".to_vec())),
        Hello::Text => Some(Message::text("ms")),
        Hello::Wrong => Some(Message::binary(b"mx".to_vec())),
        Hello::Silent => None,
    };
    if let Some(h) = hello {
        if sink.send(h).await.is_err() {
            return;
        }
    }
    // Auth phase: no commands are handled (spec §2.4).
    let auth = tokio::time::timeout(cfg.auth_timeout, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => return Some(b),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    lock(&state).stats.closes_received.push(code);
                    return None;
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let auth = match auth {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(_) => {
            let _ = sink.send(close(3001, "authentication timed out")).await;
            return;
        }
    };
    if auth.len() < 4 || auth[..2] != [0xb6, 0xc4] {
        let _ = sink.send(close(3001, "malformed authentication")).await;
        return;
    }
    if auth[2] != 0 {
        let _ = sink.send(close(3002, "incompatible client version")).await;
        return;
    }
    let key = auth[4..].to_vec();
    let accepted = {
        let g = lock(&state);
        // The length byte is signed, as a JVM server reads it (spec §2.2): 128 and up are
        // negative, so such a key is refused whatever follows.
        let len = i8::from_be_bytes([auth[3]]);
        usize::try_from(len).is_ok_and(|n| n == key.len())
            && g.cfg.keys.contains(&key)
            && !g.revoked.contains(&key)
    };
    if !accepted {
        let _ = sink.send(close(3001, "unauthorized")).await;
        return;
    }
    if let Some(reply) = &cfg.auth_reply {
        if sink.send(Message::binary(reply.clone())).await.is_err() {
            return;
        }
    }
    if cfg.silent_auth || cfg.auth_reply.is_some() {
        // Hold the connection open and say nothing more until the client gives up.
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Close(frame) = m {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                lock(&state).stats.closes_received.push(code);
                break;
            }
        }
        return;
    }
    // Registered before the auth Pong goes out: a client that saw that Pong may inject a fault
    // at once, and it must reach this connection (queued behind the Pong in `rx`).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut g = lock(&state);
        g.stats.authenticated += 1;
        g.next_conn += 1;
        let id = g.next_conn;
        g.conns.insert(id, (key, tx));
        id
    };
    if cfg.text_before_auth_reply && sink.send(Message::text("welcome")).await.is_err() {
        lock(&state).conns.remove(&id);
        return;
    }
    if sink.send(Message::binary(pong(false))).await.is_err() {
        lock(&state).conns.remove(&id);
        return;
    }
    let mut last_ping = Instant::now();
    let mut muted = false;
    loop {
        let deadline = tokio::time::Instant::from_std(last_ping + cfg.ping_timeout);
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Close(code, reason)) => {
                    let _ = sink.send(close(code, &reason)).await;
                    break;
                }
                Some(Out::Fault(f)) => {
                    let m = match f {
                        RwwsFault::UnknownPacket => Message::binary(vec![0x7f, 1, 2]),
                        RwwsFault::TruncatedPong => Message::binary(vec![0x00, 1, 2]),
                        RwwsFault::DoublePong => Message::binary([pong(false), pong(false)].concat()),
                        RwwsFault::LittleEndianPong => Message::binary(pong(true)),
                        RwwsFault::TextFrame => Message::text("not a packet"),
                        RwwsFault::Oversize(n) => Message::binary(pong(false).repeat(n / 9 + 1)),
                        RwwsFault::Mute => {
                            muted = true;
                            continue;
                        }
                    };
                    if sink.send(m).await.is_err() { break }
                }
                Some(Out::Cut) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let mut replies = Vec::new();
                    let mut at = 0;
                    while at < b.len() {
                        match b[at] {
                            0x00 => {
                                let mut g = lock(&state);
                                g.stats.pings += 1;
                                let gap = last_ping.elapsed().as_millis() as u64;
                                g.stats.max_ping_gap_ms = g.stats.max_ping_gap_ms.max(gap);
                                last_ping = Instant::now();
                                if !muted {
                                    replies.push(pong(false));
                                }
                                at += 1;
                            }
                            0x01 => {
                                let end = b[at..].iter().position(|&x| x == 0xff).map_or(b.len(), |p| at + p + 1);
                                lock(&state).stats.settings.push(hex(&b[at..end]));
                                at = end;
                            }
                            _ => {
                                lock(&state).stats.unknown.push(hex(&b[at..]));
                                break;
                            }
                        }
                    }
                    for r in replies {
                        if sink.send(Message::binary(r)).await.is_err() { break }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    lock(&state).stats.closes_received.push(code);
                    break;
                }
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                let _ = sink.send(close(3003, "no ping received in time")).await;
                break;
            }
        }
    }
    lock(&state).conns.remove(&id);
}

/// A handle on a backend's rwws side.
#[derive(Clone)]
pub struct Rwws(pub(crate) Arc<Mutex<RwwsState>>);

impl Rwws {
    /// A snapshot of the statistics.
    pub fn stats(&self) -> RwwsStats {
        lock(&self.0).stats()
    }
    /// Closes every authenticated connection with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) {
        lock(&self.0).close_all(code, reason)
    }
    /// Drops every authenticated connection without a close frame.
    pub fn cut_all(&self) {
        lock(&self.0).cut_all()
    }
    /// Revokes a key (raw bytes).
    pub fn revoke(&self, key: &[u8]) {
        lock(&self.0).revoke(key)
    }
    /// Sends a fault to every authenticated connection.
    pub fn inject(&self, fault: RwwsFault) {
        lock(&self.0).inject(fault)
    }
    /// Polls the stats every 10 ms until `f` holds or `timeout` passes.
    pub async fn wait_for(&self, f: impl Fn(&RwwsStats) -> bool, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(&self.stats()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f(&self.stats())
    }
}

/// The HTTP control endpoints under `/_testkit/rwws/`; `None` if `path` is not one of them.
pub fn control(
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    rwws: &Rwws,
) -> Option<(u16, String)> {
    let q = |k: &str| query.get(k).cloned().unwrap_or_default();
    let ok = r#"{"ok":true}"#.to_owned();
    Some(match (method, path) {
        ("GET", "/_testkit/rwws/stats") => (
            200,
            serde_json::to_string(&rwws.stats()).unwrap_or_default(),
        ),
        ("POST", "/_testkit/rwws/close") => {
            rwws.close_all(q("code").parse().unwrap_or(3005), &q("reason"));
            (200, ok)
        }
        ("POST", "/_testkit/rwws/cut") => {
            rwws.cut_all();
            (200, ok)
        }
        ("POST", "/_testkit/rwws/revoke") => {
            use base64::Engine;
            let key = if q("key").is_empty() {
                DEFAULT_KEY.to_owned()
            } else {
                q("key")
            };
            match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
                Ok(k) => {
                    rwws.revoke(&k);
                    (200, ok)
                }
                Err(_) => (400, r#"{"error":"key is not base64"}"#.to_owned()),
            }
        }
        ("POST", "/_testkit/rwws/fault") => {
            let f = match q("kind").as_str() {
                "unknown_packet" => RwwsFault::UnknownPacket,
                "truncated_pong" => RwwsFault::TruncatedPong,
                "double_pong" => RwwsFault::DoublePong,
                "little_endian_pong" => RwwsFault::LittleEndianPong,
                "text_frame" => RwwsFault::TextFrame,
                "oversize" => RwwsFault::Oversize(q("n").parse().unwrap_or(128 * 1024)),
                "mute" => RwwsFault::Mute,
                _ => return Some((400, r#"{"error":"unknown fault kind"}"#.to_owned())),
            };
            rwws.inject(f);
            (200, ok)
        }
        _ => return None,
    })
}
