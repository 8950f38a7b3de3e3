//! The connection supervisor shared by both dialects: connect, keepalive, receive timeout,
//! request bookkeeping, backoff and reconnect, close.

pub mod backoff;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::Config;
use crate::dialect::{Dialect, Incoming, Policy};
use crate::event::{Event, EventKind};
use crate::queue::EventQueue;
use crate::status::{Error, Status};
use backoff::Backoff;
use transport::Ws;

/// Where a request's reply goes.
pub enum ReplyTo {
    /// As a RESPONSE event in the queue.
    Event,
    /// To an awaiting caller of the Rust API.
    Oneshot(oneshot::Sender<Result<Bytes, Error>>),
}

/// Commands from the client handle to its session task.
pub enum Command {
    /// Send a request (queued until connected).
    Request {
        /// Request id.
        id: i64,
        /// Command name.
        command: String,
        /// Validated JSON payload.
        data: Vec<u8>,
        /// Per-request timeout.
        timeout: Duration,
        /// Reply destination.
        reply: ReplyTo,
    },
    /// Cancel an in-flight request.
    Cancel(i64),
    /// Send a raw packet (rwws); queued until connected.
    Packet(Vec<u8>),
    /// Close the session; how the server should treat our resume point.
    Close(CloseIntent),
}

/// What a client-initiated close tells the server about resuming later (gomuks-rpc.md §7.1:
/// only close code 1001 frees this client's entry in the backend's event buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseIntent {
    /// Done for good: the server may forget us (gomuks: 1001 frees the buffer entry).
    Final,
    /// The app keeps the resume state to resume later: keep our entry (gomuks: 1000).
    KeepResume,
}

enum Pending {
    Request {
        message: Option<Message>,
        reply: ReplyTo,
        deadline: Instant,
    },
    Ping {
        sent_at: Instant,
        acked: i64,
    },
    Internal,
}

struct Core<D: Dialect> {
    cfg: Arc<Config>,
    tls: Arc<rustls::ClientConfig>,
    queue: Arc<EventQueue>,
    ids: Arc<crate::client::IdGen>,
    dialect: D,
    pending: BTreeMap<i64, Pending>,
    /// Requests waiting for a connection, in submission order.
    unsent: VecDeque<i64>,
    /// rwws packets submitted while disconnected.
    unsent_packets: VecDeque<Message>,
    timers: BTreeSet<(Instant, i64)>,
}

/// How a connection ended.
struct Ended {
    status: Status,
    code: u16,
    reason: String,
    /// The user asked to close.
    by_user: bool,
}

impl Ended {
    fn new(status: Status, code: u16, reason: impl Into<String>) -> Ended {
        Ended {
            status,
            code,
            reason: reason.into(),
            by_user: false,
        }
    }
}

/// Most messages decoded per wake-up of the session task. A compressed gomuks message is a
/// batch already; the bound keeps a fast server from starving pings, commands and timers.
const READ_BURST: usize = 64;

/// How a read burst went.
struct Read {
    /// A data message arrived (the connection works, whatever came after).
    healthy: bool,
    /// The message that ended the connection, if one did.
    end: Option<ReadEnd>,
}

/// Why a read burst ended the connection.
enum ReadEnd {
    /// The server sent a close frame (code, reason).
    Close(u16, String),
    /// A message could not be decoded; the connection is closed with 1003.
    Invalid(Error),
    /// The transport failed or ended.
    Lost(Ended),
}

/// Runs a client's session until it closes for good.
pub async fn run<D: Dialect>(
    cfg: Arc<Config>,
    tls: Arc<rustls::ClientConfig>,
    queue: Arc<EventQueue>,
    ids: Arc<crate::client::IdGen>,
    dialect: D,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut core = Core {
        cfg: cfg.clone(),
        tls,
        queue,
        ids,
        dialect,
        pending: BTreeMap::new(),
        unsent: VecDeque::new(),
        unsent_packets: VecDeque::new(),
        timers: BTreeSet::new(),
    };
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut attempt: u32 = 0;
    let mut reauthed = false;
    loop {
        attempt = attempt.saturating_add(1);
        let mut ev = Event::new(EventKind::Connecting);
        ev.attempt = attempt;
        core.queue.push(ev);

        // A close during connect aborts it; other commands wait until the attempt settles.
        let mut buffered = Vec::new();
        let result = {
            let fut = core.connect(&mut reauthed);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => break Some(r),
                    c = commands.recv() => match c {
                        Some(Command::Close(_)) | None => break None,
                        Some(c) => buffered.push(c),
                    },
                }
            }
        };
        for c in buffered {
            core.command_offline(c);
        }
        let (ended, healthy) = match result {
            None => (None, false),
            Some(Err(e)) => (
                Some(Ended::new(
                    e.error.status(),
                    e.code.unwrap_or(0),
                    e.error.message(),
                )),
                false,
            ),
            Some(Ok((ws, resume_attempted, early))) => {
                reauthed = false;
                let mut ev = Event::new(EventKind::Connected);
                ev.attempt = attempt;
                ev.resume_attempted = resume_attempted;
                core.queue.push(ev);
                core.deliver(early);
                let (ended, healthy) = core.serve(ws, &mut commands).await;
                (Some(ended), healthy)
            }
        };
        if ended.as_ref().is_some_and(|e| e.by_user) {
            core.fail_sent(Status::ErrClientClosed, "client closed before the reply");
        } else {
            core.fail_sent(Status::ErrDisconnected, "connection lost before the reply");
        }
        if healthy {
            backoff.reset();
        }
        let Some(ended) = ended else {
            core.finish();
            return;
        };
        let policy = if ended.by_user {
            Policy::Stop
        } else {
            core.dialect.policy(ended.status, ended.code)
        };
        let delay = match policy {
            Policy::Stop => None,
            Policy::Immediately => Some(Duration::ZERO),
            Policy::Backoff => Some(backoff.next_delay()),
        };
        let mut ev = Event::new(EventKind::Disconnected);
        ev.status = ended.status;
        ev.close_code = ended.code;
        ev.data = Bytes::from(ended.reason.into_bytes());
        ev.retry_in = delay;
        ev.attempt = attempt;
        core.queue.push(ev);
        let Some(delay) = delay else {
            core.finish();
            return;
        };
        if !core.idle(delay, &mut commands).await {
            core.finish();
            return;
        }
    }
}

impl<D: Dialect> Core<D> {
    async fn connect(
        &mut self,
        reauthed: &mut bool,
    ) -> Result<(Ws, bool, Vec<Incoming>), transport::ConnectError> {
        let fut = async {
            loop {
                let up = self.dialect.prepare().await?;
                match transport::connect(&self.cfg, &self.tls, &up.url, &up.headers).await {
                    Ok(mut ws) => {
                        self.dialect.on_connected();
                        let mut early = Vec::new();
                        self.dialect.handshake(&mut ws, &mut early).await?;
                        return Ok((ws, up.resume_attempted, early));
                    }
                    Err(e) if e.code == Some(401) && !*reauthed => {
                        *reauthed = true;
                        if !self.dialect.reauthenticate().await? {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match timeout(self.cfg.connect_timeout * 2, fut).await {
            Ok(r) => r,
            Err(_) => Err(transport::ConnectError {
                error: Error::new(Status::ErrConnect, "connect timed out"),
                code: None,
            }),
        }
    }

    /// Serves one open connection; returns how it ended and whether it proved healthy.
    async fn serve(
        &mut self,
        ws: Ws,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> (Ended, bool) {
        let (mut sink, mut stream) = ws.split();
        let write_timeout = self.cfg.receive_timeout;
        let mut healthy = false;
        let mut last_recv = Instant::now();
        let mut next_ping = Instant::now()
            + self
                .dialect
                .first_ping_delay()
                .unwrap_or(self.cfg.ping_interval);

        // Packets and requests submitted while disconnected go out first, in order.
        while let Some(m) = self.unsent_packets.pop_front() {
            if let Err(e) = send(&mut sink, m, write_timeout).await {
                return (e, healthy);
            }
        }
        while let Some(id) = self.unsent.pop_front() {
            if let Some(Pending::Request { message, .. }) = self.pending.get_mut(&id) {
                if let Some(m) = message.take() {
                    if let Err(e) = send(&mut sink, m, write_timeout).await {
                        return (e, healthy);
                    }
                }
            }
        }

        let ended = loop {
            let can_read = self.queue.has_space();
            let next_timer = self.timers.first().map(|(t, _)| *t);
            tokio::select! {
                biased;
                cmd = commands.recv() => {
                    // Every handle gone without a word: like a free without close.
                    let Some(cmd) = cmd else {
                        break self.close_gracefully(&mut sink, &mut stream, CloseIntent::KeepResume).await;
                    };
                    match self.command(cmd, true) {
                        Ok(Some(m)) => if let Err(e) = send(&mut sink, m, write_timeout).await { break e },
                        Ok(None) => {}
                        Err(intent) => break self.close_gracefully(&mut sink, &mut stream, intent).await,
                    }
                }
                msg = stream.next(), if can_read => {
                    last_recv = Instant::now();
                    let (items, read) = self.read_burst(msg, &mut stream);
                    if read.healthy {
                        healthy = true;
                    }
                    // What was decoded is delivered before the end is reported: the resume
                    // point already counts it, so dropping it would lose it for good.
                    self.deliver(items);
                    match read.end {
                        None => {}
                        Some(ReadEnd::Close(code, reason)) => {
                            // Let tungstenite write the close reply, bounded.
                            let _ = timeout(Duration::from_secs(1), sink.close()).await;
                            break Ended::new(self.dialect.close_status(code), code, reason);
                        }
                        Some(ReadEnd::Invalid(e)) => {
                            send_close(&mut sink, 1003, "Invalid data", Duration::from_secs(1)).await;
                            break Ended::new(e.status(), 0, e.message());
                        }
                        Some(ReadEnd::Lost(e)) => break e,
                    }
                }
                () = self.queue.wait_space(), if !can_read => {
                    // Our own stall is not the server's silence.
                    last_recv = Instant::now();
                }
                () = sleep_until(next_ping) => {
                    next_ping = Instant::now() + self.cfg.ping_interval;
                    let id = self.ids.next();
                    let (m, acked) = self.dialect.ping(id);
                    self.pending.insert(id, Pending::Ping { sent_at: Instant::now(), acked });
                    if let Err(e) = send(&mut sink, m, write_timeout).await { break e }
                }
                () = sleep_until(last_recv + self.cfg.receive_timeout), if can_read => {
                    let (code, reason) = self.dialect.timeout_close();
                    send_close(&mut sink, code, reason, Duration::from_secs(1)).await;
                    break Ended::new(Status::ErrReceiveTimeout, 0, "nothing received within the receive timeout");
                }
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    let mut failed = None;
                    for m in self.expire() {
                        if let Err(e) = send(&mut sink, m, write_timeout).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed { break e }
                }
            }
        };
        // Pings die with their connection.
        self.pending
            .retain(|_, p| !matches!(p, Pending::Ping { .. }));
        (ended, healthy)
    }

    async fn close_gracefully(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<Ws, Message>,
        stream: &mut futures_util::stream::SplitStream<Ws>,
        intent: CloseIntent,
    ) -> Ended {
        let (code, reason) = self.dialect.final_close(intent);
        send_close(sink, code, reason, Duration::from_secs(2)).await;
        // Wait (bounded) for the server's close reply so the close handshake completes.
        let _ = timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        Ended {
            status: Status::Ok,
            code,
            reason: reason.to_owned(),
            by_user: true,
        }
    }

    /// Handles a command; `Err(intent)` means close. Online, a request's message is returned for
    /// sending; offline it is kept and sent, in order, when the next connection opens.
    fn command(&mut self, cmd: Command, online: bool) -> Result<Option<Message>, CloseIntent> {
        match cmd {
            Command::Request {
                id,
                command,
                data,
                timeout,
                reply,
            } => {
                let message = self.dialect.request(id, &command, &data);
                let deadline = Instant::now() + timeout;
                self.timers.insert((deadline, id));
                let (kept, out) = if online {
                    (None, Some(message))
                } else {
                    self.unsent.push_back(id);
                    (Some(message), None)
                };
                self.pending.insert(
                    id,
                    Pending::Request {
                        message: kept,
                        reply,
                        deadline,
                    },
                );
                Ok(out)
            }
            Command::Cancel(id) => {
                let cancel =
                    self.resolve_local(id, Status::ErrCancelled, "cancelled by the caller");
                Ok(cancel.filter(|_| online))
            }
            Command::Packet(bytes) => {
                let m = self.dialect.packet(&bytes);
                if online {
                    Ok(m)
                } else {
                    self.unsent_packets.extend(m);
                    Ok(None)
                }
            }
            Command::Close(intent) => Err(intent),
        }
    }

    /// Handles a command while disconnected; returns false on close.
    fn command_offline(&mut self, cmd: Command) -> bool {
        self.command(cmd, false).is_ok()
    }

    /// Fails request `id` locally; returns the cancel message to send if it was on the wire.
    fn resolve_local(&mut self, id: i64, status: Status, why: &str) -> Option<Message> {
        if !matches!(self.pending.get(&id), Some(Pending::Request { .. })) {
            return None;
        }
        let Some(Pending::Request {
            message,
            reply,
            deadline,
        }) = self.pending.remove(&id)
        else {
            return None;
        };
        self.timers.remove(&(deadline, id));
        let was_sent = message.is_none();
        if !was_sent {
            self.unsent.retain(|&u| u != id);
        }
        self.reply(id, reply, Err(Error::new(status, why)));
        if was_sent {
            let cid = self.ids.next();
            self.pending.insert(cid, Pending::Internal);
            return self.dialect.cancel(cid, id, why);
        }
        None
    }

    /// Fails requests whose deadline passed; returns cancel messages for those on the wire.
    fn expire(&mut self) -> Vec<Message> {
        let now = Instant::now();
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            // A timer whose request is gone must not spin the loop.
            self.timers.remove(&(t, id));
            out.extend(self.resolve_local(id, Status::ErrRequestTimeout, "request timed out"));
        }
        out
    }

    fn reply(&mut self, id: i64, to: ReplyTo, result: Result<Bytes, Error>) {
        if let Some(ev) = reply_event(id, to, result) {
            self.queue.push(ev);
        }
    }

    /// Decodes `first` and every further message the transport already holds (up to
    /// [`READ_BURST`], while the queue has room), so a burst reaches the app as one queue
    /// operation and one wake-up rather than one per message. Stops at the first message that
    /// ends the connection; the items decoded before it are returned all the same.
    fn read_burst(
        &mut self,
        first: Option<Result<Message, WsError>>,
        stream: &mut futures_util::stream::SplitStream<Ws>,
    ) -> (Vec<Incoming>, Read) {
        let mut items = Vec::new();
        let mut read = Read {
            healthy: false,
            end: None,
        };
        let mut msg = first;
        let mut budget = READ_BURST;
        loop {
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    read.end = Some(ReadEnd::Close(code, reason));
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    read.healthy = true;
                    if let Err(e) = self.dialect.decode(m, &mut |i| items.push(i)) {
                        read.end = Some(ReadEnd::Invalid(e));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => read.end = Some(ReadEnd::Lost(ws_error(e))),
                None => {
                    read.end = Some(ReadEnd::Lost(Ended::new(
                        Status::ErrConnect,
                        0,
                        "connection closed without a close frame",
                    )))
                }
            }
            budget -= 1;
            if read.end.is_some() || budget == 0 || items.len() >= self.queue.space_left() {
                break;
            }
            match stream.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
        (items, read)
    }

    /// Turns decoded items into events and replies.
    fn deliver(&mut self, items: Vec<Incoming>) {
        // One queue operation (and at most one wake-up of the app) for the whole batch.
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Incoming::Reply { id, ok, data } => match self.pending.remove(&id) {
                    Some(Pending::Request {
                        reply, deadline, ..
                    }) => {
                        self.timers.remove(&(deadline, id));
                        let r = if ok {
                            Ok(data)
                        } else {
                            // `error` data is a JSON string (spec §3.4); anything else is kept raw.
                            let text = serde_json::from_slice::<String>(&data)
                                .unwrap_or_else(|_| String::from_utf8_lossy(&data).into_owned());
                            Err(Error::new(Status::ErrRemote, text))
                        };
                        out.extend(reply_event(id, reply, r));
                    }
                    Some(Pending::Internal) | None => {
                        tracing::debug!(id, "reply to an unknown or finished request ignored");
                    }
                    Some(p @ Pending::Ping { .. }) => {
                        self.pending.insert(id, p);
                    }
                },
                Incoming::Pong { id, server_time_ms } => {
                    // A pong without an id (rwws) answers the oldest ping still waiting.
                    let id = if id != 0 {
                        id
                    } else {
                        self.pending
                            .iter()
                            .find(|(_, p)| matches!(p, Pending::Ping { .. }))
                            .map_or(0, |(id, _)| *id)
                    };
                    let mut ev = Event::new(EventKind::Pong);
                    ev.request_id = id;
                    ev.server_time_ms = server_time_ms;
                    if let Some(Pending::Ping { sent_at, acked }) = self.pending.remove(&id) {
                        ev.rtt = Some(sent_at.elapsed());
                        ev.acked_id = acked;
                        self.dialect.ping_answered(acked);
                    }
                    out.push(ev);
                }
                Incoming::Event { command, id, data } => {
                    let mut ev = Event::new(EventKind::Message);
                    ev.command = command;
                    ev.request_id = id;
                    ev.data = data;
                    out.push(ev);
                }
                Incoming::Packet(data) => {
                    let mut ev = Event::new(EventKind::Packet);
                    ev.data = data;
                    out.push(ev);
                }
            }
        }
        self.queue.push_all(out);
    }

    /// Fails requests that were on the wire: their outcome is unknown after a drop.
    fn fail_sent(&mut self, status: Status, why: &str) {
        let sent: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Request { message: None, .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in sent {
            if let Some(Pending::Request {
                reply, deadline, ..
            }) = self.pending.remove(&id)
            {
                self.timers.remove(&(deadline, id));
                self.reply(id, reply, Err(Error::new(status, why)));
            }
        }
        self.pending
            .retain(|_, p| matches!(p, Pending::Request { .. }));
    }

    /// Waits out a backoff delay while still taking commands; false means close.
    async fn idle(
        &mut self,
        delay: Duration,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let until = Instant::now() + delay;
        loop {
            let next_timer = self.timers.first().map(|(t, _)| *t);
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(c) => if !self.command_offline(c) { return false },
                    None => return false,
                },
                () = sleep_until(next_timer.unwrap_or(until)), if next_timer.is_some_and(|t| t < until) => {
                    let _ = self.expire();
                }
                () = sleep_until(until) => {
                    // Commands that arrived meanwhile are taken before connecting.
                    while let Ok(c) = commands.try_recv() {
                        if !self.command_offline(c) { return false }
                    }
                    return true;
                }
            }
        }
    }

    /// Fails everything left and emits CLOSED.
    fn finish(&mut self) {
        let ids: Vec<i64> = self.pending.keys().copied().collect();
        for id in ids {
            if let Some(Pending::Request { reply, .. }) = self.pending.remove(&id) {
                self.reply(
                    id,
                    reply,
                    Err(Error::new(
                        Status::ErrClientClosed,
                        "client closed before the reply",
                    )),
                );
            }
        }
        self.timers.clear();
        self.unsent.clear();
        self.queue.push(Event::new(EventKind::Closed));
    }
}

/// Sends a close frame, giving up after `limit`: the peer may be gone or not reading.
async fn send_close(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    code: u16,
    reason: &str,
    limit: Duration,
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = timeout(limit, sink.send(Message::Close(Some(frame)))).await;
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    m: Message,
    limit: Duration,
) -> Result<(), Ended> {
    match timeout(limit, sink.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ws_error(e)),
        Err(_) => Err(Ended::new(Status::ErrConnect, 0, "write timed out")),
    }
}

/// Completes a request: a waiting Rust caller gets the result directly; otherwise it becomes
/// the RESPONSE event returned here.
pub(crate) fn reply_event(id: i64, to: ReplyTo, result: Result<Bytes, Error>) -> Option<Event> {
    match to {
        ReplyTo::Oneshot(tx) => {
            let _ = tx.send(result);
            None
        }
        ReplyTo::Event => {
            let mut ev = Event::new(EventKind::Response);
            ev.request_id = id;
            match result {
                Ok(data) => ev.data = data,
                Err(e) => {
                    ev.status = e.status();
                    ev.data = Bytes::from(serde_json::to_string(e.message()).unwrap_or_default());
                }
            }
            Some(ev)
        }
    }
}

fn ws_error(e: WsError) -> Ended {
    match e {
        WsError::Capacity(c) => Ended::new(
            Status::ErrMessageTooLarge,
            0,
            format!("server message too large: {c}"),
        ),
        WsError::Utf8(_) => Ended::new(Status::ErrJson, 0, "text frame is not valid UTF-8"),
        // A peer (or proxy) dropping TCP is a lost connection, not a protocol breach.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ended::new(
            Status::ErrConnect,
            0,
            "connection closed without a close frame",
        ),
        WsError::Protocol(p) => Ended::new(
            Status::ErrProtocol,
            0,
            format!("websocket protocol error: {p}"),
        ),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Ended::new(Status::ErrConnect, 0, "connection closed")
        }
        other => Ended::new(Status::ErrConnect, 0, format!("connection lost: {other}")),
    }
}
