//! Bounded event queue shared by poll, callback and async delivery.
//!
//! The producer (the session task) checks [`EventQueue::has_space`] before it reads the next
//! websocket message, so when the app falls behind the socket is simply not read: TCP
//! backpressure reaches the server and nothing is dropped. A read takes at most as many
//! messages as there is room for, but a message may carry a batch of events and a store adds
//! a change set for what it applies, so the queue can exceed its capacity by those extra
//! events of one read (at most 256 messages). Events the session makes itself are queued
//! whatever the room: the connection's (CONNECTING, CONNECTED, DISCONNECTED, a few per
//! reconnect while the app stays behind), request outcomes (timeouts, the RESPONSEs a cut or a
//! close ends), SEND_READY (at most one per refused call of the app's) and at the end the
//! UNSENT events (one per packet the send budget let the app make).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::event::{Event, EventKind};
use crate::resume::SharedResume;

/// What a blocking pop returns.
#[derive(Debug)]
pub enum Pop {
    /// An event.
    Event(Event),
    /// Nothing arrived before the timeout.
    Timeout,
    /// The final CLOSED event has already been taken.
    Finished,
}

/// What [`EventQueue::pop_batch_held`] returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// This many events were taken (at least 1).
    Taken(usize),
    /// An event is queued but the consumer could not hold it; it is still queued.
    Refused,
    /// Nothing arrived before the timeout.
    Timeout,
    /// The final CLOSED event has already been taken.
    Finished,
}

/// Why a wait ended without an event.
enum Idle {
    Timeout,
    Finished,
}

/// Hook called with `true` when the queue becomes non-empty and `false` when it drains, so a
/// host-visible readiness signal (eventfd, pipe) can follow the queue. It runs under the queue
/// lock, so transitions are reported in order and the signal can never lag behind the queue;
/// it must be quick and must not call back into the queue.
pub type ReadinessHook = Box<dyn Fn(bool) + Send + Sync>;

/// Sees every batch of events before it is queued, on the producer's thread and outside the
/// queue lock, and queues what it wants instead through `queue` (which takes the queue lock
/// only then): a store applies server events here, so an app that reads it after taking an
/// event sees that event applied, and adds its change notifications to the batch. Queuing
/// through `queue` while holding its own lock keeps the tap's additions in its own order.
pub(crate) trait Tap: Send + Sync {
    /// Handles `events`; whatever should be queued goes to `queue`.
    fn deliver(&self, events: Vec<Event>, queue: &dyn Fn(Vec<Event>));
}

struct Inner {
    events: VecDeque<Event>,
    /// CLOSED has been pushed; nothing more will be.
    closed_pushed: bool,
    /// CLOSED has been taken by the consumer.
    finished: bool,
    /// The consumer is gone; pushes are discarded so the producer never waits forever.
    abandoned: bool,
    /// Threads blocked in `pop_blocking`. A push wakes the condvar only when this is
    /// non-zero: std's notify is a futex syscall even with nobody waiting, once per event.
    sleepers: usize,
}

/// Events a consumer took and will hand over to the app later (see
/// [`EventQueue::hand_over_later`]): until then the resume point stops short of them, whatever
/// other consumers hand over.
pub(crate) struct HandOver {
    resume: Arc<SharedResume>,
    era: u32,
    /// The first and the newest of the events of `era`.
    first: i64,
    id: i64,
    settled: bool,
}

impl HandOver {
    /// The app has the events now.
    pub(crate) fn done(mut self) {
        // Within an era the newest is all that counts; an older era's is ignored.
        self.resume
            .settle(self.era, Some(self.first), Some(self.id));
        self.settled = true;
    }
}

impl Drop for HandOver {
    /// Dropped without `done` (a panic on the way): the app never got the events. They stop
    /// holding the point back and are not counted, but a newer batch already handed over
    /// counts past them: after a panic, a later resume may miss them.
    fn drop(&mut self) {
        if !self.settled {
            self.resume.settle(self.era, Some(self.first), None);
        }
    }
}

/// The newest of `events` that a resume point follows (era 0: replies, rwws, in-process).
fn newest_buffered(events: &[Event]) -> Option<&Event> {
    events.iter().rev().find(|e| e.resume_era != 0)
}

/// The queue. One producer, the session task, plus the SEND_READY a give-back of the send
/// budget queues from whichever thread it runs on (an event the app's own refused calls
/// bound, so outside the capacity). Consumers may be several (the C API's polling threads);
/// each event goes to one of them.
pub struct EventQueue {
    inner: Mutex<Inner>,
    cond: Condvar,
    readable: Notify,
    space: Notify,
    capacity: usize,
    hook: Mutex<Option<ReadinessHook>>,
    /// Weak: the tap (a store) holds what sends its requests, which holds this queue.
    tap: std::sync::OnceLock<std::sync::Weak<dyn Tap>>,
    /// Told of each buffered gomuks event the consumer takes (see `SharedResume`).
    resume: std::sync::OnceLock<Arc<SharedResume>>,
}

impl EventQueue {
    /// A queue that holds `capacity` events before the producer pauses.
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(1024)),
                closed_pushed: false,
                finished: false,
                abandoned: false,
                sleepers: 0,
            }),
            cond: Condvar::new(),
            readable: Notify::new(),
            space: Notify::new(),
            capacity,
            hook: Mutex::new(None),
            tap: std::sync::OnceLock::new(),
            resume: std::sync::OnceLock::new(),
        }
    }

    /// From now on, [`EventQueue::handed_over`] moves `resume`'s taken point.
    pub(crate) fn follow_resume(&self, resume: Arc<SharedResume>) {
        let _ = self.resume.set(resume);
    }

    /// What [`EventQueue::handed_over`] would do for `events`, to be done later: for a consumer
    /// that hands them over only after it took them (a C batch, once the app is done with it).
    pub(crate) fn hand_over_later(&self, events: &[Event]) -> Option<HandOver> {
        let ev = newest_buffered(events)?;
        let era = ev.resume_era;
        // Present: `ev` itself is of `era`.
        let first = events.iter().find(|e| e.resume_era == era)?.request_id;
        let resume = self.resume.get()?.clone();
        resume.hold(era, first);
        Some(HandOver {
            resume,
            era,
            first,
            id: ev.request_id,
            settled: false,
        })
    }

    /// The app has `events` (taken from this queue, in order): the resume point the app
    /// persists moves past them. Not done by taking itself, since a consumer may still hold
    /// taken events the app has not seen: the dispatcher until its callback returns, a batch
    /// until the app polls again.
    pub(crate) fn handed_over(&self, events: &[Event]) {
        // Nothing to hold: the point moves at once.
        if let (Some(ev), Some(resume)) = (newest_buffered(events), self.resume.get()) {
            resume.took(ev.resume_era, ev.request_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not make the queue unusable: the data is a plain deque.
        crate::lock(&self.inner)
    }

    /// Installs the readiness hook and reports the current state through it.
    pub fn set_readiness_hook(&self, hook: ReadinessHook) {
        let g = self.lock();
        hook(!g.events.is_empty());
        *crate::lock(&self.hook) = Some(hook);
        drop(g);
    }

    /// Reports a transition; the caller holds the queue lock (see [`ReadinessHook`]).
    fn signal(&self, _held: &MutexGuard<'_, Inner>, ready: bool) {
        if let Some(h) = &*crate::lock(&self.hook) {
            h(ready);
        }
    }

    /// Whether the producer may read another message.
    pub fn has_space(&self) -> bool {
        let g = self.lock();
        g.abandoned || g.events.len() < self.capacity
    }

    /// Waits until [`EventQueue::has_space`] is true.
    pub async fn wait_space(&self) {
        loop {
            let notified = self.space.notified();
            if self.has_space() {
                return;
            }
            notified.await;
        }
    }

    /// Whether [`EventQueue::abandon`] ran: the consumer is gone.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Room left before [`EventQueue::has_space`] turns false (unbounded once abandoned).
    pub fn space_left(&self) -> usize {
        let g = self.lock();
        if g.abandoned {
            usize::MAX
        } else {
            self.capacity.saturating_sub(g.events.len())
        }
    }

    /// Appends an event; never blocks. Nothing is accepted after CLOSED.
    pub fn push(&self, ev: Event) {
        self.push_all(std::iter::once(ev));
    }

    /// Appends events in order under one lock, with at most one readiness signal and one
    /// wake-up: a consumer woken per event would cost a futex round trip each.
    pub fn push_all(&self, evs: impl IntoIterator<Item = Event>) {
        match self.tap.get().and_then(std::sync::Weak::upgrade) {
            Some(tap) => tap.deliver(evs.into_iter().collect(), &|v| self.push_untapped(v)),
            None => self.push_untapped(evs),
        }
    }

    /// Installs the tap, for as long as its owner keeps it; `false` if one was installed
    /// (even one since dropped: a second store would have missed events).
    pub(crate) fn set_tap(&self, tap: std::sync::Weak<dyn Tap>) -> bool {
        self.tap.set(tap).is_ok()
    }

    /// [`EventQueue::push_all`] past the tap: for the tap itself.
    pub(crate) fn push_untapped(&self, evs: impl IntoIterator<Item = Event>) {
        let sleepers = {
            let mut g = self.lock();
            let was_empty = g.events.is_empty();
            for ev in evs {
                if g.abandoned || g.closed_pushed {
                    break;
                }
                if ev.kind == EventKind::Closed {
                    g.closed_pushed = true;
                }
                g.events.push_back(ev);
            }
            if g.events.is_empty() {
                return;
            }
            if was_empty {
                self.signal(&g, true);
            }
            g.sleepers
        };
        if sleepers > 0 {
            self.cond.notify_one();
        }
        self.readable.notify_one();
    }

    fn take(&self, g: &mut MutexGuard<'_, Inner>) -> Option<Event> {
        let ev = g.events.pop_front()?;
        if ev.kind == EventKind::Closed {
            g.finished = true;
            // Every other waiting consumer must see the end, not sleep on.
            self.cond.notify_all();
            self.readable.notify_waiters();
        } else if !g.events.is_empty() && g.sleepers > 0 {
            // A push wakes one consumer per batch; with several waiting, pass it on.
            self.cond.notify_one();
        }
        // The producer waits for space only once the queue is full (`wait_space`), so only the
        // take that ends a full queue needs to wake it: a notify per event costs atomics and
        // leaves a stale permit behind.
        if g.events.len() + 1 == self.capacity {
            self.space.notify_one();
        }
        if g.events.is_empty() {
            self.signal(g, false);
        }
        Some(ev)
    }

    /// Takes the next event, waiting up to `timeout` (`None` waits until one arrives).
    pub fn pop_blocking(&self, timeout: Option<Duration>) -> Pop {
        match self.wait_queued(timeout) {
            Ok(mut g) => match self.take(&mut g) {
                Some(ev) => Pop::Event(ev),
                None => unreachable!("wait_queued returns with an event queued"),
            },
            Err(Idle::Timeout) => Pop::Timeout,
            Err(Idle::Finished) => Pop::Finished,
        }
    }

    /// Waits up to `timeout` until an event is queued and returns the lock with it still
    /// queued, or says why there is none.
    fn wait_queued(&self, timeout: Option<Duration>) -> Result<MutexGuard<'_, Inner>, Idle> {
        // A timeout past what an Instant can hold waits as long as no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut g = self.lock();
        loop {
            if !g.events.is_empty() {
                return Ok(g);
            }
            if g.finished || g.abandoned {
                return Err(Idle::Finished);
            }
            g.sleepers += 1;
            match deadline {
                None => g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        g.sleepers -= 1;
                        return Err(Idle::Timeout);
                    }
                    g = self
                        .cond
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            g.sleepers -= 1;
        }
    }

    /// Waits up to `timeout` for an event, then moves events into `out` in order, up to
    /// `max`, for as long as `fits` accepts the next one. `fits` sees each event before it is
    /// taken, under the queue lock (keep it cheap); the event it refuses stays first in the
    /// queue, so a consumer that cannot hold an event never loses it. For a consumer that
    /// hands the events over later: with the [`HandOver`] of what it took, whose hold is
    /// registered before the queue is unlocked, so no other consumer can take and hand over
    /// newer events in between, past these.
    pub(crate) fn pop_batch_held(
        &self,
        timeout: Option<Duration>,
        max: usize,
        out: &mut Vec<Event>,
        mut fits: impl FnMut(&Event) -> bool,
    ) -> (Batch, Option<HandOver>) {
        let mut g = match self.wait_queued(timeout) {
            Ok(g) => g,
            Err(Idle::Timeout) => return (Batch::Timeout, None),
            Err(Idle::Finished) => return (Batch::Finished, None),
        };
        let mut n = 0;
        while n < max {
            match g.events.front() {
                Some(ev) if fits(ev) => {}
                _ => break,
            }
            let Some(ev) = self.take(&mut g) else { break };
            let last = ev.kind == EventKind::Closed;
            out.push(ev);
            n += 1;
            if last {
                break;
            }
        }
        if n == 0 {
            // This caller may have been woken for the event it leaves; another waiting
            // consumer (one that can take it) must not sleep through it.
            if g.sleepers > 0 {
                self.cond.notify_one();
            }
            return (Batch::Refused, None);
        }
        // While `g` still locks the queue.
        let held = self.hand_over_later(&out[out.len() - n..]);
        (Batch::Taken(n), held)
    }

    /// Takes up to `max` events without waiting.
    pub fn drain_into(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut g = self.lock();
        let mut n = 0;
        while n < max {
            match self.take(&mut g) {
                Some(ev) => {
                    out.push(ev);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Takes the next event asynchronously; `None` once CLOSED has been taken.
    pub async fn pop(&self) -> Option<Event> {
        loop {
            let notified = self.readable.notified();
            {
                let mut g = self.lock();
                if let Some(ev) = self.take(&mut g) {
                    if !g.events.is_empty() {
                        // A push wakes one task per batch; with several tasks waiting, pass
                        // it on (as `take` does for blocked threads).
                        self.readable.notify_one();
                    }
                    return Some(ev);
                }
                if g.finished || g.abandoned {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Whether CLOSED has been taken.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Number of queued events.
    pub fn depth(&self) -> usize {
        self.lock().events.len()
    }

    /// The consumer is gone: drop what is queued, never make the producer wait again, wake
    /// blocked consumers (they see the end) and drop the readiness hook.
    pub fn abandon(&self) {
        let (drained, hook) = {
            let mut g = self.lock();
            g.abandoned = true;
            if !g.events.is_empty() {
                self.signal(&g, false);
            }
            let hook = crate::lock(&self.hook).take();
            (std::mem::take(&mut g.events), hook)
        };
        // Event payloads and the hook are dropped outside the lock.
        drop((drained, hook));
        self.space.notify_one();
        self.cond.notify_all();
        self.readable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64) -> Event {
        let mut e = Event::new(EventKind::Message);
        e.request_id = id;
        e
    }

    /// A timeout too large for an Instant waits as none does, instead of panicking.
    #[test]
    fn a_huge_timeout_is_no_timeout() {
        let q = EventQueue::new(2);
        q.push(ev(1));
        assert!(matches!(q.pop_blocking(Some(Duration::MAX)), Pop::Event(e) if e.request_id == 1));
    }

    /// Two tasks wait in `pop`; one push of two events wakes one of them, and the one that
    /// takes the first event passes the wake-up on, so the other takes the second at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_tasks_pass_a_wake_up_on() {
        let q = std::sync::Arc::new(EventQueue::new(8));
        let (a, b) = (q.clone(), q.clone());
        let ta = tokio::spawn(async move { a.pop().await.map(|e| e.request_id) });
        let tb = tokio::spawn(async move { b.pop().await.map(|e| e.request_id) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.push_all([ev(1), ev(2)]);
        let both = tokio::time::timeout(Duration::from_secs(2), async {
            (ta.await.unwrap(), tb.await.unwrap())
        })
        .await
        .expect("the second task was left asleep with an event queued");
        let mut got = [both.0, both.1];
        got.sort();
        assert_eq!(got, [Some(1), Some(2)]);
    }

    #[test]
    fn fifo_timeout_and_finish() {
        let q = EventQueue::new(2);
        assert!(matches!(
            q.pop_blocking(Some(Duration::from_millis(5))),
            Pop::Timeout
        ));
        q.push(ev(1));
        q.push(ev(2));
        assert!(!q.has_space());
        match q.pop_blocking(Some(Duration::ZERO)) {
            Pop::Event(e) => assert_eq!(e.request_id, 1),
            other => panic!("{other:?}"),
        }
        assert!(q.has_space());
        q.push(Event::new(EventKind::Closed));
        q.push(ev(3)); // after CLOSED: ignored
        let mut v = Vec::new();
        assert_eq!(q.drain_into(&mut v, 10), 2);
        assert_eq!(v[1].kind, EventKind::Closed);
        assert!(matches!(q.pop_blocking(None), Pop::Finished));
    }

    #[test]
    fn pop_batch_leaves_what_does_not_fit() {
        let q = EventQueue::new(8);
        assert_eq!(
            q.pop_batch_held(Some(Duration::ZERO), 8, &mut Vec::new(), |_| true)
                .0,
            Batch::Timeout
        );
        q.push_all([ev(1), ev(2), ev(3), Event::new(EventKind::Closed)]);
        let mut v = Vec::new();
        let mut room = 2;
        let fits = |_: &Event| {
            room -= 1;
            room >= 0
        };
        assert_eq!(q.pop_batch_held(None, 8, &mut v, fits).0, Batch::Taken(2));
        assert_eq!(q.depth(), 2);
        assert_eq!(
            q.pop_batch_held(None, 8, &mut v, |_| false).0,
            Batch::Refused
        );
        assert_eq!(q.depth(), 2);
        assert_eq!(
            q.pop_batch_held(None, 1, &mut v, |_| true).0,
            Batch::Taken(1)
        );
        assert_eq!(
            q.pop_batch_held(None, 8, &mut v, |_| true).0,
            Batch::Taken(1)
        );
        let ids: Vec<_> = v.iter().map(|e| (e.kind, e.request_id)).collect();
        assert_eq!(
            ids[..3],
            [
                (EventKind::Message, 1),
                (EventKind::Message, 2),
                (EventKind::Message, 3)
            ]
        );
        assert_eq!(ids[3].0, EventKind::Closed);
        assert_eq!(
            q.pop_batch_held(None, 8, &mut v, |_| true).0,
            Batch::Finished
        );
    }

    #[test]
    fn readiness_hook_follows_queue() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let q = EventQueue::new(4);
        let flag = Arc::new(AtomicBool::new(true));
        let f = flag.clone();
        q.set_readiness_hook(Box::new(move |r| f.store(r, Ordering::SeqCst)));
        assert!(!flag.load(Ordering::SeqCst));
        q.push(ev(1));
        assert!(flag.load(Ordering::SeqCst));
        let _ = q.pop_blocking(Some(Duration::ZERO));
        assert!(!flag.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn wait_space_wakes_after_pop() {
        let q = std::sync::Arc::new(EventQueue::new(1));
        q.push(ev(1));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_space().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        assert!(q.pop().await.is_some());
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    /// A burst can overfill the queue; the producer waits until it is below capacity again
    /// and is woken by the take that gets it there, not before and not never.
    #[tokio::test]
    async fn wait_space_wakes_when_an_overfull_queue_drops_below_capacity() {
        let q = std::sync::Arc::new(EventQueue::new(2));
        q.push_all((1..=5).map(ev));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_space().await });
        for left in [4, 3, 2] {
            assert!(q.pop().await.is_some());
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(!waiter.is_finished(), "woken with {left} queued");
        }
        assert!(q.pop().await.is_some());
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q.depth(), 1);
    }
}
