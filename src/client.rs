//! The client handle of the Rust API.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, Protocol, Transport};
use crate::dialect::{gomuks, rwws};
use crate::event::{Event, EventKind};
use crate::ids::IdGen;
use crate::logging::tlog;
use crate::queue::{EventQueue, Pop, Tap};
use crate::resume::{ResumeState, SharedResume};
use crate::session::budget::SendBudget;
use crate::session::commands::{CommandRx, CommandTx};
use crate::session::dialect::{CloseIntent, Dialect};
use crate::session::requests::{ReplyTo, Request};
use crate::session::Command;
use crate::stats::{ConnectionState, Probe, Stats};
use crate::status::{Error, Status};

/// A connection to one backend, kept alive and resumed across drops.
///
/// All methods are non-blocking except [`Client::poll`], which waits up to its timeout.
/// Dropping the client closes it (gomuks: close code 1001) without waiting, except for a
/// call of its proxy resolver in progress, which it lets return first.
pub struct Client {
    req: Requester,
    resume: Arc<SharedResume>,
    rx: std::sync::Mutex<Option<CommandRx>>,
    probe: Probe,
}

/// Cancels request `id` when dropped, unless it was answered first (`id` is `None` then).
struct CancelOnDrop<'a> {
    req: &'a Requester,
    id: Option<i64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // A closed client has ended the request already.
            let _ = self.req.send(Command::Cancel(id));
        }
    }
}

/// What sending a request needs, shared beyond the client's own life: a store keeps one for
/// its actions, and a request after the client closed fails as the client's own would.
#[derive(Clone)]
pub(crate) struct Requester {
    cfg: Arc<Config>,
    queue: Arc<EventQueue>,
    ids: Arc<IdGen>,
    tx: Arc<CommandTx>,
    closed: Arc<AtomicBool>,
    /// Set when the session task panicked: nothing is sent any more.
    poisoned: Arc<AtomicBool>,
    /// What the app's requests and packets may hold until they are written.
    budget: Arc<SendBudget>,
    /// The gomuks backend said it is not logged in (the probe's flag).
    logged_out: Arc<AtomicBool>,
}

impl Client {
    /// A client for this configuration; nothing happens on the network until [`Client::connect`].
    pub fn new(mut cfg: Config) -> Client {
        // Calls of this client's resolver are this client's: one at a time, none after it ends.
        cfg.proxy_resolver = cfg.proxy_resolver.as_ref().map(|r| r.for_client());
        let poisoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crate::session::commands::channel(poisoned.clone());
        let resume = Arc::new(SharedResume::new(&cfg.resume, cfg.token.clone()));
        let probe = Probe::new();
        let queue = Arc::new(EventQueue::new(cfg.queue_capacity));
        queue.follow_resume(resume.clone());
        let closed = Arc::new(AtomicBool::new(false));
        let budget = SendBudget::new(cfg.max_unsent_bytes, probe.counters.unsent_bytes.clone(), {
            let (queue, closed) = (queue.clone(), closed.clone());
            let counters = probe.counters.clone();
            // Past the tap: a store has nothing to apply to it, and the tap takes the store's
            // lock, which no place that drops a message may be made to need. Ending gives
            // everything back: no SEND_READY for a client the app closed, nor for one that
            // stopped for good (its state is CLOSED before its requests end).
            move || {
                if !closed.load(Ordering::Acquire) && counters.state() != ConnectionState::Closed {
                    queue.push_untapped([Event::new(EventKind::SendReady)]);
                }
            }
        });
        Client {
            req: Requester {
                budget,
                queue,
                cfg: Arc::new(cfg),
                ids: Arc::new(IdGen::new()),
                tx: Arc::new(tx),
                closed,
                poisoned,
                logged_out: probe.logged_out.clone(),
            },
            resume,
            rx: std::sync::Mutex::new(Some(rx)),
            probe,
        }
    }

    /// This client's id, unique in the process: log records name their client by it.
    pub fn id(&self) -> u64 {
        self.probe.client
    }

    /// Where the connection is now; reading it takes no event.
    pub fn state(&self) -> ConnectionState {
        self.probe.counters.state()
    }

    /// A snapshot of this client's counters.
    pub fn stats(&self) -> Stats {
        self.probe.counters.snapshot(self.req.queue.depth())
    }

    /// Starts the session in the background; progress arrives as events. Errors with
    /// `ErrState` if already started or closed; a failed call changes nothing.
    pub fn connect(&self) -> Result<(), Error> {
        self.req.ensure_open()?;
        let slot = crate::lock(&self.rx);
        if slot.is_none() {
            return Err(Error::new(Status::ErrState, "connect was already called"));
        }
        // Everything fallible happens before the receiver is taken, so an error leaves the
        // client as it was.
        let handle = crate::runtime::handle()
            .map_err(|e| Error::new(Status::ErrConnect, format!("cannot start runtime: {e}")))?;
        if let Transport::InProcess { .. } = self.req.cfg.transport() {
            let local = gomuks::inproc::InProcess::open(&self.req.cfg, self.probe.client)?;
            self.spawn(&handle, slot, |rx| {
                crate::session::local::run(
                    self.req.cfg.clone(),
                    self.req.queue.clone(),
                    self.req.ids.clone(),
                    self.probe.clone(),
                    local,
                    rx,
                )
            });
            return Ok(());
        }
        // One set of TLS configs per client, shared by the websocket and the login.
        let tls = self.req.cfg.tls_configs()?;
        match self.req.cfg.protocol {
            Protocol::Gomuks => {
                let d = gomuks::Gomuks::new(
                    self.req.cfg.clone(),
                    tls,
                    self.resume.clone(),
                    self.req.queue.clone(),
                    self.probe.clone(),
                )?;
                self.spawn_session(&handle, d, slot);
            }
            Protocol::Rwws => {
                let d = rwws::Rwws::new(self.req.cfg.clone(), tls, self.probe.clone())?;
                self.spawn_session(&handle, d, slot);
            }
        }
        Ok(())
    }

    /// Starts the connection supervisor's session task for `dialect`.
    fn spawn_session<D: Dialect>(
        &self,
        handle: &tokio::runtime::Handle,
        dialect: D,
        slot: MutexGuard<'_, Option<CommandRx>>,
    ) {
        self.spawn(handle, slot, |rx| {
            crate::session::run(
                self.req.cfg.clone(),
                self.req.queue.clone(),
                self.req.ids.clone(),
                self.probe.clone(),
                dialect,
                rx,
            )
        });
    }

    /// Takes the command receiver (the point of no return) and starts the session `make`
    /// builds around it, guarded against panics. The spawn is the last thing that touches
    /// `self`: from then on an event callback or the proxy resolver may free the C handle
    /// this client lives in (the C API allows both), before `connect` has returned.
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        &self,
        handle: &tokio::runtime::Handle,
        mut slot: MutexGuard<'_, Option<CommandRx>>,
        make: impl FnOnce(CommandRx) -> F,
    ) {
        let Some(rx) = slot.take() else { return };
        // Unlocked before the spawn: the guard's drop writes into `self`.
        drop(slot);
        // Set here, not only by the task: `state()` right after `connect()` returns must not
        // still read IDLE while the task waits for a runtime thread.
        self.probe.counters.set_state(ConnectionState::Connecting);
        let session = guard_session(
            make(rx),
            self.probe.client,
            self.req.queue.clone(),
            self.req.poisoned.clone(),
        );
        handle.spawn(session);
    }

    /// Whether an internal panic ended the session. It may read true shortly before the
    /// panic's events (UNSENT and RESPONSE, then DISCONNECTED with `ErrPanic`, then CLOSED)
    /// are queued; they can all still be taken, and the resume state and statistics still be
    /// read; everything that would send fails with `ErrPanic`.
    pub fn is_poisoned(&self) -> bool {
        self.req.poisoned.load(Ordering::Acquire)
    }

    /// Makes the session task panic, as a bug in it would.
    #[cfg(test)]
    pub(crate) fn inject_session_panic(&self) {
        let _ = self.req.tx.send(Command::Panic);
    }

    /// rwws: sends one raw packet. Not available for gomuks clients. Packets made while
    /// disconnected go out once connected, in order; `ErrSendBufferFull` when one would pass
    /// the send budget (`max_unsent_bytes`): nothing was taken. One the client ends without
    /// having written comes back in an [`EventKind::Unsent`](crate::EventKind::Unsent) event.
    pub fn send_packet(&self, bytes: &[u8]) -> Result<(), Error> {
        self.req.ensure_open()?;
        if bytes.is_empty() {
            return Err(Error::new(Status::ErrInvalidArgument, "empty packet"));
        }
        self.require_rwws("send_packet")?;
        self.queue_packet(Message::binary(bytes.to_vec()))
    }

    /// rwws: sends a Settings packet with these (id, value) pairs (spec §2.8). Ids 0x00 and
    /// 0xFF are reserved; values are sent as given. No setting is defined by the protocol yet.
    /// Sent once, not again on a later connection (send them again on each CONNECTED if the
    /// server must know them per connection). Like [`Client::send_packet`], it comes back in
    /// an UNSENT event if the client ends before writing it.
    pub fn send_settings(&self, settings: &[(u8, &[u8])]) -> Result<(), Error> {
        self.req.ensure_open()?;
        self.require_rwws("send_settings")?;
        let packet = rwws::codec::settings_packet(settings.iter().copied())?;
        self.queue_packet(Message::binary(packet))
    }

    /// Hands a checked, non-empty packet to the session.
    fn queue_packet(&self, packet: Message) -> Result<(), Error> {
        let packet = self.req.budget.take(packet)?;
        self.command(Command::Send(packet))
    }

    /// Refuses an rwws-only call on a gomuks client, naming the call.
    fn require_rwws(&self, call: &str) -> Result<(), Error> {
        if self.req.cfg.protocol == Protocol::Rwws {
            return Ok(());
        }
        Err(Error::new(
            Status::ErrState,
            format!("{call} is for rwws clients; gomuks uses requests"),
        ))
    }

    /// Sends a request; the reply arrives as a RESPONSE event with this id. `data` is JSON
    /// (empty means `{}`). Requests made while disconnected are sent once connected. The
    /// timeout counts from this call; before [`Client::connect`] nothing runs the timers, so
    /// a request made then waits for it (one whose timeout passed meanwhile ends at once).
    /// `ErrSendBufferFull` when it would pass the send budget (`max_unsent_bytes`): nothing
    /// was taken. `ErrInvalidArgument` for `null` data (gomuks handlers dereference it) and,
    /// over the websocket, for a request over the backend's 1 MiB limit for one message.
    pub fn request(&self, command: &str, data: &[u8]) -> Result<i64, Error> {
        self.req.submit(command, data, None, ReplyTo::Event)
    }

    /// [`Client::request`] with its own timeout, at most `u32::MAX` ms (about 49 days;
    /// longer is `ErrInvalidArgument`).
    pub fn request_with_timeout(
        &self,
        command: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<i64, Error> {
        self.req
            .submit(command, data, Some(timeout), ReplyTo::Event)
    }

    /// Sends a request and awaits its reply directly (it does not go through the event queue).
    /// Returns the raw JSON `data` of the response.
    ///
    /// Dropping the future before it completes (a `select!` branch that lost, a timeout around
    /// it) cancels the request as [`Client::cancel`] does: over a websocket the server is told,
    /// and the request stops counting against the send budget and the requests in flight.
    pub async fn call(&self, command: &str, data: &[u8]) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        let id = self.req.submit(command, data, None, ReplyTo::Oneshot(tx))?;
        let mut pending = CancelOnDrop {
            req: &self.req,
            id: Some(id),
        };
        let reply = rx.await;
        pending.id = None;
        reply.unwrap_or_else(|_| {
            Err(Error::new(
                Status::ErrClientClosed,
                crate::session::requests::CLOSED_BEFORE_REPLY,
            ))
        })
    }

    /// Cancels request `id`: its RESPONSE carries `ErrCancelled` and the server is told.
    /// Once the session has stopped (state CLOSED) it is refused with `ErrState`: its
    /// requests have all ended or are ending (`ErrClientClosed`, or `ErrCancelled` for those
    /// whose cancel was taken before), and a cancel taken in then could not change that.
    pub fn cancel(&self, id: i64) -> Result<(), Error> {
        if !self.req.ids.issued(id) {
            return Err(Error::new(Status::ErrInvalidArgument, "no such request id"));
        }
        // Not `command`: after the app's close, while the session still runs, it is taken.
        self.send_running(Command::Cancel(id))
    }

    /// Pauses in place (an app going to the background, a phone suspending its sockets): the
    /// connection closes keeping the server's resume entry (gomuks close code 1000) with a
    /// DISCONNECTED event (status `Ok`, no retry), and no reconnect happens until
    /// [`Client::unpause`]. Requests already sent get the replies that come before the
    /// server's close reply (waited for up to 2 s), the others end with `ErrDisconnected`.
    /// Requests made meanwhile wait (their timeouts still run); the same
    /// client and event stream go on afterwards, and the events missed meanwhile arrive then,
    /// exactly once. A pause while not connected stops the attempts.
    /// In-process clients: `ErrUnsupported` (there is no connection to pause).
    pub fn pause(&self) -> Result<(), Error> {
        self.require_connection("pause")?;
        self.command(Command::Pause)
    }

    /// Ends a pause: connects at once and resumes where the paused connection stopped. Does
    /// nothing when not paused.
    /// In-process clients: `ErrUnsupported`.
    pub fn unpause(&self) -> Result<(), Error> {
        self.require_connection("unpause")?;
        self.command(Command::Unpause)
    }

    /// The OS glue's cue that the network changed or the app came back to the foreground.
    /// Waiting to reconnect: connects now. Connected: probes the link with a ping and, if
    /// nothing arrives within the pong timeout, reconnects at once. Never opens a second
    /// connection; does nothing while connecting or paused.
    /// In-process clients: `ErrUnsupported`.
    pub fn reconnect_now(&self) -> Result<(), Error> {
        self.require_connection("reconnect_now")?;
        self.command(Command::Reconnect)
    }

    /// Refuses a call about the connection on a client that has none (in-process).
    fn require_connection(&self, call: &str) -> Result<(), Error> {
        self.req.ensure_open()?;
        match self.req.cfg.transport() {
            Transport::Websocket => Ok(()),
            _ => Err(Error::new(
                Status::ErrUnsupported,
                format!("{call} does not apply to an in-process backend: there is no connection"),
            )),
        }
    }

    /// Uploads media through an in-process backend (`upload_media` with progress): PROGRESS
    /// events for the returned request id, then its RESPONSE with the `m.room.message`
    /// content to send. `params` is the command's JSON (`filename`, `encrypt`, ...; with
    /// `bytes` `None`, `path` names the file to read; bytes and a `path`, or neither, is
    /// `ErrInvalidArgument`). `timeout` `None` means the configured
    /// request timeout. Websocket clients: `ErrUnsupported` (the backend's HTTP upload
    /// endpoint serves them).
    pub fn upload_media(
        &self,
        params: &[u8],
        bytes: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<i64, Error> {
        self.media(gomuks::inproc::Media::Upload(bytes), params, timeout)
    }

    /// Downloads media through an in-process backend (`download_media`, streamed): CHUNK
    /// events with the file's bytes in order (for uncached, unencrypted media), then the
    /// RESPONSE with the cached file's row and path. A backend library without streaming
    /// download (gomuks v0.2607.0) answers `ErrUnsupported`; a plain `download_media`
    /// request still works there if the backend has the command. Websocket clients:
    /// `ErrUnsupported`.
    pub fn download_media(&self, params: &[u8], timeout: Option<Duration>) -> Result<i64, Error> {
        self.media(gomuks::inproc::Media::Download, params, timeout)
    }

    fn media(
        &self,
        media: gomuks::inproc::Media<'_>,
        params: &[u8],
        timeout: Option<Duration>,
    ) -> Result<i64, Error> {
        let what = match media {
            gomuks::inproc::Media::Upload(_) => "upload_media",
            gomuks::inproc::Media::Download => "download_media",
        };
        // Unsupported before anything about the request: an rwws client is a websocket
        // client too, and an app that falls back to HTTP media on this status must see it.
        self.req.ensure_open()?;
        if !matches!(self.req.cfg.transport(), Transport::InProcess { .. }) {
            return Err(Error::new(
                Status::ErrUnsupported,
                format!("{what} with progress is for in-process clients; over the websocket use the backend's HTTP media endpoints"),
            ));
        }
        self.req.validate_request(what, params)?;
        if let gomuks::inproc::Media::Upload(bytes) = media {
            upload_source(params, bytes.is_some())?;
        }
        self.req.enqueue(timeout, ReplyTo::Event, |id| {
            gomuks::inproc::media_message(id, media, params)
        })
    }

    fn command(&self, c: Command) -> Result<(), Error> {
        self.req.ensure_open()?;
        self.send_running(c)
    }

    /// Hands `c` to the session unless it has stopped (state CLOSED): from then on until it
    /// closes its channel, it would take the command in and drop it unread. Asked under the
    /// channel's gate, which the switch to CLOSED takes, so no command passes once CLOSED
    /// reads.
    fn send_running(&self, c: Command) -> Result<(), Error> {
        self.req
            .tx
            .send_running(c, &self.probe.counters)
            .map_err(|_| self.req.refusal())
    }

    /// Closes gracefully for good; CLOSED will be the last event. A second close is
    /// `ErrState`. gomuks: close code 1001, so the backend frees the events it kept for us —
    /// use [`Client::close_keep_resume`] to resume later from [`Client::resume_state`].
    pub fn close(&self) -> Result<(), Error> {
        self.close_with(CloseIntent::Final)
    }

    /// Closes gracefully like [`Client::close`], but asks the backend to keep what it buffers
    /// for us (gomuks: close code 1000 instead of 1001), so a later client configured with
    /// [`Client::resume_state`] receives the events it missed. rwws: the same as `close`.
    pub fn close_keep_resume(&self) -> Result<(), Error> {
        self.close_with(CloseIntent::KeepResume)
    }

    fn close_with(&self, intent: CloseIntent) -> Result<(), Error> {
        if self.req.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::new(Status::ErrState, "client is already closed"));
        }
        let never_started = crate::lock(&self.rx).take();
        if let Some(mut rx) = never_started {
            // Requests made before connect() are answered as the header promises, not dropped
            // with the channel: CLIENT_CLOSED for each (CANCELLED for one the app cancelled),
            // then CLOSED.
            rx.end().stop(&self.probe.counters);
            crate::session::close_channel(
                &mut rx,
                &self.req.queue,
                crate::session::requests::CLOSED_BEFORE_REPLY,
            );
        } else {
            let _ = self.req.tx.send(Command::Close(intent));
        }
        Ok(())
    }

    /// Takes the next event, waiting up to `timeout` (`None`: until one arrives). Blocks the
    /// calling thread: in async code use [`Client::next_event`], or the waiting stalls every
    /// other task of that thread's runtime.
    pub fn poll(&self, timeout: Option<Duration>) -> Pop {
        let pop = self.req.queue.pop_blocking(timeout);
        if let Pop::Event(ev) = &pop {
            self.req.queue.handed_over(std::slice::from_ref(ev));
        }
        pop
    }

    /// Takes the next event asynchronously; `None` after CLOSED was taken.
    pub async fn next_event(&self) -> Option<Event> {
        let ev = self.req.queue.pop().await?;
        self.req.queue.handed_over(std::slice::from_ref(&ev));
        Some(ev)
    }

    /// Takes up to `max` queued events without waiting.
    pub fn drain(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let start = out.len();
        let n = self.req.queue.drain_into(out, max);
        self.req.queue.handed_over(&out[start..]);
        n
    }

    /// The resume point: persist it and pass it to a new client's config to resume there.
    pub fn resume_state(&self) -> ResumeState {
        self.resume.get()
    }

    /// The credential the next connection sends, for an app that persists it instead of a
    /// password: gomuks, the `gomuks_auth` token (the configured one until a login with the
    /// Basic credentials or a renewal, spec §1.2, replaces it; each replacement is announced by
    /// a [`EventKind::TokenRenewed`](crate::EventKind::TokenRenewed) event, which carries no
    /// secret. Renewals happen while connected, halfway through the life the token has left
    /// (read from its expiry) and at least daily, before reconnect attempts once due, and after
    /// a 401 at the upgrade); rwws, the configured access key. `None` before a gomuks
    /// client configured with a username and password (and no token) first logs in, and
    /// while the backend has auth disabled and no token was configured.
    /// A secret: keep it out of logs.
    pub fn auth_token(&self) -> Option<String> {
        self.resume.token().map(|t| t.expose().to_owned())
    }

    /// How many events wait to be taken. With a consumer that falls behind it stays near the
    /// configured queue capacity: past it the socket is not read (one message's events may
    /// overshoot).
    pub fn queued_events(&self) -> usize {
        self.req.queue.depth()
    }

    /// What a store needs to send its actions' requests.
    pub(crate) fn requester(&self) -> &Requester {
        &self.req
    }

    /// Lets `tap` see every event before it is queued; only before `connect`, so it sees all
    /// of them, and only once.
    pub(crate) fn attach_tap(&self, tap: std::sync::Weak<dyn Tap>) -> Result<(), Error> {
        if self.req.cfg.protocol != Protocol::Gomuks {
            return Err(Error::new(
                Status::ErrUnsupported,
                "a store is for gomuks clients",
            ));
        }
        if self.req.cfg.last_server_ts.is_some()
            && matches!(self.req.cfg.transport, Transport::Websocket)
        {
            // gomuks-rpc.md §2: the first sync would be a catchup of only what changed since
            // then, for a client that kept the rest; the store keeps nothing across runs.
            return Err(Error::new(
                Status::ErrConfig,
                "a store starts empty, and with last_server_ts the backend's first sync holds \
                 only the rooms changed since then: leave last_server_ts unset on a client \
                 with a store",
            ));
        }
        if self.req.cfg.resume.is_resumable()
            && matches!(self.req.cfg.transport, Transport::Websocket)
        {
            // A resume that succeeds replays only what was missed, for a client holding the
            // rest; the store would stay without the rooms it never saw.
            return Err(Error::new(
                Status::ErrConfig,
                "a store starts empty, and a resumed connection brings only the events missed \
                 since the resume state: leave the resume state unset on a client with a store",
            ));
        }
        let slot = crate::lock(&self.rx);
        if self.req.is_closed() {
            return Err(Error::new(
                Status::ErrState,
                "the client is closed: a store needs a client not closed nor connected yet",
            ));
        }
        if slot.is_none() {
            return Err(Error::new(
                Status::ErrState,
                "attach the store before connect (it must see every event)",
            ));
        }
        if !self.req.queue.set_tap(tap) {
            return Err(Error::new(
                Status::ErrInUse,
                "a store was already attached to this client (one per client)",
            ));
        }
        Ok(())
    }

    /// The event queue (for the C ABI's readiness signal and dispatcher).
    pub(crate) fn queue(&self) -> &Arc<EventQueue> {
        &self.req.queue
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.req.cfg
    }
}

/// An upload names exactly one source: the bytes given, or a `"path"` in its params. gomuks
/// would pick one of the two silently, or fail late with neither.
fn upload_source(params: &[u8], has_bytes: bool) -> Result<(), Error> {
    let has_path =
        serde_json::from_slice::<std::collections::HashMap<String, serde::de::IgnoredAny>>(params)
            .is_ok_and(|m| m.contains_key("path"));
    let why = match (has_bytes, has_path) {
        (true, true) => "upload_media takes bytes or a \"path\" in its params, not both",
        (false, false) => "upload_media needs bytes or a \"path\" in its params",
        _ => return Ok(()),
    };
    Err(Error::new(Status::ErrInvalidArgument, why))
}

impl Requester {
    /// Closed by the app, or the session ended on its own (a stop such as bad credentials)
    /// and the app has taken CLOSED. The session drops its command receiver only after
    /// pushing CLOSED, so without the second check a request made right after CLOSED could
    /// be accepted and then silently never sent.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.queue.is_finished()
    }

    /// Refuses any call once the client is closed.
    pub(crate) fn ensure_open(&self) -> Result<(), Error> {
        if self.is_closed() || self.poisoned.load(Ordering::Acquire) {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Why a call is refused once the command channel is closed: the session panicked (the
    /// flag is set before a panic closes the channel), or the client closed.
    fn refusal(&self) -> Error {
        if self.poisoned.load(Ordering::Acquire) {
            Error::new(
                Status::ErrPanic,
                "the client's session ended with an internal panic",
            )
        } else {
            closed_error()
        }
    }

    /// Hands `c` to the session, refused once the channel is closed.
    fn send(&self, c: Command) -> Result<(), Error> {
        self.tx.send(c).map_err(|_| self.refusal())
    }

    pub(crate) fn validate_request(&self, command: &str, data: &[u8]) -> Result<(), Error> {
        self.ensure_open()?;
        if self.cfg.protocol == Protocol::Rwws {
            return Err(Error::new(
                Status::ErrState,
                "rwws has no requests; use send_packet or send_settings",
            ));
        }
        if command.is_empty() {
            return Err(Error::new(Status::ErrInvalidArgument, "empty command"));
        }
        if command == "ping" {
            // gomuks answers it with a pong, not a response, and its ack would move the
            // backend's entry behind the client's back (§7.3).
            return Err(Error::new(
                Status::ErrInvalidArgument,
                "ping is the client's own keepalive and acknowledgement: tether sends it",
            ));
        }
        // In-process the backend's own state is checked under its lock, at the call.
        if matches!(self.cfg.transport(), Transport::Websocket)
            && self.logged_out.load(Ordering::Acquire)
            && gomuks::needs_account(command)
        {
            return Err(Error::new(
                Status::ErrState,
                format!(
                    "{command} needs a logged-in backend (wait for client_state with is_logged_in): \
                     gomuks would close the connection otherwise"
                ),
            ));
        }
        if !data.is_empty() {
            let v = serde_json::from_slice::<&serde_json::value::RawValue>(data).map_err(|e| {
                Error::new(
                    Status::ErrInvalidUtf8,
                    format!("request data is not JSON: {e}"),
                )
            })?;
            // gomuks reads `null` into a nil parameter struct, which the command's handler
            // then dereferences: the websocket backend closes the connection (1011), failing
            // every request in flight, and libgomuksffi takes the app's process down.
            if v.get() == "null" {
                return Err(Error::new(
                    Status::ErrInvalidArgument,
                    "request data is null: gomuks commands take an object ({} or no data for \
                     none; listen_to_device takes a bool)",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn submit(
        &self,
        command: &str,
        data: &[u8],
        timeout: Option<Duration>,
        reply: ReplyTo,
    ) -> Result<i64, Error> {
        self.validate_request(command, data)?;
        self.enqueue(timeout, reply, |id| {
            gomuks::codec::request_message(id, command, data)
        })
    }

    /// Takes an id, fixes the deadline and hands the request `encode` makes to the session.
    pub(crate) fn enqueue(
        &self,
        timeout: Option<Duration>,
        reply: ReplyTo,
        encode: impl FnOnce(i64) -> Message,
    ) -> Result<i64, Error> {
        if timeout.is_some_and(|t| t > crate::config::MAX_DURATION) {
            return Err(Error::new(
                Status::ErrInvalidArgument,
                "a request timeout must be at most u32::MAX ms (about 49 days)",
            ));
        }
        // The deadline counts from the app's call, whatever the session is doing meanwhile.
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(self.cfg.request_timeout);
        let id = self.ids.next();
        let message = encode(id);
        if let Some(limit) = self.cfg.max_request_bytes().filter(|l| message.len() > *l) {
            return Err(Error::new(
                Status::ErrInvalidArgument,
                format!(
                    "request of {} bytes is over the backend's {limit}-byte limit for one \
                     message (it would close the connection)",
                    message.len()
                ),
            ));
        }
        let message = self.budget.take(message)?;
        self.send(Command::Request(Request {
            id,
            message,
            deadline,
            reply,
            cancel: gomuks::codec::cancel_message,
        }))?;
        Ok(id)
    }

    /// [`Client::request`] for the store's actions (`None`: the configured timeout).
    pub(crate) fn request(
        &self,
        command: &str,
        data: &[u8],
        timeout: Option<Duration>,
    ) -> Result<i64, Error> {
        self.submit(command, data, timeout, ReplyTo::Event)
    }

    /// The client's event queue (a store pushes its own change sets into it).
    pub(crate) fn queue(&self) -> &Arc<EventQueue> {
        &self.queue
    }
}

/// Runs the session; if it panics, the client is poisoned and the app still sees the end
/// (DISCONNECTED with `ErrPanic`, then CLOSED) instead of a silent stall.
pub(crate) async fn guard_session(
    session: impl Future<Output = ()>,
    client: u64,
    queue: Arc<EventQueue>,
    poisoned: Arc<AtomicBool>,
) {
    if let Err(p) = AssertUnwindSafe(session).catch_unwind().await {
        // Already set if the session's command channel was open (see `Commands`).
        poisoned.store(true, Ordering::Release);
        // The panic's own message, where a bug report finds it: on a phone the default
        // hook's stderr is nowhere.
        let why = format!(
            "internal panic in the session task: {}",
            crate::panic_text(&*p)
        );
        tlog!(client, Error, "session", "{why}");
        let mut ev = Event::new(EventKind::Disconnected);
        ev.status = Status::ErrPanic;
        ev.data = Bytes::from(why);
        queue.push(ev);
        queue.push(Event::new(EventKind::Closed));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropped without a close: the app may still hold the resume state, so keep the
        // backend's entry (a deliberate, final close is `close()`).
        if !self.req.closed.swap(true, Ordering::AcqRel) {
            let _ = self.req.tx.send(Command::Close(CloseIntent::KeepResume));
        }
        // Nobody will read the queue again; never let the session wait for space.
        self.req.queue.abandon();
        // The app's resolver must not run once its client is gone (its context may be freed
        // next): wait for a call in progress.
        if let Some(r) = &self.req.cfg.proxy_resolver {
            r.close_and_wait();
        }
    }
}

/// What a call on a closed client fails with.
fn closed_error() -> Error {
    Error::new(Status::ErrState, "client is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking session poisons the client and still ends the event stream with CLOSED;
    /// its message is logged for the client (here caught from `tracing`, which every record
    /// also reaches: the app's sink is process-wide, and the logging tests own it).
    #[tokio::test]
    async fn session_panic_poisons_and_closes() {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                crate::lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let _log = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let queue = Arc::new(EventQueue::new(8));
        let poisoned = Arc::new(AtomicBool::new(false));
        let session = async { panic!("injected") };
        // On this thread (the test's runtime has one), where the subscriber is set.
        guard_session(session, 77, queue.clone(), poisoned.clone()).await;
        let logged = String::from_utf8(crate::lock(&lines.0).clone()).unwrap();
        assert!(
            logged.contains(
                "ERROR tether::session: internal panic in the session task: injected client=77"
            ),
            "{logged}"
        );
        assert!(poisoned.load(Ordering::Acquire));
        let ev = queue.pop().await.unwrap();
        assert_eq!(
            (ev.kind(), ev.status()),
            (EventKind::Disconnected, Status::ErrPanic)
        );
        // The panic's message says what went wrong.
        assert_eq!(
            ev.data(),
            b"internal panic in the session task: injected".as_slice()
        );
        assert_eq!(queue.pop().await.unwrap().kind(), EventKind::Closed);
        assert!(queue.pop().await.is_none());
    }

    /// Every event up to CLOSED, failing after 20 s.
    async fn rest(c: &Client) -> Vec<Event> {
        let mut all = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), c.next_event())
                .await
                .expect("CLOSED within 20 s")
                .expect("an event before the end");
            let last = ev.kind() == EventKind::Closed;
            all.push(ev);
            if last {
                return all;
            }
        }
    }

    /// An rwws client of the testkit's backend with send budget `max_unsent`, connecting.
    fn connected_rwws(b: &tether_testkit::gomuks::Backend, max_unsent: u64) -> Client {
        let c = Client::new(
            Config::builder(&b.http_url())
                .protocol(Protocol::Rwws)
                .token(tether_testkit::rwws::DEFAULT_KEY)
                .max_unsent_bytes(max_unsent)
                .build()
                .unwrap(),
        );
        c.connect().unwrap();
        c
    }

    /// The events from the first UNSENT on, each UNSENT checked to say PANIC; their data.
    fn handed_back_on_panic(evs: &[Event]) -> Vec<Vec<u8>> {
        let tail: Vec<&Event> = evs
            .iter()
            .skip_while(|e| e.kind() != EventKind::Unsent)
            .collect();
        let n = tail.len().saturating_sub(2);
        let kinds: Vec<EventKind> = tail.iter().map(|e| e.kind()).collect();
        let mut want = vec![EventKind::Unsent; n];
        want.extend([EventKind::Disconnected, EventKind::Closed]);
        assert_eq!(kinds, want);
        assert_eq!(tail[n].status(), Status::ErrPanic);
        let all: Vec<EventKind> = evs.iter().map(|e| e.kind()).collect();
        assert!(!all.contains(&EventKind::SendReady), "{all:?}");
        tail[..n]
            .iter()
            .map(|e| {
                assert_eq!(e.status(), Status::ErrPanic);
                e.data().to_vec()
            })
            .collect()
    }

    /// An internal panic hands back the rwws packets the session held, as UNSENT with PANIC,
    /// in order, before its DISCONNECTED (PANIC) and CLOSED: those waiting in the book while
    /// paused, and those waiting in a connection's outbox behind a server that reads nothing.
    /// The bytes they give back announce no SEND_READY to the app refused just before (the
    /// state is CLOSED first).
    #[tokio::test]
    async fn a_session_panic_hands_back_the_packets_it_held() {
        use tether_testkit::gomuks::{Backend, BackendConfig};
        let b = Backend::start(BackendConfig {
            recv_buffer: Some(16 * 1024),
            ..Default::default()
        })
        .await
        .unwrap();
        let client = || connected_rwws(&b, 1 << 20);
        async fn until(c: &Client, kind: EventKind) {
            while tokio::time::timeout(Duration::from_secs(20), c.next_event())
                .await
                .expect("in time")
                .expect("an event")
                .kind()
                != kind
            {}
        }

        let c = client();
        until(&c, EventKind::Connected).await;
        c.pause().unwrap();
        until(&c, EventKind::Disconnected).await;
        c.send_packet(&[0x42, 1]).unwrap();
        c.send_packet(&[0x42, 2]).unwrap();
        c.inject_session_panic();
        // Behind the panic in the channel, never read by the session (or refused, once the
        // channel is closed): each one taken comes back too, after the book's.
        let mut want = vec![vec![0x42, 1], vec![0x42, 2]];
        for i in 3..6u8 {
            if c.send_packet(&[0x42, i]).is_ok() {
                want.push(vec![0x42, i]);
            }
        }
        let back = handed_back_on_panic(&rest(&c).await);
        assert_eq!(back, want);

        let c = client();
        until(&c, EventKind::Connected).await;
        b.set_read_rate(Some(0));
        let packet = |i: u32| [&[0x42][..], &i.to_be_bytes(), &[0x55; 16 * 1024][..]].concat();
        let mut sent = 0u32;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Until the kernel's buffers are full and the outbox holds the budget: refused, and
        // refused again after 200 ms in which nothing was written.
        loop {
            match c.send_packet(&packet(sent)) {
                Ok(()) => {
                    sent += 1;
                    assert!(sent < 10_000, "never refused");
                    continue;
                }
                Err(e) => assert_eq!(e.status(), Status::ErrSendBufferFull, "{e}"),
            }
            let held = c.stats().unsent_bytes;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if c.stats().unsent_bytes == held && c.send_packet(&packet(sent)).is_err() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the link never stalled"
            );
        }
        // A SEND_READY of the drains before is no concern here: only what the panic brings.
        while let Pop::Event(_) = c.poll(Some(Duration::ZERO)) {}
        c.inject_session_panic();
        // The connection's outbox is the first part of the session to drop on the panic's
        // way out: an app resending what its first UNSENT brings back is refused, and told
        // PANIC, not that it closed the client.
        let mut evs = Vec::new();
        while evs.last().map(Event::kind) != Some(EventKind::Unsent) {
            evs.push(c.next_event().await.expect("an event"));
        }
        let e = c.send_packet(&[0x42]).unwrap_err();
        assert_eq!(e.status(), Status::ErrPanic, "{e}");
        evs.extend(rest(&c).await);
        let back = handed_back_on_panic(&evs);
        assert!(!back.is_empty());
        let first = sent - back.len() as u32;
        for (i, p) in back.iter().enumerate() {
            assert_eq!(*p, packet(first + i as u32));
        }
    }

    /// A send racing an internal panic is either taken, and then handed back (UNSENT, PANIC),
    /// or refused with PANIC: never with STATE, as if the app had closed the client. The
    /// session's end closes the command channel, so the client must read as panicked before.
    #[tokio::test]
    async fn a_send_racing_a_panic_is_taken_or_refused_with_panic() {
        use tether_testkit::gomuks::{Backend, BackendConfig};
        let b = Backend::start(BackendConfig::default()).await.unwrap();
        for round in 0..20 {
            // A small budget, so a sender that outruns a slow panic waits on it rather than
            // queueing millions of packets.
            let c = connected_rwws(&b, 1 << 16);
            // Every send is behind the panic in the channel: each one taken must come back.
            c.inject_session_panic();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut taken = 0usize;
            let refusal = loop {
                match c.send_packet(&[0x42, round]) {
                    Ok(()) => taken += 1,
                    Err(e) if e.status() == Status::ErrSendBufferFull => std::thread::yield_now(),
                    Err(e) => break e,
                }
                assert!(std::time::Instant::now() < deadline, "never refused");
            };
            assert_eq!(
                refusal.status(),
                Status::ErrPanic,
                "round {round}: {refusal}"
            );
            let unsent: Vec<Event> = rest(&c)
                .await
                .into_iter()
                .filter(|e| e.kind() == EventKind::Unsent)
                .collect();
            assert_eq!(unsent.len(), taken, "round {round}");
            assert!(unsent.iter().all(|e| e.status() == Status::ErrPanic));
        }
    }

    /// A closed command channel refuses with PANIC once the session marked it panicked, and
    /// with STATE otherwise (a close): the mapping every send goes through.
    #[test]
    fn a_refused_send_says_why_the_channel_closed() {
        for (panicked, want) in [(true, Status::ErrPanic), (false, Status::ErrState)] {
            let c = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
            let mut rx = c.rx.lock().unwrap().take().unwrap();
            if panicked {
                rx.end().panicked();
            }
            assert!(rx.close_and_drain().is_empty());
            let e = c.req.send(Command::Pause).unwrap_err();
            assert_eq!(e.status(), want, "{e}");
        }
    }

    /// A session that has stopped (state CLOSED) but not yet closed its command channel, the
    /// moment between ending its requests and draining the channel: a cancel, pause, unpause,
    /// reconnect cue or packet is refused with STATE, as once the channel is closed, not taken
    /// in and then dropped unread (the requests have ended or are ending, so an OK would
    /// promise a cancel that cannot happen).
    #[test]
    fn commands_after_the_session_stopped_are_refused() {
        let gomuks = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let rwws = Client::new(
            Config::builder("ws://127.0.0.1:9/")
                .protocol(Protocol::Rwws)
                .token("AAECAw==")
                .build()
                .unwrap(),
        );
        let id = gomuks.request("echo", b"{}").unwrap();
        type Call = fn(&Client, i64) -> Result<(), Error>;
        let calls: [(&str, &Client, Call); 5] = [
            ("cancel", &gomuks, |c, id| c.cancel(id)),
            ("pause", &gomuks, |c, _| c.pause()),
            ("unpause", &gomuks, |c, _| c.unpause()),
            ("reconnect_now", &gomuks, |c, _| c.reconnect_now()),
            ("send_packet", &rwws, |c, _| c.send_packet(b"\x01")),
        ];
        for (name, c, call) in calls {
            call(c, id).unwrap_or_else(|e| panic!("{name} before the stop: {e}"));
        }
        for c in [&gomuks, &rwws] {
            c.probe.counters.set_state(ConnectionState::Closed);
        }
        for (name, c, call) in calls {
            let e = call(c, id).unwrap_err();
            assert_eq!(e.status(), Status::ErrState, "{name}: {e}");
        }
    }

    /// A request cancelled before connect, then the client closed: the cancel the app was
    /// told was taken ends the request as CANCELLED, though no session ever read either.
    #[test]
    fn a_cancel_before_connect_is_honoured_by_the_close() {
        let c = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let (kept, cancelled) = (
            c.request("echo", b"{}").unwrap(),
            c.request("echo", b"{}").unwrap(),
        );
        c.cancel(cancelled).unwrap();
        c.close().unwrap();
        let mut outcomes = Vec::new();
        while let Pop::Event(ev) = c.poll(Some(Duration::ZERO)) {
            if ev.kind() == EventKind::Response {
                outcomes.push((ev.request_id(), ev.status()));
            }
        }
        assert_eq!(
            outcomes,
            [
                (kept, Status::ErrClientClosed),
                (cancelled, Status::ErrCancelled)
            ]
        );
    }

    /// A connect that fails changes nothing: the same error again (not "already called"), and
    /// close still ends with CLOSED.
    #[test]
    fn failed_connect_leaves_client_unchanged() {
        let mut cfg = Config::builder("ws://127.0.0.1:9/")
            .protocol(Protocol::Rwws)
            .token("AAECAw==")
            .build()
            .unwrap();
        // Unreachable through the builder; stands in for any failure inside connect.
        cfg.rwws_key = None;
        let c = Client::new(cfg);
        for _ in 0..2 {
            assert_eq!(c.connect().unwrap_err().status(), Status::ErrConfig);
        }
        c.close().unwrap();
        match c.poll(Some(Duration::ZERO)) {
            Pop::Event(ev) => assert_eq!(ev.kind(), crate::event::EventKind::Closed),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.connect().unwrap_err().status(), Status::ErrState);
    }
}
