//! The connection supervisor shared by both dialects: it opens connections through a
//! [`Dialect`], keeps them alive, reconnects with backoff, and keeps the app's requests and
//! packets across connections until each has its outcome. Its states are [`State`]; the
//! request rules live in [`requests`], the ping rules in [`pings`].

mod backoff;
pub(crate) mod budget;
pub(crate) mod commands;
pub(crate) mod dialect;
pub(crate) mod local;
mod outbox;
mod pings;
pub(crate) mod requests;
pub(crate) mod resolve;
pub(crate) mod transport;
mod tunnel;
mod uplink;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::ids::IdGen;
use crate::logging::tlog;
use crate::queue::EventQueue;
use crate::stats::{self, ConnectionState, Probe};
use crate::status::{Error, Status};
use backoff::Backoff;
use budget::Outgoing;
use commands::{CommandRx, SessionEnd};
use dialect::{CloseIntent, Dialect, Incoming, Opened, Policy};
use outbox::{Out, Outbox};
use pings::Pings;
use requests::{Outcome, Request, Requests};
use transport::Ws;
use uplink::{PingTrack, Uplink, Wait};

/// Commands from the client handle to its session task.
pub(crate) enum Command {
    /// Send a request (kept until connected).
    Request(Request),
    /// End a request now with CANCELLED; the server is told if it has it.
    Cancel(i64),
    /// Write a message as it is (an rwws packet); kept until connected.
    Send(Outgoing),
    /// Close the session.
    Close(CloseIntent),
    /// Close the connection keeping the server's resume entry and stop reconnecting until
    /// [`Command::Unpause`].
    Pause,
    /// Reconnect after a pause.
    Unpause,
    /// The network changed or the app came back to the foreground: while waiting to
    /// reconnect, connect now; while connected, probe the link and reconnect at once if the
    /// probe goes unanswered.
    Reconnect,
    /// Panic in the session task, as a bug in it would.
    #[cfg(test)]
    Panic,
}

/// Where the supervisor is.
enum State {
    /// Opening a connection.
    Connecting,
    /// A connection is open (boxed: a websocket is large beside the other states).
    Connected(Box<Opened>),
    /// The connection (or the attempt) ended; the dialect's policy picks what follows.
    Disconnected { end: End, healthy: bool },
    /// Waiting out a backoff delay until the instant.
    Waiting(Instant),
    /// Paused by the app: no connection, no attempts, commands and timers still served.
    Paused,
    /// The session is over: the app closed, or the dialect gave up.
    Closed,
}

/// How a connection ended.
enum End {
    /// The app closed it for good, with this close code and reason.
    ByApp { code: u16, reason: String },
    /// The app paused it, with this close code and reason (gomuks: one that keeps the
    /// server's resume entry).
    Paused { code: u16, reason: String },
    /// It failed, or the server closed it. `now`: reconnect at once, whatever the policy (a
    /// probe the app asked for went unanswered: the app knows the network changed).
    Lost {
        status: Status,
        code: u16,
        reason: String,
        now: bool,
    },
}

impl End {
    fn lost(status: Status, code: u16, reason: impl Into<String>) -> End {
        End::Lost {
            status,
            code,
            reason: reason.into(),
            now: false,
        }
    }
}

/// What a command asks of the connection loop.
enum Flow {
    /// Write this message (online only).
    Write(Out),
    /// Nothing to write.
    Nothing,
    /// Close the session.
    Close(CloseIntent),
    /// Pause (see [`Command::Pause`]).
    Pause,
    /// Unpause.
    Unpause,
    /// The app's cue to check the connection (see [`Command::Reconnect`]).
    Reconnect,
}

/// Most messages, and most events, decoded per wake-up of the session task (a compressed
/// gomuks message is a batch of them). The bound keeps a fast server from starving pings,
/// commands and timers, and lets the app start on a burst early: 256 small events take about
/// 0.3 ms; 64 made a stream of small events about 10 % slower, and no bound on the events of
/// compressed messages up to 40 % slower.
const READ_BURST: usize = 256;

/// Why a read burst ended the connection.
enum ReadEnd {
    /// The server sent a close frame (code, reason).
    Close(u16, String),
    /// A message could not be decoded; the connection is closed with 1003.
    Invalid(Error),
    /// The transport failed or ended.
    Lost(End),
}

/// The app-facing half of the session: the queue, and the requests and packets that outlive
/// connections. Apart from the dialect so a connection attempt can run while commands and
/// timers are served.
struct Book {
    queue: Arc<EventQueue>,
    ids: Arc<IdGen>,
    probe: Probe,
    requests: Requests,
    /// Packets written while disconnected, in order.
    unsent_packets: VecDeque<Outgoing>,
    /// [`Book::finish`] ran: the session ended as sessions end.
    finished: bool,
    /// The channel's part in the end: the panic flag, and the gate the switch to CLOSED
    /// takes.
    end: SessionEnd,
    /// Why the session stopped for good on its own (not closed by the app): what the
    /// requests it still holds end with, so an app is not told it closed the client.
    gave_up: Option<String>,
}

impl Drop for Book {
    /// The runtime is never shut down, so a book dropped unfinished is a session that
    /// panicked: the requests it still held get their RESPONSE here, and its packets come
    /// back (before the guard queues DISCONNECTED and CLOSED), so every accepted request is
    /// still answered once and no packet vanishes without a word.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Before the state reads CLOSED: from then on the app's calls are refused, and the
        // refusal must say PANIC, not that the app closed the client.
        self.end.panicked();
        // Nothing here may unwind out of the task: the guard still has to queue the end.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.end_requests(Status::ErrPanic, PANIC_BEFORE_REPLY);
            self.hand_back_packets(Status::ErrPanic);
        }));
    }
}

/// Runs a client's session until it closes for good.
pub(crate) async fn run<D: Dialect>(
    cfg: Arc<Config>,
    queue: Arc<EventQueue>,
    ids: Arc<IdGen>,
    probe: Probe,
    dialect: D,
    commands: CommandRx,
) {
    // Declared before the supervisor, so dropped after it: after a panic the book's
    // requests and packets are answered before those the session never read.
    let mut commands = Commands::new(commands, &queue, &probe);
    let commands = &mut commands.rx;
    let mut sup = Supervisor {
        backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
        cfg,
        dialect,
        attempt: 0,
        resume_asked: false,
        immediate_spent: false,
        copies: Default::default(),
        book: Book::new(queue, ids, probe, commands.end()),
    };
    let mut state = State::Connecting;
    loop {
        state = match state {
            State::Connecting => sup.connecting(commands).await,
            State::Connected(opened) => sup.connected(opened, commands).await,
            State::Disconnected { end, healthy } => sup.disconnected(end, healthy),
            State::Waiting(until) => sup.book.wait(until, commands).await,
            State::Paused => sup.paused(commands).await,
            State::Closed => {
                sup.book.finish(commands);
                return;
            }
        }
    }
}

struct Supervisor<D> {
    cfg: Arc<Config>,
    dialect: D,
    backoff: Backoff,
    /// Connection attempts so far, the current one included.
    attempt: u32,
    /// Whether the current (or last) connection asked the server to resume: what CONNECTING,
    /// CONNECTED and DISCONNECTED report.
    resume_asked: bool,
    /// The dialect's `Immediately` was granted since the last stable connection.
    immediate_spent: bool,
    book: Book,
    /// Small payloads copied out of tungstenite's read buffer (see [`transport::PayloadCopies`]).
    copies: transport::PayloadCopies,
}

impl<D: Dialect> Supervisor<D> {
    /// One connection attempt. Commands and request timers are served meanwhile, so a
    /// request's timeout and cancel take effect on time however long the attempt takes; a
    /// close aborts it.
    async fn connecting(&mut self, commands: &mut CommandRx) -> State {
        self.attempt = self.attempt.saturating_add(1);
        let probe = &self.book.probe;
        probe.counters.set_state(ConnectionState::Connecting);
        stats::add(&probe.counters.connect_attempts, 1);
        tlog!(
            probe.client,
            Info,
            "session",
            "connecting to {} (attempt {})",
            redacted_url(&self.cfg.url),
            self.attempt
        );
        let t0 = Instant::now();
        self.resume_asked = self.dialect.will_resume();
        let mut ev = Event::new(EventKind::Connecting);
        ev.attempt = self.attempt;
        ev.resume_attempted = self.resume_asked;
        self.book.queue.push(ev);
        let limit = self.cfg.connect_timeout * 2;
        let attempt = timeout(limit, self.dialect.open());
        tokio::pin!(attempt);
        let result = loop {
            match self.book.offline(commands, &mut attempt).await {
                Offline::Closed => return State::Closed,
                Offline::Ready(r) => break r,
                Offline::Pause => {
                    return State::Disconnected {
                        end: End::Paused {
                            code: 0,
                            reason: "paused by the app".into(),
                        },
                        healthy: false,
                    }
                }
                // An attempt is running already.
                Offline::Unpause | Offline::Reconnect => {}
            }
        };
        let client = self.book.probe.client;
        match &result {
            Ok(Ok(_)) => tlog!(
                client,
                Info,
                "session",
                "connected in {} ms (attempt {})",
                t0.elapsed().as_millis(),
                self.attempt
            ),
            Ok(Err(e)) => tlog!(
                client,
                Warn,
                "session",
                "attempt {} failed after {} ms: {}",
                self.attempt,
                t0.elapsed().as_millis(),
                e.error
            ),
            Err(_) => tlog!(
                client,
                Warn,
                "session",
                "attempt {} timed out after {} ms",
                self.attempt,
                t0.elapsed().as_millis()
            ),
        }
        match result {
            Ok(Ok(opened)) => State::Connected(Box::new(opened)),
            Ok(Err(e)) => State::Disconnected {
                end: End::lost(e.error.status(), e.code.unwrap_or(0), e.error.message()),
                healthy: false,
            },
            Err(_) => State::Disconnected {
                end: End::lost(Status::ErrConnect, 0, timed_out_why(&self.cfg, limit)),
                healthy: false,
            },
        }
    }

    async fn connected(&mut self, opened: Box<Opened>, commands: &mut CommandRx) -> State {
        let c = &self.book.probe.counters;
        c.set_state(ConnectionState::Connected);
        stats::add(&c.connections, 1);
        self.resume_asked = opened.resume_attempted;
        let mut ev = Event::new(EventKind::Connected);
        ev.attempt = self.attempt;
        ev.resume_attempted = self.resume_asked;
        self.book.queue.push(ev);
        let Opened { ws, early, .. } = *opened;
        let mut pings = Pings::default();
        self.book.deliver(early, &mut pings);
        let t0 = Instant::now();
        let (end, healthy) = self.serve(ws, pings, commands).await;
        // A message over the size limit is no sign of health even after data: a buffered
        // event that large comes back with every resume, and a backoff that started over
        // each time would reconnect in a tight loop.
        let too_large = matches!(
            end,
            End::Lost {
                status: Status::ErrMessageTooLarge,
                ..
            }
        );
        let lasted = t0.elapsed() >= self.dialect.stable_after();
        let healthy = healthy && !too_large && (lasted || self.dialect.proved());
        State::Disconnected { end, healthy }
    }

    /// Reports the end of a connection and picks what follows.
    fn disconnected(&mut self, end: End, healthy: bool) -> State {
        let paused = matches!(end, End::Paused { .. });
        // A stable connection earns a fresh backoff and one more at-once reconnect.
        if healthy {
            self.backoff.reset();
            self.immediate_spent = false;
        }
        let (status, code, reason, policy) = match end {
            End::ByApp { code, reason } => {
                self.book
                    .fail_sent(Status::ErrClientClosed, requests::CLOSED_BEFORE_REPLY);
                (Status::Ok, code, reason, Policy::Stop)
            }
            End::Paused { code, reason } => {
                self.book.fail_sent(
                    Status::ErrDisconnected,
                    "connection paused before the reply",
                );
                (Status::Ok, code, reason, Policy::Stop)
            }
            End::Lost {
                status,
                code,
                reason,
                now,
            } => {
                self.book
                    .fail_sent(Status::ErrDisconnected, "connection lost before the reply");
                let policy = match (now, self.dialect.policy(status, code)) {
                    // The app's cue: it knows the network changed.
                    (true, _) => Policy::Immediately,
                    (false, Policy::Immediately) if self.immediate_spent => Policy::Backoff,
                    (false, Policy::Immediately) => {
                        self.immediate_spent = true;
                        Policy::Immediately
                    }
                    (false, p) => p,
                };
                (status, code, reason, policy)
            }
        };
        let delay = match policy {
            Policy::Stop => None,
            Policy::Immediately => Some(Duration::ZERO),
            Policy::Backoff => Some(self.backoff.next_delay()),
        };
        let client = self.book.probe.client;
        let note = self.dialect.close_note(code);
        if delay.is_none() && !paused && status != Status::Ok {
            self.book.give_up(status, code, &reason);
        }
        match delay {
            None if paused => tlog!(
                client,
                Info,
                "session",
                "paused by the app (close code {code}); no reconnect until unpaused"
            ),
            None if status == Status::Ok => tlog!(
                client,
                Info,
                "session",
                "closed by the app (close code {code})"
            ),
            None => tlog!(
                client,
                Error,
                "session",
                "connection ended for good: {} ({}) {reason}",
                status.description(),
                code_label(code)
            ),
            Some(d) if note.is_some() => tlog!(
                client,
                Warn,
                "session",
                "disconnected: {} ({}) {reason}; {}; reconnecting in {} ms",
                status.description(),
                code_label(code),
                note.unwrap_or_default(),
                d.as_millis()
            ),
            Some(d) => tlog!(
                client,
                Info,
                "session",
                "disconnected: {} ({}) {reason}; reconnecting in {} ms",
                status.description(),
                code_label(code),
                d.as_millis()
            ),
        }
        match delay {
            Some(_) => self.book.probe.counters.set_state(ConnectionState::Waiting),
            None if paused => self.book.probe.counters.set_state(ConnectionState::Paused),
            None => self.book.stop(),
        }
        let mut ev = Event::new(EventKind::Disconnected);
        ev.status = status;
        ev.close_code = code;
        ev.data = Bytes::from(reason.into_bytes());
        ev.retry_in = delay;
        ev.attempt = self.attempt;
        ev.resume_attempted = self.resume_asked;
        self.book.queue.push(ev);
        match delay {
            None if paused => State::Paused,
            None => State::Closed,
            Some(d) => State::Waiting(Instant::now() + d),
        }
    }

    /// Paused: no connection and no attempt until the app unpauses; commands and request
    /// timers are still served.
    async fn paused(&mut self, commands: &mut CommandRx) -> State {
        let mut never = std::future::pending::<()>();
        loop {
            match self.book.offline(commands, &mut never).await {
                Offline::Closed => return State::Closed,
                Offline::Unpause => {
                    // The app chose the moment: no backoff left over from before the pause.
                    self.backoff.reset();
                    tlog!(
                        self.book.probe.client,
                        Info,
                        "session",
                        "unpaused by the app"
                    );
                    return State::Connecting;
                }
                Offline::Ready(()) | Offline::Pause | Offline::Reconnect => {}
            }
        }
    }

    /// Serves one open connection; returns how it ended and whether it proved healthy.
    /// What it could not write goes back to the book for the next connection.
    async fn serve(&mut self, ws: Ws, pings: Pings, commands: &mut CommandRx) -> (End, bool) {
        let mut out = ConnectionOutbox {
            outbox: Outbox::default(),
            leftovers: Leftovers::new(&self.book.queue, &self.book.probe, self.book.end.clone()),
        };
        let r = self.serve_with(ws, pings, commands, &mut out.outbox).await;
        let unwritten = std::mem::take(&mut out.outbox).into_unwritten();
        self.book.requests.put_back(unwritten.requests);
        for m in unwritten.packets.into_iter().rev() {
            self.book.unsent_packets.push_front(m);
        }
        r
    }

    async fn serve_with(
        &mut self,
        ws: Ws,
        mut pings: Pings,
        commands: &mut CommandRx,
        outbox: &mut Outbox,
    ) -> (End, bool) {
        // SAFETY: `sink` and `stream`, which own the socket, live until this function
        // returns, as `uplink` does.
        let uplink = unsafe { ws.get_ref().uplink() };
        let (mut sink, mut stream) = ws.split();
        outbox.meter(uplink.meter());
        // A write the peer takes no byte of for this long ends the connection.
        let write_timeout = self.cfg.receive_timeout;
        let mut healthy = false;
        let mut last_recv = Instant::now();
        let mut next_ping = Instant::now() + self.dialect.first_ping_delay(self.cfg.ping_interval);
        // An unanswered ping (see `Due`).
        let mut due: Option<Due> = None;
        // The receive timeout, put off while an unanswered ping queued behind our own backlog
        // awaits its verdict (see uplink.rs).
        let mut quiet: Option<Instant> = None;
        // While the outbox is busy: when to check that the peer took a byte, and how many
        // bytes had gone out by then.
        let mut stall: Option<(Instant, u64)> = None;
        // A credential renewal running beside the connection (gomuks: the token, spec §1.2).
        let mut renewal: Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = dialect::Renewal> + Send>>,
        > = None;

        // Packets and requests made while disconnected go out first, in order.
        for m in self.book.unsent_packets.drain(..) {
            outbox.push(Out::Packet(m));
        }
        for (id, m) in self.book.requests.take_unsent() {
            outbox.push(Out::Request(id, m));
        }

        // Whether the last turn found the event queue full (reading stopped).
        let mut was_full = false;
        let end = loop {
            let can_read = self.book.queue.has_space();
            if can_read && was_full {
                // Our own stall is not the server's silence: the clocks restart now, at the
                // first turn with room, whichever branch woke it (a restart left to the
                // branch that waits for room was skipped when another won the race, and
                // the stale receive timeout then raced the first read). A ping still
                // unanswered keeps its deadline, from now (the app's probe after a cue must
                // not be forgotten because the app was behind).
                last_recv = Instant::now();
                quiet = None;
                pings.unmeasurable();
                if let Some(d) = due.as_mut() {
                    d.at = d.at.max(last_recv + self.cfg.pong_timeout);
                    d.track.restart(uplink.backlog());
                }
                // Nor is a peer that stopped taking our bytes while we stopped taking its.
                if let Some(s) = stall.as_mut() {
                    *s = (
                        s.0.max(last_recv + write_timeout),
                        wire_out(&self.book.probe.counters),
                    );
                }
            }
            was_full = !can_read;
            let counters = &self.book.probe.counters;
            stall = match (outbox.busy(), stall) {
                (false, _) => None,
                (true, None) => Some((Instant::now() + write_timeout, wire_out(counters))),
                (true, kept) => kept,
            };
            let next_timer = self.book.requests.next_deadline();
            let renew_at = match renewal {
                Some(_) => None,
                None => self.dialect.renew_at().map(Instant::from_std),
            };
            // Not biased: neither a flood of requests nor a fast server may starve the other
            // branches (reads, pings, the receive timeout, request deadlines).
            tokio::select! {
                cmd = commands.recv() => {
                    // Every handle gone without a word: like a free without close.
                    let flow = match cmd {
                        Some(cmd) => self.book.command(cmd, true),
                        None => Flow::Close(CloseIntent::KeepResume),
                    };
                    match flow {
                        Flow::Write(out) => {
                            outbox.push(out);
                            // Written at once when the socket takes it: a reply is awaited,
                            // and the branch below would take one more turn of the loop.
                            let now = std::future::poll_fn(|cx| write(outbox, &mut sink, &self.book.probe.counters, cx));
                            if let Some(Err(e)) = now.now_or_never() { break ws_error(e) }
                        }
                        Flow::Nothing | Flow::Unpause => {}
                        Flow::Close(intent) => {
                            let (code, reason) = self.close_gracefully(&mut sink, &mut stream, outbox, &mut pings, intent).await;
                            break End::ByApp { code, reason };
                        }
                        Flow::Pause => {
                            let (code, reason) = self.close_gracefully(&mut sink, &mut stream, outbox, &mut pings, CloseIntent::KeepResume).await;
                            break End::Paused { code, reason };
                        }
                        Flow::Reconnect => {
                            tlog!(self.book.probe.client, Info, "session", "the app asked to check the connection: probing");
                            due = Some(match due.take() {
                                // A ping already awaiting its pong gives the verdict the probe
                                // asks for, no later than a new one would: no second ping, so
                                // cues in quick succession (a flapping network) send one.
                                Some(d) => Due { probe: true, ..d },
                                // A ping now; the deadline below turns its silence into a
                                // reconnect.
                                None => {
                                    let (m, at) = self.ping(&mut pings);
                                    // Tracked before it is queued: its place is the next one.
                                    let d = self.due(at, &uplink, outbox, true);
                                    outbox.push(Out::Control(m));
                                    d
                                }
                            });
                        }
                    }
                }
                msg = stream.next(), if can_read => {
                    last_recv = Instant::now();
                    due = None;
                    quiet = None;
                    let (items, read_ok, read_end) = self.read_burst(msg, &mut stream);
                    healthy |= read_ok;
                    // What was decoded is delivered before the end is reported: the resume
                    // point already counts it, so dropping it would lose it for good.
                    self.book.deliver(items, &mut pings);
                    match read_end {
                        None => {}
                        Some(ReadEnd::Close(code, reason)) => {
                            // Let tungstenite write the close reply, bounded.
                            let _ = timeout(Duration::from_secs(1), sink.close()).await;
                            break End::lost(self.dialect.close_status(code), code, reason);
                        }
                        Some(ReadEnd::Invalid(e)) => {
                            tlog!(self.book.probe.client, Warn, "session", "closing with 1003: {e}");
                            send_close(&mut sink, 1003, "Invalid data", Duration::from_secs(1)).await;
                            break End::lost(e.status(), 0, e.message());
                        }
                        Some(ReadEnd::Lost(e)) => break e,
                    }
                }
                // Only wakes the loop: its top restarts the clocks once there is room.
                () = self.book.queue.wait_space(), if !can_read => {}
                () = sleep_until(next_ping) => {
                    next_ping = Instant::now() + self.cfg.ping_interval;
                    let (m, at) = self.ping(&mut pings);
                    if due.is_none() {
                        due = Some(self.due(at, &uplink, outbox, false));
                    }
                    outbox.push(Out::Control(m));
                }
                () = sleep_until(due.as_ref().map_or_else(Instant::now, |d| d.at)), if due.is_some() && can_read => {
                    let Some(mut d) = due.take() else { continue };
                    if wire_in(&self.book.probe.counters) == d.bytes_in {
                        d.track.flushed(outbox.control_mark());
                        if let Some(why) = d.track.wait_more(uplink.backlog()) {
                            self.log_waiting(why);
                            d.at = Instant::now() + self.cfg.pong_timeout;
                            due = Some(d);
                            continue;
                        }
                        let ms = self.cfg.pong_timeout.as_millis();
                        let (code, reason) = self.dialect.timeout_close();
                        send_close(&mut sink, code, reason, Duration::from_secs(1)).await;
                        break End::Lost {
                            status: Status::ErrReceiveTimeout,
                            code: 0,
                            reason: format!("no answer to a ping within {ms} ms"),
                            now: d.probe,
                        };
                    }
                }
                () = sleep_until(quiet.unwrap_or(last_recv + self.cfg.receive_timeout)), if can_read => {
                    // The ping's deadline judges the link meanwhile; this comes after its verdict.
                    if let Some(d) = due.as_mut() {
                        d.track.flushed(outbox.control_mark());
                    }
                    if let Some(d) = due.as_ref().filter(|d| d.track.pending(uplink.backlog())) {
                        quiet = Some(d.at.max(Instant::now()) + self.cfg.pong_timeout);
                        continue;
                    }
                    let (code, reason) = self.dialect.timeout_close();
                    send_close(&mut sink, code, reason, Duration::from_secs(1)).await;
                    break End::lost(Status::ErrReceiveTimeout, 0, "nothing received within the receive timeout");
                }
                () = sleep_until(renew_at.unwrap_or_else(Instant::now)), if renew_at.is_some() => {
                    renewal = Some(self.dialect.renew());
                }
                r = async { match renewal.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if renewal.is_some() => {
                    renewal = None;
                    self.dialect.renewed(r);
                }
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    for out in self.book.expire() {
                        outbox.push(out);
                    }
                }
                r = std::future::poll_fn(|cx| write(outbox, &mut sink, counters, cx)), if outbox.busy() => {
                    if let Err(e) = r { break ws_error(e) }
                }
                // Frozen while the queue is full, as the receive timeout and the pong deadline
                // are: a server blocked writing to us stops reading our bytes too.
                () = sleep_until(stall.map_or_else(Instant::now, |s| s.0)), if stall.is_some() && can_read => {
                    let out_now = wire_out(&self.book.probe.counters);
                    if stall.is_some_and(|(_, out_then)| out_now == out_then) {
                        let ms = write_timeout.as_millis();
                        break End::lost(Status::ErrConnect, 0, format!("write stalled: the peer took no byte within {ms} ms"));
                    }
                    stall = Some((Instant::now() + write_timeout, out_now));
                }
            }
        };
        (end, healthy)
    }

    /// The deadline of a ping made at `at`, about to be pushed to `outbox`.
    fn due(&self, at: Instant, uplink: &Uplink, outbox: &Outbox, probe: bool) -> Due {
        Due {
            at: at + self.cfg.pong_timeout,
            bytes_in: wire_in(&self.book.probe.counters),
            probe,
            track: PingTrack::sent(
                uplink.backlog(),
                outbox.ahead_of_next_control(),
                outbox.next_control_place(),
            ),
        }
    }

    /// A pong deadline put off: the ping was queued behind our own bytes.
    fn log_waiting(&self, why: Wait) {
        let ms = self.cfg.pong_timeout.as_millis();
        let why = match why {
            Wait::Moving(n) => {
                format!("the peer is still taking our bytes ({n} unacknowledged)")
            }
            Wait::Arrived => "the ping has only just reached the peer".to_owned(),
        };
        tlog!(
            self.book.probe.client,
            Debug,
            "session",
            "no pong from the server yet, but {why}: waiting {ms} ms more"
        );
    }

    /// The next keepalive ping, registered as waiting for its pong; returns it and when it
    /// was made.
    fn ping(&mut self, pings: &mut Pings) -> (Message, Instant) {
        let id = self.book.ids.next();
        let (m, acked) = self.dialect.ping(id);
        let now = Instant::now();
        pings.sent(id, now, acked);
        (m, now)
    }

    /// Writes what the outbox holds, then our close frame, within two seconds (the app's sends
    /// before its close go out first, as it made them; what does not fit goes back to the
    /// book), and waits (bounded) for the server's close; returns the code and reason sent.
    async fn close_gracefully(
        &mut self,
        sink: &mut SplitSink<Ws, Message>,
        stream: &mut SplitStream<Ws>,
        outbox: &mut Outbox,
        pings: &mut Pings,
        intent: CloseIntent,
    ) -> (u16, String) {
        let (code, reason) = self.dialect.final_close(intent);
        let counters = self.book.probe.counters.clone();
        let give_up = Instant::now() + Duration::from_secs(2);
        // What was sent before the close goes out first, then the close frame. Deadlines still
        // end requests meanwhile, as in the session's loop: the cancel of one still here takes
        // it out (`Outbox::push`), so the server never gets a request the app was told timed
        // out; that of one already written goes before the close frame.
        let flushed = loop {
            let next_timer = self.book.requests.next_deadline();
            tokio::select! {
                r = std::future::poll_fn(|cx| write(outbox, sink, &counters, cx)) => break r.is_ok(),
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    for out in self.book.expire() {
                        outbox.push(out);
                    }
                }
                () = sleep_until(give_up) => break false,
            }
        };
        if flushed {
            let _ = tokio::time::timeout_at(give_up, sink.send(close_message(code, reason))).await;
        }
        // Wait (bounded) for the server's close reply so the close handshake completes. What
        // comes before it is delivered while the queue has room: replies to what was just
        // flushed (otherwise ended as DISCONNECTED, outcome unknown) and events that a resume
        // would not replay. Once one message finds no room, it and every later one are dropped
        // uncounted: one counted after a gap would move the resume point past it, and a
        // compressed stream cannot be decoded past one. Buffered events come again with the
        // resume. Deadlines still end requests; their cancels are not written after the close
        // frame (the server drops every call at the close anyway).
        let mut dropping = false;
        let _ = timeout(Duration::from_secs(2), async {
            loop {
                let next_timer = self.book.requests.next_deadline();
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        dropping |= !self.book.queue.has_space();
                        if !dropping {
                            let (items, _, end) = self.read_burst(Some(msg), stream);
                            self.book.deliver(items, pings);
                            if end.is_some() {
                                break;
                            }
                        } else if !matches!(msg, Ok(ref m) if !m.is_close()) {
                            break;
                        }
                    }
                    () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                        drop(self.book.expire());
                    }
                }
            }
        })
        .await;
        (code, reason.to_owned())
    }

    /// Decodes `first` and every further message the transport already holds (up to
    /// [`READ_BURST`] messages and events, while the queue has room), so a burst reaches the
    /// app as one queue operation and one wake-up rather than one per message. Stops at the
    /// first message that ends the connection; the items decoded before it are returned all
    /// the same. The middle value says whether a data message arrived (the connection works).
    fn read_burst(
        &mut self,
        first: Option<Result<Message, WsError>>,
        stream: &mut SplitStream<Ws>,
    ) -> (Vec<Incoming>, bool, Option<ReadEnd>) {
        let mut items = Vec::new();
        let mut healthy = false;
        let mut end = None;
        let mut msg = first;
        let mut budget = READ_BURST;
        // The consumer only makes room, so the room seen now is a lower bound for the burst.
        // Capped, because the app sees nothing of a burst until it is decoded: 16 compressed
        // events per message made bursts of 4,096 events, which left the app idle meanwhile.
        let room = self.book.queue.space_left().min(READ_BURST);
        loop {
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    end = Some(ReadEnd::Close(code, reason));
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    healthy = true;
                    stats::add(&self.book.probe.counters.messages_received, 1);
                    let m = if self.dialect.keeps_slices_of(&m) {
                        self.copies.rehome(m)
                    } else {
                        m
                    };
                    if let Err(e) = self.dialect.decode(m, &mut |i| items.push(i)) {
                        end = Some(ReadEnd::Invalid(e));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => end = Some(ReadEnd::Lost(ws_error(e))),
                None => {
                    end = Some(ReadEnd::Lost(End::lost(
                        Status::ErrConnect,
                        0,
                        "connection closed without a close frame",
                    )))
                }
            }
            budget -= 1;
            if end.is_some() || budget == 0 || items.len() >= room {
                break;
            }
            match stream.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
        (items, healthy, end)
    }
}

/// Names the code a connection ended with: a websocket close code (1000 and up), or the HTTP
/// status of a refused upgrade, login or proxy, which a reader must not look up as the other.
fn code_label(code: u16) -> String {
    match code {
        0 => "no code".to_owned(),
        1..=999 => format!("HTTP {code}"),
        _ => format!("close code {code}"),
    }
}

/// How an offline wait ended.
enum Offline<T> {
    /// The app closed (or dropped every handle).
    Closed,
    /// The future given to [`Book::offline`] finished.
    Ready(T),
    /// The app paused.
    Pause,
    /// The app unpaused.
    Unpause,
    /// The app's cue to connect now.
    Reconnect,
}

impl Book {
    fn new(queue: Arc<EventQueue>, ids: Arc<IdGen>, probe: Probe, end: SessionEnd) -> Book {
        Book {
            queue,
            ids,
            probe,
            requests: Requests::default(),
            unsent_packets: VecDeque::new(),
            finished: false,
            end,
            gave_up: None,
        }
    }

    /// Serves commands and request timers while disconnected, until `work` finishes or the
    /// app closes.
    async fn offline<F: std::future::Future + Unpin>(
        &mut self,
        commands: &mut CommandRx,
        work: &mut F,
    ) -> Offline<F::Output> {
        loop {
            let next_timer = self.requests.next_deadline();
            // Not biased: an app flooding requests must not starve the connection attempt.
            tokio::select! {
                cmd = commands.recv() => match cmd.map(|c| self.command(c, false)) {
                    None | Some(Flow::Close(_)) => return Offline::Closed,
                    Some(Flow::Pause) => return Offline::Pause,
                    Some(Flow::Unpause) => return Offline::Unpause,
                    Some(Flow::Reconnect) => return Offline::Reconnect,
                    Some(Flow::Write(_) | Flow::Nothing) => {}
                },
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    // Offline, nothing is on the wire: there is no cancel to send.
                    let _ = self.expire();
                }
                out = &mut *work => return Offline::Ready(out),
            }
        }
    }

    /// Waits out a backoff delay while serving commands and timers, and then, if the app's
    /// queue is full, for room in it: an app that takes no events (backgrounded, in poll mode)
    /// would otherwise gather a CONNECTING and a DISCONNECTED per attempt for as long as an
    /// outage lasts, and a connection could deliver nothing meanwhile. The app's cues still
    /// connect at once.
    async fn wait(&mut self, until: Instant, commands: &mut CommandRx) -> State {
        let queue = self.queue.clone();
        let client = self.probe.client;
        let mut sleep = Box::pin(async move {
            sleep_until(until).await;
            if !queue.has_space() {
                tlog!(
                    client,
                    Info,
                    "session",
                    "the app's event queue is full: the next attempt waits for room in it"
                );
                queue.wait_space().await;
            }
        });
        loop {
            match self.offline(commands, &mut sleep).await {
                Offline::Closed => return State::Closed,
                Offline::Ready(()) => return State::Connecting,
                Offline::Reconnect => {
                    tlog!(
                        self.probe.client,
                        Info,
                        "session",
                        "the app asked to reconnect: connecting now"
                    );
                    return State::Connecting;
                }
                Offline::Pause => {
                    tlog!(
                        self.probe.client,
                        Info,
                        "session",
                        "paused by the app; no reconnect until unpaused"
                    );
                    self.probe.counters.set_state(ConnectionState::Paused);
                    return State::Paused;
                }
                Offline::Unpause => {}
            }
        }
    }

    /// Handles a command. Online, what it produces is written now; offline it is kept and
    /// written, in order, when the next connection opens.
    fn command(&mut self, cmd: Command, online: bool) -> Flow {
        let flow = self.command_inner(cmd, online);
        self.count_in_flight();
        flow
    }

    fn count_in_flight(&self) {
        self.probe.counters.requests_in_flight.store(
            self.requests.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn command_inner(&mut self, cmd: Command, online: bool) -> Flow {
        match cmd {
            Command::Request(r) => {
                let id = r.id;
                match self.requests.add(r, online) {
                    Some(m) => Flow::Write(Out::Request(id, m)),
                    None => Flow::Nothing,
                }
            }
            Command::Cancel(id) => {
                match self.end_request(id, Status::ErrCancelled, CANCELLED_BY_CALLER) {
                    Some(m) if online => Flow::Write(Out::Cancel(id, m)),
                    _ => Flow::Nothing,
                }
            }
            Command::Send(m) if online => Flow::Write(Out::Packet(m)),
            Command::Send(m) => {
                self.unsent_packets.push_back(m);
                Flow::Nothing
            }
            Command::Close(intent) => Flow::Close(intent),
            Command::Pause => Flow::Pause,
            Command::Unpause => Flow::Unpause,
            Command::Reconnect => Flow::Reconnect,
            #[cfg(test)]
            Command::Panic => panic!("injected by a test"),
        }
    }

    /// Ends request `id` here; returns the cancel to send if the server has it.
    fn end_request(&mut self, id: i64, status: Status, why: &str) -> Option<Message> {
        let ended = self.requests.end(id, status, why)?;
        // Counters first: an app that reads them after the RESPONSE must see it counted.
        self.count_in_flight();
        if let Some(ev) = ended.outcome.into_event() {
            self.queue.push(ev);
        }
        ended.cancel.map(|encode| encode(self.ids.next(), id, why))
    }

    /// Ends requests whose deadline passed; returns cancels for those on the wire.
    fn expire(&mut self) -> Vec<Out> {
        let mut cancels = Vec::new();
        let mut out = Vec::new();
        for ended in self.requests.expire(Instant::now()) {
            let id = ended.outcome.id;
            stats::add(&self.probe.counters.requests_timed_out, 1);
            tlog!(
                self.probe.client,
                Debug,
                "session",
                "request {id} timed out"
            );
            out.extend(ended.outcome.into_event());
            if let Some(encode) = ended.cancel {
                cancels.push(Out::Cancel(
                    id,
                    encode(self.ids.next(), id, "request timed out"),
                ));
            }
        }
        self.count_in_flight();
        self.push_events(out);
        cancels
    }

    fn push_events(&self, events: Vec<Event>) {
        push_events(&self.queue, events);
    }

    /// Hands every packet still waiting back to the app, one UNSENT each with `status`; the
    /// state must be CLOSED already (see [`unsent_events`]).
    fn hand_back_packets(&mut self, status: Status) {
        let unsent = unsent_events(self.unsent_packets.drain(..), status);
        self.push_events(unsent);
    }

    fn push_outcomes(&self, outcomes: Vec<Outcome>) {
        self.push_events(
            outcomes
                .into_iter()
                .filter_map(Outcome::into_event)
                .collect(),
        );
    }

    /// Fails requests that were on the wire: their outcome is unknown after a drop.
    fn fail_sent(&mut self, status: Status, why: &str) {
        let failed = self.requests.fail_sent(status, why);
        self.count_in_flight();
        self.push_outcomes(failed);
    }

    /// Turns decoded items into events and request outcomes, as one queue operation (and at
    /// most one wake-up of the app).
    fn deliver(&mut self, items: Vec<Incoming>, pings: &mut Pings) {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Incoming::Reply { id, ok, data } => {
                    let result = if ok {
                        Ok(data)
                    } else {
                        // `error` data is a JSON string (gomuks-rpc.md §3.4); anything else is
                        // kept raw.
                        let text = serde_json::from_slice::<String>(&data)
                            .unwrap_or_else(|_| String::from_utf8_lossy(&data).into_owned());
                        Err(Error::new(Status::ErrRemote, text))
                    };
                    self.answer(id, result, &mut out);
                }
                Incoming::Failed { id, error } => self.answer(id, Err(error), &mut out),
                Incoming::Pong { id, server_time_ms } => {
                    let answered = pings.answered(id, Instant::now());
                    let mut ev = Event::new(EventKind::Pong);
                    ev.request_id = answered.id;
                    ev.server_time_ms = server_time_ms;
                    ev.rtt = answered.rtt;
                    if let Some(rtt) = answered.rtt {
                        self.probe.counters.set_rtt(rtt);
                    }
                    ev.acked_id = answered.acked;
                    out.push(ev);
                }
                Incoming::Event {
                    command,
                    id,
                    data,
                    era,
                } => {
                    stats::add(&self.probe.counters.events_received, 1);
                    let mut ev = Event::new(EventKind::Message);
                    ev.command = command;
                    ev.request_id = id;
                    ev.data = data;
                    ev.resume_era = era;
                    out.push(ev);
                }
                Incoming::Packet(data) => {
                    stats::add(&self.probe.counters.events_received, 1);
                    let mut ev = Event::new(EventKind::Packet);
                    ev.data = data;
                    out.push(ev);
                }
                Incoming::Resumed(outcome) => {
                    let mut ev = Event::new(EventKind::Resumed);
                    ev.resume_outcome = Some(outcome);
                    out.push(ev);
                }
                // Only while the request is pending: a late report after its timeout or
                // cancel would follow its RESPONSE.
                Incoming::Progress { id, progress } if self.requests.contains(id) => {
                    let mut ev = Event::new(EventKind::Progress);
                    ev.request_id = id;
                    ev.progress = Some(progress);
                    ev.data = Bytes::from(format!("{progress}"));
                    out.push(ev);
                }
                Incoming::Chunk { id, data } if self.requests.contains(id) => {
                    let mut ev = Event::new(EventKind::Chunk);
                    ev.request_id = id;
                    ev.data = data;
                    out.push(ev);
                }
                Incoming::Progress { .. } | Incoming::Chunk { .. } => {}
            }
        }
        self.queue.push_all(out);
    }

    /// Request `id`'s outcome, unless it has one already (a reply after its timeout or
    /// cancel is dropped).
    fn answer(&mut self, id: i64, result: Result<Bytes, Error>, out: &mut Vec<Event>) {
        match self.requests.reply(id, result) {
            Some(o) => {
                out.extend(o.into_event());
                self.count_in_flight();
            }
            None => tlog!(
                self.probe.client,
                Debug,
                "session",
                "reply to request {id} ignored: unknown, or already ended (timed out or cancelled)"
            ),
        }
    }

    /// The state turns CLOSED, and from then on the app's commands are refused (see
    /// [`SessionEnd::stop`]).
    fn stop(&self) {
        self.end.stop(&self.probe.counters);
    }

    /// The session is over: every request left ends with `status`, and the state is CLOSED.
    fn end_requests(&mut self, status: Status, why: &str) {
        // Closed first: the bytes the ended requests give back announce no SEND_READY.
        self.stop();
        self.fail_all(status, why);
    }

    /// Every request left ends with `status`, whether its message left or still waits.
    fn fail_all(&mut self, status: Status, why: &str) {
        let failed = self.requests.fail_all(status, why);
        self.count_in_flight();
        self.push_outcomes(failed);
    }

    /// The session stops for good with `status` (close code `code`, `reason`), not by the
    /// app's wish: the requests it still holds will say so when it finishes.
    fn give_up(&mut self, status: Status, code: u16, reason: &str) {
        let mut why = format!(
            "the client stopped for good before the reply: {}",
            status.description()
        );
        if code != 0 {
            // A close code, or the HTTP status of a refused upgrade or login.
            why.push_str(&format!(" (code {code})"));
        }
        if !reason.is_empty() {
            why.push_str(": ");
            why.push_str(reason);
        }
        self.gave_up = Some(why);
    }

    /// Ends the session: every request left, and every request that reached the channel
    /// before it closed, gets CLIENT_CLOSED (with why the client gave up, if it did), or
    /// CANCELLED if a cancel the session had not read yet names it; then CLOSED, the last
    /// event.
    fn finish(&mut self, commands: &mut CommandRx) {
        self.finished = true;
        let gave_up = self.gave_up.take();
        let why = gave_up.as_deref().unwrap_or(requests::CLOSED_BEFORE_REPLY);
        // CLOSED, then the channel closes: whatever the app sent before CLOSED that nothing
        // read is in `left`. A cancel among it was answered OK, so it ends its request as
        // asked if the request is still open, as one read in time would have.
        self.stop();
        let left = commands.close_and_drain();
        for cmd in &left {
            if let Command::Cancel(id) = cmd {
                let _ = self.end_request(*id, Status::ErrCancelled, CANCELLED_BY_CALLER);
            }
        }
        // The state is CLOSED already, so the bytes given back announce no SEND_READY.
        self.fail_all(Status::ErrClientClosed, why);
        self.hand_back_packets(Status::ErrClientClosed);
        tlog!(
            self.probe.client,
            Info,
            "session",
            "client closed; CLOSED is the last event"
        );
        let mut out = answer_left(left, Status::ErrClientClosed, why, Cancels::Honour);
        out.push(Event::new(EventKind::Closed));
        self.queue.push_all(out);
    }
}

/// Closes the command channel and answers every request still in it with CLIENT_CLOSED (or
/// CANCELLED, if a cancel in it names the request) and hands every packet in it back
/// (UNSENT), then pushes CLOSED. Once the channel is closed no
/// request or packet can enter it (the client's send fails and the app gets an error), so
/// none is left without an outcome. The state must be CLOSED already: the bytes given back
/// must not announce SEND_READY.
pub(crate) fn close_channel(commands: &mut CommandRx, queue: &EventQueue, why: &str) {
    let left = commands.close_and_drain();
    let mut out = answer_left(left, Status::ErrClientClosed, why, Cancels::Honour);
    out.push(Event::new(EventKind::Closed));
    queue.push_all(out);
}

/// Whether a cancel among the commands left ends its request as CANCELLED.
#[derive(Clone, Copy, PartialEq)]
enum Cancels {
    /// A session that ends as sessions end: the app was told the cancel was taken.
    Honour,
    /// After a panic, every request in flight ends with PANIC (as the header says), as
    /// those the book held do, cancelled or not.
    Ignore,
}

/// The outcome of each request and packet among commands no session will read: ended with
/// `status` and `why`, or, as `cancels` says, CANCELLED for a request any of them cancels.
/// Pauses and reconnect cues have nothing left to act on.
fn answer_left(left: Vec<Command>, status: Status, why: &str, cancels: Cancels) -> Vec<Event> {
    let cancelled: std::collections::HashSet<i64> = left
        .iter()
        .filter_map(|c| match c {
            Command::Cancel(id) if cancels == Cancels::Honour => Some(*id),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for cmd in left {
        match cmd {
            Command::Request(r) => {
                let error = if cancelled.contains(&r.id) {
                    Error::new(Status::ErrCancelled, CANCELLED_BY_CALLER)
                } else {
                    Error::new(status, why)
                };
                let o = Outcome {
                    id: r.id,
                    reply: r.reply,
                    result: Err(error),
                };
                out.extend(o.into_event());
            }
            Command::Send(m) => out.push(unsent_packet(m, status)),
            _ => {}
        }
    }
    out
}

/// Why a request the app cancelled ended.
pub(crate) const CANCELLED_BY_CALLER: &str = "cancelled by the caller";

/// What requests still waiting end with when an internal panic ended the session.
const PANIC_BEFORE_REPLY: &str = "the session ended with an internal panic before the reply";

/// The session's command channel. Should the session panic, the requests and packets the
/// app made that it never read get their outcome here (RESPONSE, UNSENT; PANIC): declared
/// before the session's [`Book`], it drops after it. [`Book::finish`] drains it whenever the
/// session ends otherwise.
pub(crate) struct Commands {
    pub(crate) rx: CommandRx,
    leftovers: Leftovers,
}

impl Commands {
    pub(crate) fn new(rx: CommandRx, queue: &Arc<EventQueue>, probe: &Probe) -> Commands {
        Commands {
            leftovers: Leftovers::new(queue, probe, rx.end()),
            rx,
        }
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        // A panic unwinds through here (the session's locals drop as it unwinds); the hand-over
        // raises the panic flag before the drain closes the channel.
        self.leftovers.hand_over(|| {
            let left = self.rx.close_and_drain();
            answer_left(left, Status::ErrPanic, PANIC_BEFORE_REPLY, Cancels::Ignore)
        });
    }
}

/// Where what a panicking session still held goes: the client's queue, once its state is
/// CLOSED (so the bytes given back announce no SEND_READY).
struct Leftovers {
    queue: Arc<EventQueue>,
    counters: Arc<stats::Counters>,
    end: SessionEnd,
}

impl Leftovers {
    fn new(queue: &Arc<EventQueue>, probe: &Probe, end: SessionEnd) -> Leftovers {
        Leftovers {
            queue: queue.clone(),
            counters: probe.counters.clone(),
            end,
        }
    }

    /// Queues the events `make` builds; runs while a panic unwinds, so nothing here may
    /// unwind out of the task (the guard still has to queue the end).
    fn hand_over(&self, make: impl FnOnce() -> Vec<Event>) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Whichever part of the session drops first on a panic's way out: the flag goes
            // up before the state reads CLOSED, so refused calls say PANIC.
            if std::thread::panicking() {
                self.end.panicked();
            }
            self.end.stop(&self.counters);
            push_events(&self.queue, make());
        }));
    }
}

/// Pushes events unless there are none (an empty push would still wake the app).
fn push_events(queue: &EventQueue, events: Vec<Event>) {
    if !events.is_empty() {
        queue.push_all(events);
    }
}

/// The UNSENT event that hands a packet the client never wrote back to the app.
fn unsent_packet(packet: Outgoing, status: Status) -> Event {
    let mut ev = Event::new(EventKind::Unsent);
    ev.status = status;
    ev.data = packet.into_message().into_data();
    ev
}

/// The UNSENT events that hand packets the client will never write back to the app, built
/// before they are queued: a give-back must not run under the queue's lock. The state must
/// be CLOSED already, so the bytes they give back announce no SEND_READY.
fn unsent_events(packets: impl IntoIterator<Item = Outgoing>, status: Status) -> Vec<Event> {
    packets
        .into_iter()
        .map(|p| unsent_packet(p, status))
        .collect()
}

/// A connection's outbox. Should the session panic while it holds packets, they go back to
/// the app here (UNSENT with PANIC), as the book's requests get their RESPONSE: `serve`
/// empties it whenever the connection ends otherwise.
struct ConnectionOutbox {
    outbox: Outbox,
    leftovers: Leftovers,
}

impl Drop for ConnectionOutbox {
    fn drop(&mut self) {
        let unwritten = std::mem::take(&mut self.outbox).into_unwritten();
        if unwritten.packets.is_empty() && unwritten.requests.is_empty() {
            return;
        }
        self.leftovers.hand_over(|| {
            // The book answers these requests; their bytes go back with them.
            drop(unwritten.requests);
            unsent_events(unwritten.packets, Status::ErrPanic)
        });
    }
}

/// The URL without its query: resume parameters are no secret, but they make logs noisy.
fn redacted_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Sends a close frame, giving up after `limit`: the peer may be gone or not reading.
async fn send_close(sink: &mut SplitSink<Ws, Message>, code: u16, reason: &str, limit: Duration) {
    let _ = timeout(limit, sink.send(close_message(code, reason))).await;
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// [`Outbox::poll_write`], counting each request handed to the websocket.
fn write(
    outbox: &mut Outbox,
    sink: &mut SplitSink<Ws, Message>,
    counters: &stats::Counters,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<(), WsError>> {
    outbox.poll_write(sink, cx, |_| stats::add(&counters.requests_sent, 1))
}

/// Why an attempt ran out of its time: the app's proxy resolver when a call of it is still
/// running (a PAC lookup that hangs is not the server's fault), else the connect.
fn timed_out_why(cfg: &Config, limit: Duration) -> String {
    match cfg.proxy_resolver.as_ref().and_then(|r| r.busy_for()) {
        Some(d) => format!(
            "connect timed out after {} ms: the proxy resolver has not answered for {} ms",
            limit.as_millis(),
            d.as_millis()
        ),
        None => "connect timed out".to_owned(),
    }
}

/// An unanswered ping. Any byte received since it was sent proves the link alive (a large
/// message may take longer than the deadline to arrive whole).
struct Due {
    /// When its pong is late.
    at: Instant,
    /// Bytes received when it was sent.
    bytes_in: u64,
    /// Whether it was the app's probe.
    probe: bool,
    /// What the uplink said when it was sent and at each deadline since.
    track: PingTrack,
}

fn wire_in(c: &stats::Counters) -> u64 {
    c.wire_bytes_in.load(std::sync::atomic::Ordering::Relaxed)
}

fn wire_out(c: &stats::Counters) -> u64 {
    c.wire_bytes_out.load(std::sync::atomic::Ordering::Relaxed)
}

fn ws_error(e: WsError) -> End {
    match e {
        WsError::Capacity(c) => End::lost(
            Status::ErrMessageTooLarge,
            0,
            format!("server message over max_message_bytes: {c}"),
        ),
        // A text message or a close frame's reason (RFC 6455 §8.1: fail the connection).
        WsError::Utf8(_) => End::lost(
            Status::ErrJson,
            0,
            "the server sent text that is not valid UTF-8",
        ),
        // A peer (or proxy) dropping TCP is a lost connection, not a protocol breach.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::lost(
            Status::ErrConnect,
            0,
            "connection closed without a close frame",
        ),
        WsError::Protocol(p) => End::lost(
            Status::ErrProtocol,
            0,
            format!("websocket protocol error: {p}"),
        ),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            End::lost(Status::ErrConnect, 0, "connection closed")
        }
        other => End::lost(Status::ErrConnect, 0, format!("connection lost: {other}")),
    }
}
