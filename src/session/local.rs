//! The session of a backend that runs in this process (gomuks: `libgomuksffi`) instead of
//! behind a websocket. Same app-facing half as a connection (the [`Book`]: queue, request ids,
//! deadlines, cancel, close), different life: start once, serve, stop once. No pings, acks,
//! resume or reconnects: there is no link to lose.
//!
//! The backend is driven through blocking calls, so every one of them runs on the runtime's
//! blocking pool, never on the app's thread or a runtime worker. Whatever the backend produces
//! (events from its own threads, progress, chunks, and each call's answer) goes through one
//! unbounded channel, in order; the session moves it into the bounded queue while the queue
//! has room, exactly as it reads a socket only while the queue has room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::budget::Outgoing;
use super::commands::CommandRx;
use super::dialect::Incoming;
use super::pings::Pings;
use super::requests;
use super::{Book, Command, Commands, Offline};
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::ids::IdGen;
use crate::logging::tlog;
use crate::queue::EventQueue;
use crate::stats::{self, ConnectionState, Probe};
use crate::status::{Error, Status};

/// A backend in this process, driven through blocking calls.
pub(crate) trait Local: Send + Sync + 'static {
    /// Starts the backend; blocks until it runs (or failed). What it produces from now on,
    /// on any thread, goes to `sink`.
    fn start(&self, sink: Sink) -> Result<(), Error>;
    /// Serves request `id` (the message the client encoded); blocks until the backend
    /// answers. Progress and chunks of the request go to `sink` meanwhile. Calls `sent` just
    /// before the backend is called, and never for a call refused before (a close, a bad
    /// message).
    fn call(&self, id: i64, message: &Message, sent: &dyn Fn()) -> Result<Bytes, Error>;
    /// The lane (below [`LANES`]) of a call that takes one of its kind's [`LANE_CALLS`]
    /// places while it runs, or `None`. Cheap: asked of every request.
    fn lane(&self, _message: &Message) -> Option<usize> {
        None
    }
    /// The client is closing: from now on no call may start in the backend, since the app
    /// is told every request ended unanswered (a logout waiting for its turn above all: it
    /// would end the account). Called before that answer; must not block.
    fn closing(&self) {}
    /// Stops the backend and releases what it holds; blocks. Called once, after `start`
    /// returned, whatever it returned; waits for calls still running.
    fn stop(&self);
}

/// The hand-off from the backend's threads to the session: never blocks, never drops (while
/// the session runs).
#[derive(Clone)]
pub(crate) struct Sink(mpsc::UnboundedSender<Incoming>);

impl Sink {
    /// Hands an item to the session; after the session ended it is dropped.
    pub(crate) fn send(&self, item: Incoming) {
        let _ = self.0.send(item);
    }
}

/// How long a close waits for the backend to stop before CLOSED goes out anyway (its stop
/// then finishes in the background).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Most items moved into the queue per wake-up, as a connection's read burst.
const BURST: usize = 256;

/// Most calls in the backend at once. The backend cannot be told to drop a call, so each holds
/// a thread of the runtime's blocking pool until it answers, after its request timed out or
/// was cancelled too; that pool is shared by every client of the process (name lookups, proxy
/// resolvers, stops). Past this many, requests wait in the session, where their deadlines and
/// cancels still end them, and one that ended while waiting never reaches the backend.
const MAX_CALLS: usize = 64;

/// How many lanes [`Local::lane`] may name.
pub(crate) const LANES: usize = 2;

/// Most calls of one lane at once. In-process, uploads and streamed downloads report through
/// a fixed set of C callbacks, one per running call; a call past them would wait for one
/// inside the backend's thread, where a timeout or cancel no longer keeps it from running.
/// So it waits here, in its lane's queue, like any request not handed over yet: its message
/// stays in the request book (and its bytes in the send budget), a timeout or cancel ends it
/// before it reaches the backend, and it holds none of the [`MAX_CALLS`] places, so other
/// requests go past it.
pub(crate) const LANE_CALLS: usize = 8;

/// The requests handed to the backend: how many of its calls run, and those waiting for one
/// of them to return.
struct Calls<L: Local> {
    local: Arc<L>,
    sink: Sink,
    running: usize,
    /// How many of them run in each lane.
    in_lane: [usize; LANES],
    /// Ids of the requests waiting for a call, in order: those of no lane, and per lane. Their
    /// messages wait in the request book, so a timeout, cancel or close drops a message (and
    /// gives its bytes back to the send budget) before its RESPONSE is out, as on a
    /// connection. Ids that ended stay until skipped.
    waiting: VecDeque<i64>,
    lane_waiting: [VecDeque<i64>; LANES],
    /// The lane of each call that returned.
    returned: mpsc::UnboundedSender<Option<usize>>,
}

impl<L: Local> Calls<L> {
    /// Queues request `id` and starts what may start.
    fn submit(&mut self, book: &mut Book, id: i64, message: Outgoing) {
        let lane = self.local.lane(message.message()).filter(|&l| l < LANES);
        book.requests.hold(id, message);
        let queue = match lane {
            Some(l) => &mut self.lane_waiting[l],
            None => &mut self.waiting,
        };
        queue.push_back(id);
        // With every call stuck, requests that keep timing out must not grow this for good.
        if queue.len() > 2 * book.requests.len() + MAX_CALLS {
            queue.retain(|id| book.requests.contains(*id));
        }
        self.start(book);
    }

    /// One call returned: its place goes to the next waiting request still open.
    fn returned(&mut self, book: &mut Book, lane: Option<usize>) {
        self.running -= 1;
        if let Some(l) = lane {
            self.in_lane[l] -= 1;
        }
        self.start(book);
    }

    /// Starts waiting requests while places are free: each lane's in order while it has
    /// room (a lane takes at most [`LANE_CALLS`] of the places, so the others always have
    /// some), then the others in order.
    fn start(&mut self, book: &mut Book) {
        for l in 0..LANES {
            while self.in_lane[l] < LANE_CALLS && self.running < MAX_CALLS {
                let Some(id) = self.lane_waiting[l].pop_front() else {
                    break;
                };
                self.launch(book, id, Some(l));
            }
        }
        while self.running < MAX_CALLS {
            let Some(id) = self.waiting.pop_front() else {
                return;
            };
            self.launch(book, id, None);
        }
    }

    /// Hands request `id` to the backend, unless it ended while it waited (timed out or
    /// cancelled: the app has its answer already).
    fn launch(&mut self, book: &mut Book, id: i64, lane: Option<usize>) {
        let Some(message) = book.requests.take_held(id) else {
            return;
        };
        self.running += 1;
        if let Some(l) = lane {
            self.in_lane[l] += 1;
        }
        // Handed to the backend, the message leaves the send budget.
        call(
            &self.local,
            &self.sink,
            &self.returned,
            (id, lane),
            message.into_message(),
            book.probe.counters.clone(),
        );
    }
}

/// The session's reference to the backend. Should the session panic, it goes on the blocking
/// pool: if it is the last one, dropping it stops the backend (`GomuksDestroy`, which waits for
/// the calls still running), and that must not hold up a thread that runs every client's I/O.
struct Held<L: Local>(Option<Arc<L>>);

impl<L: Local> std::ops::Deref for Held<L> {
    type Target = Arc<L>;

    fn deref(&self) -> &Arc<L> {
        self.0.as_ref().expect("held until dropped")
    }
}

impl<L: Local> Drop for Held<L> {
    fn drop(&mut self) {
        let Some(local) = self.0.take() else { return };
        if std::thread::panicking() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                drop(rt.spawn_blocking(move || drop(local)));
            }
        }
    }
}

/// Runs a client's in-process session until it closes.
pub(crate) async fn run<L: Local>(
    cfg: Arc<Config>,
    queue: Arc<EventQueue>,
    ids: Arc<IdGen>,
    probe: Probe,
    local: Arc<L>,
    commands: CommandRx,
) {
    // First, so dropped last: after `Calls` and every other clone this task holds.
    let local = Held(Some(local));
    // Before the book, so dropped after it (see `Commands`).
    let mut commands = Commands::new(commands, &queue, &probe);
    let commands = &mut commands.rx;
    let mut book = Book::new(queue, ids, probe, commands.end());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = Sink(tx);
    let client = book.probe.client;
    book.probe.counters.set_state(ConnectionState::Connecting);
    stats::add(&book.probe.counters.connect_attempts, 1);
    tlog!(
        client,
        Info,
        "session",
        "starting the in-process backend at {}",
        cfg.url
    );
    let mut ev = Event::new(EventKind::Connecting);
    ev.attempt = 1;
    book.queue.push(ev);

    let t0 = tokio::time::Instant::now();
    let mut start = {
        let (local, sink) = (local.clone(), sink.clone());
        tokio::task::spawn_blocking(move || local.start(sink))
    };
    // Requests made meanwhile wait in the book: nothing reaches the backend before its start
    // returned.
    let started = loop {
        match book.offline(commands, &mut start).await {
            Offline::Ready(r) => break r,
            Offline::Closed => {
                // The start cannot be interrupted; it is stopped once it returns, in the
                // background, and the app is not kept waiting for it.
                tlog!(
                    client,
                    Info,
                    "session",
                    "closed while the in-process backend was starting; it is stopped once started"
                );
                let local = local.clone();
                tokio::spawn(async move {
                    let _ = start.await;
                    let _ = tokio::task::spawn_blocking(move || local.stop()).await;
                });
                book.finish(commands);
                return;
            }
            Offline::Pause | Offline::Unpause | Offline::Reconnect => {}
        }
    };
    let started = started.unwrap_or_else(|_| {
        Err(Error::new(
            Status::ErrBackendStart,
            "the in-process backend's start panicked",
        ))
    });
    if let Err(e) = started {
        tlog!(
            client,
            Error,
            "session",
            "the in-process backend did not start: {e}"
        );
        stop(&local).await;
        end(&mut book, e.status(), e.message().to_owned());
        book.give_up(e.status(), 0, e.message());
        book.finish(commands);
        return;
    }
    tlog!(
        client,
        Info,
        "session",
        "in-process backend started in {} ms",
        t0.elapsed().as_millis()
    );
    book.probe.counters.set_state(ConnectionState::Connected);
    stats::add(&book.probe.counters.connections, 1);
    let mut ev = Event::new(EventKind::Connected);
    ev.attempt = 1;
    book.queue.push(ev);

    let (returned, mut calls_returned) = mpsc::unbounded_channel();
    let mut calls = Calls {
        local: local.clone(),
        sink: sink.clone(),
        running: 0,
        in_lane: [0; LANES],
        waiting: Default::default(),
        lane_waiting: Default::default(),
        returned,
    };
    for (id, m) in book.requests.take_unsent() {
        calls.submit(&mut book, id, m);
    }
    let mut pings = Pings::default();
    let mut warn_backlog = cfg.queue_capacity.saturating_mul(4);
    loop {
        let can_take = book.queue.has_space();
        let next_timer = book.requests.next_deadline();
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(Command::Close(_)) => break,
                Some(Command::Request(r)) => {
                    let id = r.id;
                    if let Some(m) = book.requests.add(r, true) {
                        calls.submit(&mut book, id, m);
                    }
                    book.count_in_flight();
                }
                Some(Command::Cancel(id)) => {
                    // The backend cannot be told (its calls have no id); its late answer is
                    // dropped.
                    let _ = book.end_request(id, Status::ErrCancelled, super::CANCELLED_BY_CALLER);
                }
                // The client refuses these for an in-process backend.
                Some(Command::Send(_) | Command::Pause | Command::Unpause | Command::Reconnect) => {}
                #[cfg(test)]
                Some(Command::Panic) => panic!("injected by a test"),
            },
            first = rx.recv(), if can_take => {
                let Some(first) = first else { continue };
                let mut items = vec![first];
                let room = book.queue.space_left().min(BURST);
                while items.len() < room {
                    match rx.try_recv() {
                        Ok(i) => items.push(i),
                        Err(_) => break,
                    }
                }
                book.deliver(items, &mut pings);
                // A slow app makes the backend's output wait here, in memory, instead of
                // stalling the backend; say so when it grows.
                let backlog = rx.len();
                if backlog >= warn_backlog {
                    tlog!(client, Warn, "session", "{backlog} backend events wait for the app to take its queued events");
                    warn_backlog = warn_backlog.saturating_mul(2);
                }
            }
            Some(lane) = calls_returned.recv() => calls.returned(&mut book, lane),
            () = book.queue.wait_space(), if !can_take => {}
            () = sleep_until(next_timer.unwrap_or_else(tokio::time::Instant::now)), if next_timer.is_some() => {
                // Nothing to send: the backend cannot be told to stop.
                let _ = book.expire();
            }
        }
    }
    tlog!(client, Info, "session", "stopping the in-process backend");
    // No call starts from here on: the requests are answered below.
    local.closing();
    // Calls that returned before the close keep their answers, as replies read before a
    // websocket's close reply do; a full queue may have kept them waiting here behind events.
    // A download's chunks come with its answer (an OK after part of the file would read as
    // complete). The backend's events are not delivered: the app closed, and nothing resumes
    // them.
    let mut answers = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if !matches!(item, Incoming::Event { .. }) {
            answers.push(item);
        }
    }
    book.deliver(answers, &mut pings);
    // Also those waiting for a call: the stop below may wait seconds for the running ones.
    book.fail_all(Status::ErrClientClosed, requests::CLOSED_BEFORE_REPLY);
    stop(&local).await;
    end(&mut book, Status::Ok, "closed by the app".to_owned());
    book.finish(commands);
}

/// Runs request `id` on the blocking pool; its answer follows its progress and chunks, and
/// `returned` hears when the call (of `lane`) is over. Counted as sent when the backend is
/// called, not when a thread is queued for the call: a close in between refuses it without
/// the backend ever running it.
fn call<L: Local>(
    local: &Arc<L>,
    sink: &Sink,
    returned: &mpsc::UnboundedSender<Option<usize>>,
    (id, lane): (i64, Option<usize>),
    message: Message,
    counters: Arc<stats::Counters>,
) {
    /// Says the call (of its lane) is over when dropped: after its answer, or when it
    /// panicked.
    struct Over(mpsc::UnboundedSender<Option<usize>>, Option<usize>);
    impl Drop for Over {
        fn drop(&mut self) {
            let _ = self.0.send(self.1);
        }
    }
    let (local, sink, over) = (local.clone(), sink.clone(), Over(returned.clone(), lane));
    tokio::task::spawn_blocking(move || {
        let _over = over;
        let sent = || stats::add(&counters.requests_sent, 1);
        let item = match local.call(id, &message, &sent) {
            Ok(data) => Incoming::Reply { id, ok: true, data },
            Err(error) => Incoming::Failed { id, error },
        };
        sink.send(item);
    });
}

/// Stops the backend on the blocking pool, waiting at most [`STOP_WAIT`].
async fn stop<L: Local>(local: &Arc<L>) {
    let local = local.clone();
    let stopping = tokio::task::spawn_blocking(move || local.stop());
    let _ = timeout(STOP_WAIT, stopping).await;
}

/// The DISCONNECTED that ends an in-process session: no retry follows.
fn end(book: &mut Book, status: Status, reason: String) {
    let mut ev = Event::new(EventKind::Disconnected);
    ev.status = status;
    ev.attempt = 1;
    ev.data = Bytes::from(reason.into_bytes());
    book.queue.push(ev);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::commands;
    use crate::session::requests::{ReplyTo, Request};
    use futures_util::FutureExt;

    /// A backend that starts at once; the test's session panics before any call. Tells, as it
    /// is dropped, which thread let go of it last, if asked to.
    struct Idle(Option<std::sync::mpsc::Sender<std::thread::ThreadId>>);

    impl Drop for Idle {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(std::thread::current().id());
            }
        }
    }

    impl Local for Idle {
        fn start(&self, _: Sink) -> Result<(), Error> {
            Ok(())
        }
        fn call(&self, _: i64, _: &Message, sent: &dyn Fn()) -> Result<Bytes, Error> {
            sent();
            Ok(Bytes::from_static(b"{}"))
        }
        fn stop(&self) {}
    }

    /// A request `id` with a minute to live, answered as an event.
    fn request(id: i64) -> Command {
        Command::Request(Request {
            id,
            message: Message::text("{}").into(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            reply: ReplyTo::Event,
            cancel: |_, _, _| Message::text("{}"),
        })
    }

    /// `requests_sent` counts the calls that reached the backend, as its `sent` tells: one
    /// refused before (as a close refuses a call still waiting for its thread) is not counted.
    #[tokio::test]
    async fn only_calls_that_reach_the_backend_count_as_sent() {
        struct RefusesSeven;
        impl Local for RefusesSeven {
            fn start(&self, _: Sink) -> Result<(), Error> {
                Ok(())
            }
            fn call(&self, id: i64, _: &Message, sent: &dyn Fn()) -> Result<Bytes, Error> {
                if id == 7 {
                    return Err(Error::new(
                        Status::ErrClientClosed,
                        "refused before the call",
                    ));
                }
                sent();
                Ok(Bytes::from_static(b"{}"))
            }
            fn stop(&self) {}
        }
        let cfg = Arc::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let queue = Arc::new(EventQueue::new(64));
        let probe = Probe::new();
        let (tx, rx) = commands::channel(Arc::default());
        for id in [7, 8] {
            tx.send(request(id)).ok().expect("the channel is open");
        }
        let session = tokio::spawn(run(
            cfg,
            queue.clone(),
            Arc::new(IdGen::new()),
            probe.clone(),
            Arc::new(RefusesSeven),
            rx,
        ));
        let mut answered = Vec::new();
        while answered.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(20), queue.pop())
                .await
                .expect("both answered in time")
                .expect("an event");
            if ev.kind() == EventKind::Response {
                answered.push((ev.request_id(), ev.status()));
            }
        }
        answered.sort_by_key(|(id, _)| *id);
        assert_eq!(answered, [(7, Status::ErrClientClosed), (8, Status::Ok)]);
        assert_eq!(probe.counters.snapshot(0).requests_sent, 1);
        tx.send(Command::Close(crate::session::dialect::CloseIntent::Final))
            .ok()
            .expect("the channel is open");
        session.await.unwrap();
    }

    /// A cancel the session took in (OK) but never read, because the session was ending (here
    /// stopping a backend whose start failed), still ends its request as CANCELLED, as the
    /// app was told, not as the end's CLIENT_CLOSED.
    #[tokio::test]
    async fn a_cancel_taken_while_the_session_ends_still_cancels() {
        use std::sync::mpsc as sync_mpsc;
        struct FailsToStart {
            stopping: std::sync::Mutex<sync_mpsc::Sender<()>>,
            release: std::sync::Mutex<sync_mpsc::Receiver<()>>,
        }
        impl Local for FailsToStart {
            fn start(&self, _: Sink) -> Result<(), Error> {
                Err(Error::new(Status::ErrBackendStart, "refused by the test"))
            }
            fn call(&self, _: i64, _: &Message, _: &dyn Fn()) -> Result<Bytes, Error> {
                unreachable!("never started")
            }
            fn stop(&self) {
                let _ = crate::lock(&self.stopping).send(());
                let _ = crate::lock(&self.release).recv_timeout(Duration::from_secs(20));
            }
        }
        let (stopping_tx, stopping) = sync_mpsc::channel();
        let (release, release_rx) = sync_mpsc::channel();
        let local = Arc::new(FailsToStart {
            stopping: std::sync::Mutex::new(stopping_tx),
            release: std::sync::Mutex::new(release_rx),
        });
        let cfg = Arc::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let queue = Arc::new(EventQueue::new(64));
        let probe = Probe::new();
        let (tx, rx) = commands::channel(Arc::default());
        tx.send(request(7)).ok().expect("the channel is open");
        let session = tokio::spawn(run(
            cfg,
            queue.clone(),
            Arc::new(IdGen::new()),
            probe.clone(),
            local,
            rx,
        ));
        tokio::task::spawn_blocking(move || stopping.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("the session stops the backend");
        // Not CLOSED yet: the cancel is taken, and nothing reads it before the end.
        assert_ne!(probe.counters.state(), ConnectionState::Closed);
        let send = tx.send_running(Command::Cancel(7), &probe.counters);
        send.ok().expect("taken before CLOSED");
        release.send(()).unwrap();
        session.await.unwrap();
        let mut outcome = None;
        while let crate::queue::Pop::Event(ev) = queue.pop_blocking(Some(Duration::ZERO)) {
            if ev.kind() == EventKind::Response {
                outcome = Some((ev.request_id(), ev.status()));
            }
        }
        assert_eq!(outcome, Some((7, Status::ErrCancelled)));
    }

    /// After an internal panic, the requests the in-process session never read from its
    /// channel still get their RESPONSE (PANIC), as on a connection; one whose cancel is in
    /// the channel too ends with PANIC all the same, as every request in flight does.
    #[tokio::test]
    async fn a_panic_answers_the_requests_left_in_the_channel() {
        let cfg = Arc::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let queue = Arc::new(EventQueue::new(64));
        let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = commands::channel(panicked.clone());
        tx.send(Command::Panic).ok().expect("the channel is open");
        tx.send(request(7)).ok().expect("the channel is open");
        tx.send(request(8)).ok().expect("the channel is open");
        tx.send(Command::Cancel(8))
            .ok()
            .expect("the channel is open");
        let session = run(
            cfg,
            queue.clone(),
            Arc::new(IdGen::new()),
            Probe::new(),
            Arc::new(Idle(None)),
            rx,
        );
        assert!(std::panic::AssertUnwindSafe(session)
            .catch_unwind()
            .await
            .is_err());
        // Set by the session itself (the task's guard is not in this test).
        assert!(panicked.load(std::sync::atomic::Ordering::Acquire));
        let mut answered = Vec::new();
        while let crate::queue::Pop::Event(ev) = queue.pop_blocking(Some(Duration::ZERO)) {
            if ev.kind() == EventKind::Response {
                assert_eq!(ev.status(), Status::ErrPanic);
                answered.push(ev.request_id());
            }
        }
        assert_eq!(answered, [7, 8]);
    }

    /// After an internal panic the session never stops the backend, so its last reference
    /// does (`InProcess`'s drop runs `GomuksDestroy`, which waits for running calls): that
    /// reference goes on the blocking pool, not on the thread that ran the session.
    #[tokio::test]
    async fn after_a_panic_the_backend_is_released_off_the_sessions_thread() {
        let cfg = Arc::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = commands::channel(panicked);
        tx.send(Command::Panic).ok().expect("the channel is open");
        let (on, dropped) = std::sync::mpsc::channel();
        let session = run(
            cfg,
            Arc::new(EventQueue::new(64)),
            Arc::new(IdGen::new()),
            Probe::new(),
            Arc::new(Idle(Some(on))),
            rx,
        );
        assert!(std::panic::AssertUnwindSafe(session)
            .catch_unwind()
            .await
            .is_err());
        let thread =
            tokio::task::spawn_blocking(move || dropped.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .expect("the backend was released");
        assert_ne!(thread, std::thread::current().id());
    }
}
