//! Reference gomuks backend (server side of docs/protocol/gomuks-rpc.md) for tests.
//!
//! Faithful where the client can observe it: cookie auth and 401s, the start-up sequence,
//! the process-wide event buffer and the resume rule (§7.2), pings as acks, raw-deflate
//! compression with sync flush and batching (§5), close codes (§9). Faults are injectable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::Serialize;
use std::sync::atomic::AtomicU64;

use crate::buffer::EventBuffer;
use crate::throttle::{ReadRate, Throttled};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Backend settings.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Basic-auth username.
    pub username: String,
    /// Basic-auth password.
    pub password: String,
    /// Desktop key (Basic user `desktop-key`).
    pub desktop_key: Option<String>,
    /// HMAC key for tokens.
    pub token_key: Vec<u8>,
    /// Accept everything without auth.
    pub disable_auth: bool,
    /// Buffered events kept for resume (§7.1, default 512).
    pub event_buffer_size: usize,
    /// Close 4002 after this long without a client text message (§8).
    pub ping_timeout: Duration,
    /// Whether the account is logged in and verified (initial sync on connect, §6.1). Logged
    /// out, a sample of the commands that need the account closes the connection with 1011,
    /// as real gomuks' panicking handler does.
    pub logged_in: bool,
    /// Where to listen (loopback only).
    pub listen: SocketAddr,
    /// Seed of the event generator.
    pub seed: u64,
    /// Size range of generated events' data, bytes.
    pub event_size: (usize, usize),
    /// Cut every connection (TCP close, no close frame) once it has carried this many live
    /// events, so reconnect and resume happen on a schedule.
    pub cut_after_events: Option<usize>,
    /// Cut every connection once this many websocket payload bytes were sent on it.
    pub cut_after_bytes: Option<usize>,
    /// Cut every connection after this many of its start-up messages (`run_id` first), before
    /// `init_complete`: a backend that fails each session as it starts it.
    pub cut_during_startup: Option<usize>,
    /// The rwws side, served at `/api/ws`.
    pub rwws: crate::rwws::RwwsConfig,
    /// Close a connection with 4001 "Event queue full" when more events than this wait to be
    /// written to it (spec §10: 512 in gomuks); `None` never closes.
    pub conn_queue_limit: Option<usize>,
    /// Stands in for a reverse proxy with its own header auth in front of gomuks: every
    /// `/_gomuks/*` request without this header (lowercase name, exact value) gets 403.
    pub required_header: Option<(String, String)>,
    /// How long issued tokens stay valid (gomuks: 7 days, spec §1.2). The token's `expiry`
    /// is in whole seconds, so a token lives between this minus one second and this.
    pub token_lifetime: Duration,
    /// The listening socket's receive buffer (`SO_RCVBUF`, which connections inherit), so that
    /// what a slow reader (`Backend::set_read_rate`) has not read waits in the client's send
    /// buffer, as behind a slow uplink, instead of in this server's; `None`: the system's.
    pub recv_buffer: Option<u32>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            username: "tether".into(),
            password: "tether-password".into(),
            desktop_key: None,
            token_key: rand::random::<[u8; 32]>().to_vec(),
            disable_auth: false,
            event_buffer_size: 512,
            ping_timeout: Duration::from_secs(60),
            logged_in: true,
            listen: "127.0.0.1:0".parse().expect("literal address"),
            seed: 1,
            event_size: (300, 2000),
            cut_after_events: None,
            cut_after_bytes: None,
            cut_during_startup: None,
            rwws: crate::rwws::RwwsConfig::default(),
            conn_queue_limit: Some(512),
            required_header: None,
            token_lifetime: Duration::from_secs(7 * 86400),
            recv_buffer: None,
        }
    }
}

/// Server misbehaviour to inject into every open connection.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Garbage where deflate data belongs.
    InvalidDeflate,
    /// A line that is not JSON.
    InvalidJson,
    /// A line with invalid UTF-8.
    InvalidUtf8,
    /// An envelope without `command`.
    MissingFields,
    /// Text frame in compressed mode, binary in uncompressed mode.
    WrongFrameType,
    /// One event whose data is this many bytes.
    Oversize(usize),
    /// A small compressed message inflating to this many bytes (uncompressed: like Oversize).
    Bomb(usize),
    /// An event with a command nobody knows.
    UnknownCommandEvent,
    /// A `response` to an id nobody asked for.
    ResponseUnknownId,
}

/// What the backend has seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Current run id.
    pub run_id: String,
    /// Newest event id issued (0 if none), from the event buffer.
    pub newest_id: i64,
    /// Ack entry per listener, from the event buffer (GC drops entries, §7.4).
    pub acks: HashMap<u64, i64>,
    /// Most recent non-zero ack received.
    pub last_ack: i64,
    /// Open websocket connections.
    pub connections: usize,
    /// Websocket connections ever accepted.
    pub total_connections: u64,
    /// Close code of the last client close frame.
    pub last_client_close_code: Option<u16>,
    /// Connections that resumed.
    pub resumes: u64,
    /// Connections that started fresh.
    pub fresh_starts: u64,
    /// `cancel` requests received, whether or not their request was still running.
    pub cancels: u64,
    /// `POST /_gomuks/auth` requests answered.
    pub auth_requests: u64,
    /// Of those, renewals: a valid cookie answered with a fresh token (200).
    pub token_renewals: u64,
    /// Websocket upgrades still to refuse with 503 (`reject_upgrades`).
    pub reject_upgrades: u64,
    /// Websocket data messages written, on every connection.
    pub messages_sent: u64,
    /// Bytes of those messages before compression (the JSON lines).
    pub payload_bytes_sent: u64,
    /// Bytes of those messages as framed payloads (after compression, if on).
    pub frame_payload_bytes_sent: u64,
    /// The peer address of every TCP connection accepted (HTTP and websocket alike), in order:
    /// the proxy tests tell a proxied connection by its source address.
    pub tcp_peers: Vec<std::net::IpAddr>,
}

/// What the writers of every connection count, apart from the state lock they never take.
#[derive(Default)]
struct Sent {
    messages: AtomicU64,
    payload_bytes: AtomicU64,
    frame_payload_bytes: AtomicU64,
}

enum Out {
    Event(Arc<str>),
    Line(String),
    Fault(Fault),
    Close(u16, String),
    Cut,
}

struct State {
    sent: Arc<Sent>,
    /// HTTP status of the scripted upgrade rejections.
    reject_code: u16,
    /// Scripted answers to `POST /_gomuks/auth` (`answer_auth_with`): how many are left, and
    /// the status and body of each.
    auth_script: (u64, u16, String),
    cfg: BackendConfig,
    rwws: crate::rwws::Rwws,
    stats: Stats,
    buffer: EventBuffer,
    conns: HashMap<u64, Conn>,
    next_listener: u64,
    rng: u64,
    /// The Matrix room model (`rooms.rs`); empty unless seeded.
    rooms: crate::rooms::Rooms,
    /// How fast websocket connections at `/_gomuks/websocket` read.
    read_rate: ReadRate,
}

/// One websocket connection as the event buffer sees it.
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    /// Events queued for this connection and not yet written.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    overflow: Arc<Overflow>,
}

/// A connection's queue passing its limit (§10). Raised before the burst that passes it is
/// queued, and checked by the writer before each write, so none of that burst goes out
/// however the writer and the pusher are scheduled; the wake reaches a writer that is idle
/// or stuck on a slow client.
#[derive(Default)]
struct Overflow {
    raised: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Overflow {
    fn raise(&self) {
        self.raised
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The writer's next item: the one a batch stopped at (a line, fault, close or cut keeps its
/// place ahead of events queued after it), else the channel's next.
async fn next_out(held: &mut Option<Out>, rx: &mut mpsc::UnboundedReceiver<Out>) -> Option<Out> {
    match held.take() {
        Some(o) => Some(o),
        None => rx.recv().await,
    }
}

/// §10: the 4001 that ends an overflowed connection; gives up after 2 s on a client that
/// stopped reading.
async fn send_queue_full<S: futures_util::Sink<Message> + Unpin>(sink: &mut S) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(close(4001, "Event queue full")),
    )
    .await;
}

impl State {
    fn new_run(&mut self) {
        let nanos = since_epoch().as_nanos();
        self.stats.run_id = nanos.to_string();
        self.buffer = EventBuffer::new(self.cfg.event_buffer_size);
    }

    fn push(&mut self, command: &str, data: &Value) -> i64 {
        let (id, line) = self.record(command, data);
        self.send_burst(&[line]);
        id
    }

    /// Buffers one event; its id and line, not yet sent.
    fn record(&mut self, command: &str, data: &Value) -> (i64, Arc<str>) {
        self.buffer.push(|id| {
            format!(
                "{}\n",
                json!({"command": command, "request_id": id, "data": data})
            )
            .into()
        })
    }

    /// Sends buffered lines to every connection as one burst. Each connection counts them
    /// all as queued before the first goes out, so a burst past the queue limit overflows it
    /// (gomuks-rpc.md §10) however fast the writer drains meanwhile: none of it is written.
    fn send_burst(&self, lines: &[Arc<str>]) {
        let limit = self.cfg.conn_queue_limit.unwrap_or(usize::MAX);
        for c in self.conns.values() {
            let n = c
                .queued
                .fetch_add(lines.len(), std::sync::atomic::Ordering::AcqRel)
                + lines.len();
            if n > limit {
                c.overflow.raise();
            }
            for line in lines {
                let _ = c.tx.send(Out::Event(line.clone()));
            }
        }
    }

    fn push_generated(&mut self, n: usize) -> i64 {
        let mut id = self.buffer.newest_id();
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            let (lo, hi) = self.cfg.event_size;
            let size = lo + (self.next_rand() as usize) % (hi.saturating_sub(lo) + 1);
            let seq = self.next_rand();
            let line;
            (id, line) = self.record("sync_complete", &crate::events::sync_complete(seq, size));
            lines.push(line);
        }
        self.send_burst(&lines);
        id
    }

    /// Sends an event that the buffer never caches (request_id 0, like gomuks' `typing`) to
    /// every open connection.
    fn push_uncached(&self, command: &str, data: &Value) {
        let line = format!(
            "{}\n",
            json!({"command": command, "request_id": 0, "data": data})
        );
        self.broadcast(|| Out::Line(line.clone()));
    }

    /// A remote message in a modelled room, pushed as a buffered `sync_complete`.
    fn room_message(&mut self, room: &str, sender: &str, body: &str) -> Result<(i64, i64), String> {
        let (rowid, tl, sync) = self.rooms.remote_message(room, sender, body)?;
        self.push("sync_complete", &sync);
        Ok((rowid, tl))
    }

    /// `n` remote messages spread round-robin over the modelled rooms (by list order), pushed
    /// under one lock so they leave as one burst. Returns the newest event id.
    fn room_burst(&mut self, n: usize) -> Result<i64, String> {
        let ids: Vec<String> = self.rooms.room_ids();
        if ids.is_empty() {
            return Err("no modelled rooms: seed them first".into());
        }
        let mut newest = 0;
        let mut lines = Vec::with_capacity(n);
        for i in 0..n {
            let room = &ids[i % ids.len()];
            let sync =
                match self
                    .rooms
                    .remote_message(room, crate::rooms::BOB, &format!("burst {i}"))
                {
                    Ok((_, _, sync)) => sync,
                    Err(e) => {
                        self.send_burst(&lines); // what is buffered goes out, as before
                        return Err(e);
                    }
                };
            let line;
            (newest, line) = self.record("sync_complete", &sync);
            lines.push(line);
        }
        self.send_burst(&lines);
        Ok(newest)
    }

    fn broadcast(&self, make: impl Fn() -> Out) {
        for c in self.conns.values() {
            let _ = c.tx.send(make());
        }
    }

    fn snapshot(&self) -> Stats {
        let mut s = self.stats.clone();
        let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        s.messages_sent = get(&self.sent.messages);
        s.payload_bytes_sent = get(&self.sent.payload_bytes);
        s.frame_payload_bytes_sent = get(&self.sent.frame_payload_bytes);
        s.connections = self.conns.len();
        s.newest_id = self.buffer.newest_id();
        s.acks = self.buffer.acks().clone();
        s
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift: deterministic per seed, no dependency on the rand crate's stream.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// The listening socket, with the configured receive buffer.
fn listen(cfg: &BackendConfig) -> std::io::Result<TcpListener> {
    let sock = if cfg.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    if let Some(n) = cfg.recv_buffer {
        sock.set_recv_buffer_size(n)?;
    }
    sock.bind(cfg.listen)?;
    sock.listen(1024)
}

/// A running backend; dropping it stops accepting connections.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

impl Backend {
    /// Binds and starts serving.
    pub async fn start(cfg: BackendConfig) -> std::io::Result<Backend> {
        if !cfg.listen.ip().is_loopback() {
            return Err(std::io::Error::other(
                "the testkit backend only listens on loopback",
            ));
        }
        let listener = listen(&cfg)?;
        let addr = listener.local_addr()?;
        let mut st = State {
            sent: Arc::default(),
            reject_code: 503,
            auth_script: (0, 0, String::new()),
            rwws: crate::rwws::Rwws(Arc::new(Mutex::new(crate::rwws::RwwsState::new(
                cfg.rwws.clone(),
            )))),
            rng: cfg.seed.max(1),
            cfg,
            stats: Stats::default(),
            buffer: EventBuffer::new(0),
            conns: HashMap::new(),
            next_listener: 0,
            rooms: crate::rooms::Rooms::new(),
            read_rate: ReadRate::default(),
        };
        st.new_run();
        let state = Arc::new(Mutex::new(st));
        let s2 = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                lock(&s2).stats.tcp_peers.push(peer.ip());
                tcp.set_nodelay(true).ok();
                tokio::spawn(handle_tcp(tcp, s2.clone()));
            }
        });
        Ok(Backend {
            addr,
            state,
            accept,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// How many bytes per second the websocket connections read from now on, open ones
    /// included (`None`: as fast as they come; 0: nothing).
    pub fn set_read_rate(&self, bytes_per_second: Option<u64>) {
        self.lock().read_rate.set(bytes_per_second);
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The websocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/_gomuks/websocket", self.addr)
    }
    /// The rwws endpoint.
    pub fn rwws_url(&self) -> String {
        format!("ws://{}/api/ws", self.addr)
    }
    /// The rwws side: stats, closes, revocation, faults.
    pub fn rwws(&self) -> crate::rwws::Rwws {
        self.lock().rwws.clone()
    }
    /// A fresh valid session token.
    pub fn token(&self) -> String {
        let g = self.lock();
        make_token(&g.cfg)
    }
    /// Pushes `n` generated Matrix-like events; returns the newest id.
    pub fn push_events(&self, n: usize) -> i64 {
        self.lock().push_generated(n)
    }
    /// Pushes one event.
    pub fn push_event(&self, command: &str, data: Value) -> i64 {
        self.lock().push(command, &data)
    }
    /// Replaces the room model with the fixture of `rooms.rs`: `!space:example.org` (children
    /// `!r1`, `!r2`), rooms `!r0:example.org` .. `!r{n-1}:example.org` named "Room {i}" with
    /// `history` messages each (`Room {n-1}` most recently active; `!r0` a DM with Alice, `!r2`
    /// 3 unread / 1 notification, `!r3` favourite), and the invite `!invite:example.org`.
    /// Connections opened afterwards get it as their initial sync; open ones are not told.
    pub fn seed_rooms(&self, n: usize, history: usize) {
        self.lock().rooms = crate::rooms::Rooms::seeded(n, history);
    }
    /// `n` remote messages round-robin over the modelled rooms, pushed under one lock as one
    /// burst (`POST /_testkit/rooms/burst?n=N`). Returns the newest event id.
    pub fn room_burst(&self, n: usize) -> Result<i64, String> {
        self.lock().room_burst(n)
    }
    /// A message from `sender` in a modelled room: a new event and timeline row, unread + 1,
    /// pushed as a buffered `sync_complete`. Returns `(rowid, timeline_rowid)`.
    pub fn room_message(&self, room: &str, sender: &str, body: &str) -> Result<(i64, i64), String> {
        self.lock().room_message(room, sender, body)
    }
    /// A `typing` event `{room_id, user_ids}` to every open connection. Like gomuks, it is not
    /// cached (request_id 0), so a resume does not replay it.
    pub fn room_typing(&self, room: &str, users: &[String]) {
        self.lock()
            .push_uncached("typing", &crate::rooms::typing(room, users));
    }
    /// A copy of the room model.
    pub fn rooms(&self) -> crate::rooms::Rooms {
        self.lock().rooms.clone()
    }
    /// Simulates a backend restart: new run id, ids and buffer reset, connections dropped.
    pub fn restart(&self) {
        let mut g = self.lock();
        g.new_run();
        g.broadcast(|| Out::Cut);
    }
    /// Drops every websocket connection without a close frame.
    pub fn cut_all(&self) {
        self.lock().broadcast(|| Out::Cut);
    }
    /// Sends a close frame on every connection.
    pub fn close_all(&self, code: u16, reason: &str) {
        self.lock()
            .broadcast(|| Out::Close(code, reason.to_owned()));
    }
    /// Injects a fault into every open connection.
    pub fn inject(&self, fault: Fault) {
        self.lock().broadcast(|| Out::Fault(fault.clone()));
    }
    /// Refuses the next `n` websocket upgrades with HTTP 503 (auth keeps working).
    pub fn reject_upgrades(&self, n: u64) {
        self.reject_upgrades_with(n, 503);
    }
    /// Refuses the next `n` websocket upgrades with HTTP `code` (503, or 401 as gomuks answers
    /// a refused cookie, spec §1.2); auth keeps working.
    pub fn reject_upgrades_with(&self, n: u64, code: u16) {
        let mut g = self.lock();
        g.stats.reject_upgrades = n;
        g.reject_code = code;
    }
    /// Answers the next `n` `POST /_gomuks/auth` requests (`u64::MAX`: all) with HTTP `code`
    /// and `body`, whatever they carry: a reverse proxy that publishes only the websocket
    /// (404), a failing backend (5xx), or a 200 whose token is malformed. Counted in
    /// `auth_requests`.
    pub fn answer_auth_with(&self, n: u64, code: u16, body: &str) {
        self.lock().auth_script = (n, code, body.to_owned());
    }
    /// Signs tokens with a new key from now on: every token issued before is refused, at the
    /// upgrade (401) and as a cookie at `/_gomuks/auth` (401), as after gomuks' `token_key`
    /// changed.
    pub fn rotate_token_key(&self) {
        self.lock().cfg.token_key = rand::random::<[u8; 32]>().to_vec();
    }
    /// Turns auth off (every request accepted, `POST /_gomuks/auth` answers 204) or back on,
    /// as a backend restarted with another configuration.
    pub fn set_auth_disabled(&self, disabled: bool) {
        self.lock().cfg.disable_auth = disabled;
    }
    /// A snapshot of what the backend has seen.
    pub fn stats(&self) -> Stats {
        self.lock().snapshot()
    }
    /// Polls stats every 10 ms until `f` holds or `timeout` passes.
    pub async fn wait_for<F: Fn(&Stats) -> bool>(&self, f: F, timeout: Duration) -> bool {
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

/// Consumes one scripted upgrade rejection, if any is left: its HTTP status.
fn take_rejection(state: &Mutex<State>) -> Option<u16> {
    let mut g = lock(state);
    if g.stats.reject_upgrades > 0 {
        g.stats.reject_upgrades -= 1;
        Some(g.reject_code)
    } else {
        None
    }
}

/// Wall-clock time since the Unix epoch (zero if the clock is before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The homeserver round trip of a send: send_complete, then (on success) the sync carrying
/// the event, both buffered like any server event.
fn complete_send_later(state: &Arc<Mutex<State>>, pending: crate::rooms::PendingSend) {
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut g = lock(&state);
        for (command, data) in g.rooms.complete_send(&pending) {
            g.push(command, &data);
        }
    });
}

/// Writes the replies at the head of `rx` (up to the first item that is not one, which goes
/// to `held`); false if the connection failed.
async fn answer_at_once<S>(
    rx: &mut mpsc::UnboundedReceiver<Out>,
    held: &mut Option<Out>,
    sink: &mut S,
    w: &mut Writer,
) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    while let Ok(out) = rx.try_recv() {
        match out {
            Out::Line(l) => {
                if sink.send(w.message(&l)).await.is_err() {
                    return false;
                }
            }
            other => {
                *held = Some(other);
                break;
            }
        }
    }
    true
}

/// Locks the shared state; a panicked test thread must not wedge the backend.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn make_token(cfg: &BackendConfig) -> String {
    let expiry = (since_epoch() + cfg.token_lifetime).as_secs();
    let payload = json!({"username": cfg.username, "expiry": expiry}).to_string();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&cfg.token_key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    format!(
        "{}.{}",
        B64.encode(payload),
        B64.encode(mac.finalize().into_bytes())
    )
}

fn valid_token(cfg: &BackendConfig, token: &str) -> bool {
    if token.len() > 500 {
        return false;
    }
    let Some((p, sig)) = token.split_once('.') else {
        return false;
    };
    let (Ok(payload), Ok(sig)) = (B64.decode(p), B64.decode(sig)) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&cfg.token_key).expect("HMAC takes any key length");
    mac.update(&payload);
    if mac.verify_slice(&sig).is_err() {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&payload) else {
        return false;
    };
    let now = since_epoch().as_secs();
    v["username"] == cfg.username.as_str()
        && v["expiry"].as_u64().is_some_and(|e| e > now)
        && v["image_only"] != true
}

fn basic_ok(cfg: &BackendConfig, header: Option<&str>) -> bool {
    let Some(v) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(v.trim()) else {
        return false;
    };
    let Ok(s) = String::from_utf8(raw) else {
        return false;
    };
    let Some((u, p)) = s.split_once(':') else {
        return false;
    };
    (u == cfg.username && p == cfg.password)
        || (u == "desktop-key" && cfg.desktop_key.as_deref() == Some(p))
}

struct Head {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    len: usize,
}

/// Reads the request head without consuming it, so the websocket upgrade can read it again.
async fn peek_head(tcp: &TcpStream) -> Option<Head> {
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..500 {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path?.to_owned();
                let (path, q) = target.split_once('?').unwrap_or((&target, ""));
                // Decoded, so `?reason=going%20away` closes with "going away" as a test expects.
                let query = form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let mut headers: HashMap<String, String> = HashMap::new();
                for h in req.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    let mut value = String::from_utf8_lossy(h.value).into_owned();
                    // Go's net/http reads cookies from every Cookie line, the first match wins.
                    if let (true, Some(prev)) = (name == "cookie", headers.get(&name)) {
                        value = format!("{prev}; {value}");
                    }
                    headers.insert(name, value);
                }
                return Some(Head {
                    method: req.method?.to_owned(),
                    path: path.to_owned(),
                    query,
                    headers,
                    len,
                });
            }
            Ok(httparse::Status::Partial) if n < buf.len() => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            _ => return None,
        }
    }
    None
}

async fn respond(mut tcp: TcpStream, head: &Head, code: u16, ctype: &str, body: &str) {
    // Consume the request (head + body) so closing does not reset the connection.
    let body_len: usize = head
        .headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut sink = vec![0u8; head.len + body_len.min(1 << 20)];
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut sink)).await;
    let reason = match code {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(msg.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

fn cookie(head: &Head) -> Option<String> {
    head.headers
        .get("cookie")?
        .split(';')
        .find_map(|c| c.trim().strip_prefix("gomuks_auth=").map(str::to_owned))
}

async fn handle_tcp(tcp: TcpStream, state: Arc<Mutex<State>>) {
    let Some(head) = peek_head(&tcp).await else {
        return;
    };
    let cfg = lock(&state).cfg.clone();
    if let Some((name, value)) = &cfg.required_header {
        if head.path.starts_with("/_gomuks/") && head.headers.get(name) != Some(value) {
            return respond(tcp, &head, 403, "text/plain", "proxy: missing header").await;
        }
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/_gomuks/auth") => {
            lock(&state).stats.auth_requests += 1;
            let scripted = {
                let mut g = lock(&state);
                let (left, code, body) = &mut g.auth_script;
                (*left > 0).then(|| {
                    *left = left.saturating_sub(1);
                    (*code, body.clone())
                })
            };
            if let Some((code, body)) = scripted {
                return respond(tcp, &head, code, "application/json", &body).await;
            }
            if cfg.disable_auth {
                return respond(tcp, &head, 204, "text/plain", "").await;
            }
            // A valid cookie renews the token (200); Basic credentials create one (201).
            // An invalid cookie is not final: gomuks then tries Basic credentials.
            let basic = head.headers.get("authorization").map(String::as_str);
            let created = if cookie(&head).is_some_and(|c| valid_token(&cfg, &c)) {
                lock(&state).stats.token_renewals += 1;
                200
            } else if basic_ok(&cfg, basic) {
                201
            } else {
                let b = if basic.is_some_and(|b| b.starts_with("Basic ")) {
                    "Incorrect basic auth credentials"
                } else {
                    "Missing basic auth credentials"
                };
                return respond(tcp, &head, 401, "text/plain", b).await;
            };
            let body = format!("{}\n", json!({"token": make_token(&cfg)}));
            respond(tcp, &head, created, "application/json", &body).await
        }
        ("GET", "/api/ws") => {
            let (rwws, rate) = {
                let g = lock(&state);
                (g.rwws.clone(), g.read_rate.clone())
            };
            crate::rwws::serve(Throttled::new(tcp, rate), rwws).await
        }
        ("GET", "/_gomuks/websocket") => {
            match take_rejection(&state) {
                Some(401) => {
                    let b = r#"{"errcode":"FI.MAU.GOMUKS.INVALID_COOKIE","error":"Invalid gomuks_auth cookie"}"#;
                    return respond(tcp, &head, 401, "application/json", b).await;
                }
                Some(code) => {
                    return respond(tcp, &head, code, "text/plain", "Service Unavailable").await
                }
                None => {}
            }
            if !cfg.disable_auth {
                let authorized = match cookie(&head) {
                    Some(c) if valid_token(&cfg, &c) => true,
                    Some(_) => {
                        let b = r#"{"errcode":"FI.MAU.GOMUKS.INVALID_COOKIE","error":"Invalid gomuks_auth cookie"}"#;
                        return respond(tcp, &head, 401, "application/json", b).await;
                    }
                    None => basic_ok(&cfg, head.headers.get("authorization").map(String::as_str)),
                };
                if !authorized {
                    let b = r#"{"errcode":"FI.MAU.GOMUKS.MISSING_COOKIE","error":"Missing gomuks_auth cookie"}"#;
                    return respond(tcp, &head, 401, "application/json", b).await;
                }
            }
            if let Some(origin) = head.headers.get("origin") {
                let host = head.headers.get("host").cloned().unwrap_or_default();
                let o = origin.split("://").nth(1).unwrap_or(origin);
                if !o.eq_ignore_ascii_case(&host) && !o.starts_with("localhost:") {
                    let b = format!("request Origin {o:?} is not authorized for Host {host:?}");
                    return respond(tcp, &head, 403, "text/plain", &b).await;
                }
            }
            serve_ws(tcp, head, state).await
        }
        (_, path) if path.starts_with("/_testkit/") => {
            let rwws = lock(&state).rwws.clone();
            let (code, body) = crate::rwws::control(&head.method, path, &head.query, &rwws)
                .unwrap_or_else(|| control(&head, &state));
            respond(tcp, &head, code, "application/json", &body).await
        }
        _ => respond(tcp, &head, 404, "text/plain", "404 page not found").await,
    }
}

/// Scripting for tests in other languages: the same operations as the Rust API, over HTTP on
/// the backend's own loopback port.
fn control(head: &Head, state: &Arc<Mutex<State>>) -> (u16, String) {
    let q = |k: &str| head.query.get(k).cloned().unwrap_or_default();
    let n = |default: usize| q("n").parse::<usize>().unwrap_or(default);
    let mut g = lock(state);
    let ok = json!({"ok": true}).to_string();
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/_testkit/stats") => (
            200,
            serde_json::to_string(&g.snapshot()).unwrap_or_default(),
        ),
        ("POST", "/_testkit/push") => {
            let newest = g.push_generated(n(1).min(1_000_000));
            (200, json!({"newest_id": newest}).to_string())
        }
        ("POST", "/_testkit/reject_upgrades") => {
            g.stats.reject_upgrades = n(1) as u64;
            g.reject_code = q("code").parse().unwrap_or(503);
            (200, ok)
        }
        ("POST", "/_testkit/cut") => {
            g.broadcast(|| Out::Cut);
            // `?push=N`: N events pushed under the same lock as the cut, so no connection carries
            // them and no client can reconnect in between: a resuming client gets them replayed.
            match q("push").parse::<usize>() {
                Ok(m) => {
                    let newest = g.push_generated(m.min(1_000_000));
                    (200, json!({"ok": true, "newest_id": newest}).to_string())
                }
                Err(_) => (200, ok),
            }
        }
        ("POST", "/_testkit/restart") => {
            g.new_run();
            g.broadcast(|| Out::Cut);
            (200, ok)
        }
        ("POST", "/_testkit/close") => {
            let code = q("code").parse().unwrap_or(1000);
            let reason = q("reason");
            g.broadcast(|| Out::Close(code, reason.clone()));
            (200, ok)
        }
        ("POST", "/_testkit/fault") => {
            let fault = match q("kind").as_str() {
                "invalid_deflate" => Fault::InvalidDeflate,
                "invalid_json" => Fault::InvalidJson,
                "invalid_utf8" => Fault::InvalidUtf8,
                "missing_fields" => Fault::MissingFields,
                "wrong_frame_type" => Fault::WrongFrameType,
                "oversize" => Fault::Oversize(n(2 << 20)),
                "bomb" => Fault::Bomb(n(64 << 20)),
                "unknown_command_event" => Fault::UnknownCommandEvent,
                "response_unknown_id" => Fault::ResponseUnknownId,
                other => {
                    return (
                        400,
                        json!({"error": format!("unknown fault kind {other:?}")}).to_string(),
                    )
                }
            };
            g.broadcast(|| Out::Fault(fault.clone()));
            (200, ok)
        }
        ("POST", "/_testkit/rooms/seed") => {
            let n = n(10).min(100_000);
            let history = q("history").parse::<usize>().unwrap_or(20).min(100_000);
            g.rooms = crate::rooms::Rooms::seeded(n, history);
            (
                200,
                json!({"ok": true, "rooms": n, "history": history}).to_string(),
            )
        }
        ("POST", "/_testkit/rooms/message") => {
            let sender = Some(q("sender"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| crate::rooms::ALICE.to_owned());
            match g.room_message(&q("room"), &sender, &q("body")) {
                Ok((rowid, tl)) => (
                    200,
                    json!({"rowid": rowid, "timeline_rowid": tl}).to_string(),
                ),
                Err(e) => (404, json!({"error": e}).to_string()),
            }
        }
        ("POST", "/_testkit/rooms/burst") => match g.room_burst(n(1).min(1_000_000)) {
            Ok(newest) => (200, json!({"newest_id": newest}).to_string()),
            Err(e) => (404, json!({"error": e}).to_string()),
        },
        ("POST", "/_testkit/rooms/typing") => {
            let users: Vec<String> = q("users")
                .split(',')
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            g.push_uncached("typing", &crate::rooms::typing(&q("room"), &users));
            (200, ok)
        }
        _ => (
            404,
            json!({"error": "unknown control endpoint"}).to_string(),
        ),
    }
}

struct Writer {
    compress: Option<Compress>,
    sent: Arc<Sent>,
}

impl Writer {
    fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        let c = self.compress.as_mut().expect("compressed mode");
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            out.reserve(4096);
            let before = c.total_in();
            if c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            consumed += (c.total_in() - before) as usize;
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }

    fn message(&mut self, text: &str) -> Message {
        let m = if self.compress.is_some() {
            Message::binary(self.deflate(text.as_bytes()))
        } else {
            Message::text(text.to_owned())
        };
        let add =
            |c: &AtomicU64, n: usize| c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        add(&self.sent.messages, 1);
        add(&self.sent.payload_bytes, text.len());
        add(&self.sent.frame_payload_bytes, m.len());
        m
    }

    fn fault(&mut self, f: Fault) -> Vec<Message> {
        let compressed = self.compress.is_some();
        let line = |s: String| -> Message {
            Message::Frame(Frame::message(
                s.into_bytes(),
                OpCode::Data(Data::Text),
                true,
            ))
        };
        match f {
            Fault::InvalidDeflate if compressed => {
                vec![Message::binary(vec![0xff, 0xfe, 0xfd, 0x00, 0x13])]
            }
            Fault::InvalidDeflate => vec![],
            Fault::InvalidJson => {
                vec![self.message("{\"command\":\"sync_complete\",\"request_id\":-1,\"data\":{\n")]
            }
            Fault::InvalidUtf8 => {
                let bytes =
                    b"{\"command\":\"typing\",\"request_id\":0,\"data\":\"\xff\xfe\"}\n".to_vec();
                if compressed {
                    vec![Message::binary(self.deflate(&bytes))]
                } else {
                    vec![Message::Frame(Frame::message(
                        bytes,
                        OpCode::Data(Data::Text),
                        true,
                    ))]
                }
            }
            Fault::MissingFields => vec![self.message("{\"request_id\":0,\"data\":{}}\n")],
            Fault::WrongFrameType if compressed => vec![line(
                "{\"command\":\"typing\",\"request_id\":0,\"data\":{}}\n".into(),
            )],
            Fault::WrongFrameType => vec![Message::binary(b"{}\n".to_vec())],
            Fault::Oversize(n) | Fault::Bomb(n) => {
                let body = format!(
                    "{{\"command\":\"typing\",\"request_id\":0,\"data\":\"{}\"}}\n",
                    "a".repeat(n)
                );
                vec![self.message(&body)]
            }
            Fault::UnknownCommandEvent => vec![self.message(
                "{\"command\":\"brand_new_event\",\"request_id\":0,\"data\":{\"x\":1}}\n",
            )],
            Fault::ResponseUnknownId => vec![self
                .message("{\"command\":\"response\",\"request_id\":987654321987,\"data\":true}\n")],
        }
    }
}

/// Soft cap of one batched compressed message (§5 `preferredMaxFrameSize`).
const BATCH_BYTES: usize = 256 * 1024;

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
async fn serve_ws(tcp: TcpStream, head: Head, state: Arc<Mutex<State>>) {
    let tcp = Throttled::new(tcp, lock(&state).read_rate.clone());
    let mut wsc = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    wsc.max_message_size = Some(1024 * 1024 + 1);
    let q = |k: &str| head.query.get(k).cloned().unwrap_or_default();
    let compress = q("compress") == "1";
    let last: i64 = q("last_received_event").parse().unwrap_or(0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let overflow = Arc::new(Overflow::default());
    // Registered as the 101 goes out, not once the handshake future resumes: a client that has
    // seen its upgrade answered may have an event pushed at once, and it must not be missed.
    let mut registered = None;
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(
        tcp,
        |_: &Request, answer: Response| {
            let mut g = lock(&state);
            g.next_listener += 1;
            let listener = g.next_listener;
            let run_matches = q("run_id") == g.stats.run_id;
            // §2/§7.2: a run id from another process makes the resume point meaningless; the old
            // entry goes (with its GC) before the new listener subscribes (§7.4 item 1).
            let resume_from = if run_matches { last } else { 0 };
            if run_matches {
                if let Ok(prev) = q("prev_listener_id").parse::<u64>() {
                    g.buffer.forget(prev);
                }
            }
            let replay = g.buffer.subscribe(listener, resume_from);
            if replay.is_some() {
                g.stats.resumes += 1;
            } else {
                g.stats.fresh_starts += 1;
            }
            g.stats.total_connections += 1;
            g.conns.insert(
                listener,
                Conn {
                    tx: tx.clone(),
                    queued: queued.clone(),
                    overflow: overflow.clone(),
                },
            );
            // Built under the same lock as the subscription, so no live room event falls between
            // the snapshot and the first buffered event this connection receives.
            let initial_rooms = (replay.is_none() && g.cfg.logged_in && !g.rooms.is_empty())
                .then(|| g.rooms.initial_sync(Some(since_epoch().as_millis() as i64)));
            registered = Some((
                listener,
                replay,
                g.stats.run_id.clone(),
                g.cfg.ping_timeout,
                g.cfg.logged_in,
                initial_rooms,
            ));
            Ok(answer)
        },
        Some(wsc),
    )
    .await;
    let Some((listener, replay, run_id, ping_timeout, logged_in, initial_rooms)) = registered
    else {
        return;
    };
    let Ok(ws) = accepted else {
        lock(&state).conns.remove(&listener);
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let mut w = Writer {
        compress: compress.then(|| Compress::new(Compression::default(), false)),
        sent: lock(&state).sent.clone(),
    };
    let env = |cmd: &str, id: i64, data: Value| {
        format!(
            "{}\n",
            json!({"command": cmd, "request_id": id, "data": data})
        )
    };
    let mut startup = vec![
        env(
            "run_id",
            0,
            json!({"run_id": run_id, "etag": "", "vapid_key": "", "listener_id": listener}),
        ),
        env(
            "client_state",
            0,
            json!({"is_initialized": true, "is_logged_in": logged_in, "is_verified": logged_in,
            "verification_state": {"is_verified": logged_in, "state_checked": logged_in, "has_cross_signing": logged_in, "has_ssss": logged_in}}),
        ),
        env(
            "sync_status",
            0,
            // Real gomuks reports "waiting" until a first sync, which needs an account.
            json!({"type": if logged_in { "ok" } else { "waiting" }, "error_count": 0, "last_sync": 0}),
        ),
        env("image_auth_token", 0, json!("image-token")),
    ];
    if let Some(replay) = replay {
        // Batched like live events (§5), then init_complete (§6.3).
        let mut batch = String::new();
        for l in replay {
            batch.push_str(&l);
            if !compress || batch.len() > BATCH_BYTES {
                startup.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            startup.push(batch);
        }
        startup.push(env("init_complete", 0, json!({})));
    } else if logged_in {
        let ts = since_epoch().as_millis() as i64;
        if let Ok(since) = q("last_server_ts").parse::<i64>() {
            startup.push(env(
                "sync_complete",
                0,
                json!({"catchup": true, "server_timestamp": ts, "since_ts": since}),
            ));
        } else if let Some(payloads) = initial_rooms {
            // The room model's GetInitialSync payloads (rooms.rs).
            for p in payloads {
                startup.push(env("sync_complete", 0, p));
            }
        } else {
            startup.push(env("sync_complete", 0, json!({"clear_state": true, "server_timestamp": ts,
                "rooms": {"!room:example.org": {"meta": {"room_id": "!room:example.org", "name": "Test room"}}}})));
        }
        startup.push(env("init_complete", 0, json!({})));
    }
    let cut_during_startup = lock(&state).cfg.cut_during_startup;
    if let Some(n) = cut_during_startup {
        startup.truncate(n);
        // Nothing of the session after them: the serving loop ends at its first turn.
        rx.close();
    }
    for m in startup {
        if sink.send(w.message(&m)).await.is_err() {
            // A closed queue ends the serving loop at its first turn.
            rx.close();
            break;
        }
    }
    let mut last_text = Instant::now();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_timeout, ping_timeout);
    let mut tasks: HashMap<i64, tokio::task::AbortHandle> = HashMap::new();
    let mut close_code = None;
    let (cut_after_events, cut_after_bytes) = {
        let g = lock(&state);
        (g.cfg.cut_after_events, g.cfg.cut_after_bytes)
    };
    let (mut sent_events, mut sent_bytes) = (0usize, 0usize);
    // What a batch stopped at: it goes next, ahead of what was queued after it.
    let mut held = None;
    loop {
        tokio::select! {
            out = next_out(&mut held, &mut rx) => match out {
                Some(Out::Event(line)) => {
                    let mut text = line.to_string();
                    // Batching (§5): drain what is already queued, compressed mode only.
                    let mut lines = 1;
                    // A scheduled cut lands exactly after its Nth event, even inside a batch.
                    while compress
                        && text.len() < BATCH_BYTES
                        && !matches!(cut_after_events, Some(n) if sent_events + lines >= n)
                    {
                        match rx.try_recv() {
                            Ok(Out::Event(l)) => {
                                text.push_str(&l);
                                lines += 1;
                            }
                            Ok(other) => { held = Some(other); break }
                            Err(_) => break,
                        }
                    }
                    queued.fetch_sub(lines, std::sync::atomic::Ordering::AcqRel);
                    if overflow.is_raised() {
                        send_queue_full(&mut sink).await;
                        break;
                    }
                    let m = w.message(&text);
                    sent_bytes += m.len();
                    sent_events += lines;
                    // §10: a writer stuck on a slow client does not stop the 4001.
                    let sent = tokio::select! {
                        r = sink.send(m) => r.is_ok(),
                        () = overflow.wake.notified() => {
                            send_queue_full(&mut sink).await;
                            false
                        }
                    };
                    if !sent { break }
                    if cut_after_events.is_some_and(|n| sent_events >= n)
                        || cut_after_bytes.is_some_and(|n| sent_bytes >= n)
                    {
                        break;
                    }
                }
                Some(Out::Line(l)) => if sink.send(w.message(&l)).await.is_err() { break },
                Some(Out::Fault(f)) => for m in w.fault(f) { if sink.send(m).await.is_err() { break } },
                Some(Out::Close(code, reason)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))).await;
                    break;
                }
                Some(Out::Cut) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    last_text = Instant::now();
                    // Like gomuks' json.Decoder: the first value counts, trailing bytes are ignored.
                    let Some(Ok(v)) = serde_json::Deserializer::from_str(t.as_str()).into_iter::<Value>().next() else {
                        let _ = sink.send(close(1003, "Invalid JSON")).await;
                        break;
                    };
                    // A request_id of the wrong type fails decoding (1003); a missing one is 0.
                    let id = match v.get("request_id") { None => Some(0), Some(r) => r.as_i64() };
                    let (Some(cmd), Some(id)) = (v["command"].as_str(), id) else {
                        let _ = sink.send(close(1003, "Invalid JSON")).await;
                        break;
                    };
                    let data = v.get("data").cloned().unwrap_or(json!({}));
                    if !logged_in && PANICS_LOGGED_OUT.contains(&cmd) {
                        // gomuks' handler dereferences the nil homeserver URL; the websocket
                        // recovers and closes (pkg/gomuks/websocket.go).
                        let _ = sink.send(close(1011, "Command handler panicked")).await;
                        break;
                    }
                    handle_command(cmd, id, data, listener, &state, &tx, &mut tasks);
                    // A reply the command gave at once goes out before the next message is
                    // read, unless something queued earlier is ahead of it: once the websocket
                    // has read a close frame it can send nothing more, and a client's close
                    // right behind a request must find that request answered.
                    if held.is_none() && !answer_at_once(&mut rx, &mut held, &mut sink, &mut w).await {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = sink.send(close(1003, "Non-text message")).await;
                    break;
                }
                Some(Ok(Message::Close(f))) => {
                    close_code = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    let _ = sink.send(close(1009, "read limited at 1048577 bytes")).await;
                    break;
                }
                Some(Err(_)) | None => break,
            },
            () = overflow.wake.notified() => {
                send_queue_full(&mut sink).await;
                break;
            }
            _ = ticker.tick() => {
                if last_text.elapsed() > ping_timeout {
                    let _ = sink.send(close(4002, "Ping timeout")).await;
                    break;
                }
            }
        }
    }
    for t in tasks.values() {
        t.abort();
    }
    let mut g = lock(&state);
    g.conns.remove(&listener);
    if close_code.is_some() {
        g.stats.last_client_close_code = close_code;
    }
    // §7.1: only 1001 frees the ack entry; other disconnects keep it for a resume.
    if close_code == Some(1001) {
        g.buffer.forget(listener);
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// A sample of the commands real gomuks runs with its account or homeserver URL, which are
/// nil while it is not logged in: the handler panics (interop/FINDINGS.md F8).
const PANICS_LOGGED_OUT: &[&str] = &["get_profile", "calculate_room_id", "join_room"];

fn handle_command(
    cmd: &str,
    id: i64,
    data: Value,
    listener: u64,
    state: &Arc<Mutex<State>>,
    tx: &mpsc::UnboundedSender<Out>,
    tasks: &mut HashMap<i64, tokio::task::AbortHandle>,
) {
    let reply = |command: &str, data: Value| {
        format!(
            "{}\n",
            json!({"command": command, "request_id": id, "data": data})
        )
    };
    match cmd {
        "ping" => {
            let ack = data["last_received_id"].as_i64().unwrap_or(0);
            if ack != 0 {
                let mut g = lock(state);
                g.buffer.ack(listener, ack);
                g.stats.last_ack = ack;
            }
            let _ = tx.send(Out::Line(reply("pong", Value::Null)));
        }
        "cancel" => {
            lock(state).stats.cancels += 1;
            let target = data["request_id"].as_i64().unwrap_or(0);
            let found = tasks.remove(&target).map(|t| {
                t.abort();
                let reason = data["reason"].as_str().unwrap_or("");
                let err = json!({"command": "error", "request_id": target, "data": format!("context canceled: {reason}")});
                let _ = tx.send(Out::Line(format!("{err}\n")));
            });
            let _ = tx.send(Out::Line(reply("response", json!(found.is_some()))));
        }
        "echo" => {
            let _ = tx.send(Out::Line(reply("response", data)));
        }
        "fail" => {
            let _ = tx.send(Out::Line(reply(
                "error",
                json!(data["message"].as_str().unwrap_or("failed")),
            )));
        }
        "get_state" => {
            let s = lock(state).snapshot();
            let _ = tx.send(Out::Line(reply(
                "response",
                json!({"run_id": s.run_id, "newest_id": s.newest_id, "acks": s.acks}),
            )));
        }
        "sleep" => {
            let ms = data["ms"].as_u64().unwrap_or(0).min(60_000);
            let tx = tx.clone();
            let line = reply("response", Value::Null);
            tasks.retain(|_, t| !t.is_finished());
            let h = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = tx.send(Out::Line(line));
            });
            tasks.insert(id, h.abort_handle());
        }
        "paginate" => {
            let r = lock(state).rooms.paginate(&data);
            let _ = tx.send(Out::Line(match r {
                Ok(v) => reply("response", v),
                Err(e) => reply("error", json!(e)),
            }));
        }
        "get_room_state" => {
            let v = lock(state).rooms.get_room_state(&data);
            let _ = tx.send(Out::Line(reply("response", v)));
        }
        "get_specific_room_state" => {
            let v = lock(state).rooms.get_specific_room_state(&data);
            let _ = tx.send(Out::Line(reply("response", v)));
        }
        "send_message" => {
            let r = lock(state).rooms.send_message(&data);
            match r {
                Ok((echo, pending)) => {
                    let _ = tx.send(Out::Line(reply("response", echo)));
                    complete_send_later(state, pending);
                }
                Err(e) => {
                    let _ = tx.send(Out::Line(reply("error", json!(e))));
                }
            }
        }
        "resend_event" => {
            let mut g = lock(state);
            match g.rooms.resend_event(&data) {
                // hicli sends from a goroutine started before it answers: a homeserver that
                // refuses at once has its send_complete out before the answer.
                Ok((echo, pending)) if pending.fails() => {
                    for (command, data) in g.rooms.complete_send(&pending) {
                        g.push(command, &data);
                    }
                    let _ = tx.send(Out::Line(reply("response", echo)));
                }
                Ok((echo, pending)) => {
                    let _ = tx.send(Out::Line(reply("response", echo)));
                    complete_send_later(state, pending);
                }
                Err(e) => {
                    let _ = tx.send(Out::Line(reply("error", json!(e))));
                }
            }
        }
        "mark_read" => {
            let mut g = lock(state);
            match g.rooms.mark_read(&data) {
                Ok(sync) => {
                    // gomuks answers commands without a result with null.
                    let _ = tx.send(Out::Line(reply("response", Value::Null)));
                    // Pushed after the reply is queued: the homeserver's echo of the receipt.
                    g.push("sync_complete", &sync);
                }
                Err(e) => {
                    let _ = tx.send(Out::Line(reply("error", json!(e))));
                }
            }
        }
        other => {
            let _ = tx.send(Out::Line(reply(
                "error",
                json!(format!("unknown command \"{other}\"")),
            )));
        }
    }
}
