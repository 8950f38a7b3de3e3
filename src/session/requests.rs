//! Request bookkeeping: pending requests, those waiting for a connection, deadlines, cancel,
//! and what a cut or a close does to each. Plain data: no socket, no task, no clock of its
//! own (the caller passes `now`), so every rule is unit-tested here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::budget::Outgoing;
use crate::event::{Event, EventKind};
use crate::status::{Error, Status};

/// Why a request ended without a reply when the app closed the client: one text for every
/// path that answers it (still in the book, still in the command channel, or awaited by
/// `Client::call`), so the app sees the same message whichever it was.
pub(crate) const CLOSED_BEFORE_REPLY: &str = "client closed before the reply";

/// Where a request's outcome goes.
pub(crate) enum ReplyTo {
    /// As a RESPONSE event in the queue.
    Event,
    /// To an awaiting caller of the Rust API.
    Oneshot(oneshot::Sender<Result<Bytes, Error>>),
}

/// Encodes a cancel of request `target` under the new request id `id` (the dialect's wire
/// form; only dialects with requests have one).
pub(crate) type CancelEncoder = fn(id: i64, target: i64, reason: &str) -> Message;

/// A request as the client hands it over.
pub(crate) struct Request {
    /// Request id.
    pub(crate) id: i64,
    /// The encoded request, holding its bytes of the send budget.
    pub(crate) message: Outgoing,
    /// When the caller stops waiting; fixed when the app made the call.
    pub(crate) deadline: Instant,
    /// Where the outcome goes.
    pub(crate) reply: ReplyTo,
    /// How to tell the server to stop working on it.
    pub(crate) cancel: CancelEncoder,
}

/// A request's final outcome, to hand to the app.
pub(crate) struct Outcome {
    pub(crate) id: i64,
    pub(crate) reply: ReplyTo,
    pub(crate) result: Result<Bytes, Error>,
}

impl Outcome {
    /// A waiting Rust caller gets the result directly; otherwise it becomes this RESPONSE.
    pub(crate) fn into_event(self) -> Option<Event> {
        match self.reply {
            ReplyTo::Oneshot(tx) => {
                let _ = tx.send(self.result);
                None
            }
            ReplyTo::Event => {
                let mut ev = Event::new(EventKind::Response);
                ev.request_id = self.id;
                match self.result {
                    Ok(data) => ev.data = data,
                    Err(e) => {
                        ev.status = e.status();
                        ev.data =
                            Bytes::from(serde_json::to_string(e.message()).unwrap_or_default());
                    }
                }
                Some(ev)
            }
        }
    }
}

/// A request that ended locally (timeout, cancel): its outcome, and the cancel to send if the
/// server has it.
pub(crate) struct Ended {
    pub(crate) outcome: Outcome,
    /// `Some` when the request was on the wire: the server should be told to stop.
    pub(crate) cancel: Option<CancelEncoder>,
}

struct Entry {
    /// `Some` until the request is written to a connection.
    message: Option<Outgoing>,
    reply: ReplyTo,
    deadline: Instant,
    cancel: CancelEncoder,
}

/// Every request that has no outcome yet.
#[derive(Default)]
pub(crate) struct Requests {
    pending: BTreeMap<i64, Entry>,
    /// Requests waiting for a connection, in submission order.
    unsent: VecDeque<i64>,
    timers: BTreeSet<(Instant, i64)>,
}

impl Requests {
    /// Takes a request. Online, its message is returned to be written now; offline it is kept
    /// and handed out, in order, by [`Requests::take_unsent`].
    pub(crate) fn add(&mut self, r: Request, online: bool) -> Option<Outgoing> {
        // One whose deadline passed while it waited for the session (a busy one) is kept, not
        // written: the timer ends it at once, and the server, which would run it although the
        // app was told it timed out, never sees it.
        let online = online && r.deadline > Instant::now();
        self.timers.insert((r.deadline, r.id));
        let (kept, out) = if online {
            (None, Some(r.message))
        } else {
            self.unsent.push_back(r.id);
            (Some(r.message), None)
        };
        self.pending.insert(
            r.id,
            Entry {
                message: kept,
                reply: r.reply,
                deadline: r.deadline,
                cancel: r.cancel,
            },
        );
        out
    }

    /// The requests made while offline, each with its id, in submission order; they count as
    /// on the wire from here on.
    /// One whose deadline has passed stays here, unwritten: the timer ends it next.
    pub(crate) fn take_unsent(&mut self) -> Vec<(i64, Outgoing)> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.unsent.len());
        let mut late = VecDeque::new();
        for id in self.unsent.drain(..) {
            match self.pending.get_mut(&id) {
                Some(e) if e.deadline <= now => late.push_back(id),
                Some(e) => out.extend(e.message.take().map(|m| (id, m))),
                None => {}
            }
        }
        self.unsent = late;
        out
    }

    /// Requests a connection ended before writing: unsent again, ahead of those made since
    /// and in their order; those that ended meanwhile are dropped.
    pub(crate) fn put_back(&mut self, items: Vec<(i64, Outgoing)>) {
        for (id, m) in items.into_iter().rev() {
            if let Some(e) = self.pending.get_mut(&id) {
                e.message = Some(m);
                self.unsent.push_front(id);
            }
        }
    }

    /// The server answered request `id`; `None` for an id with no pending request (already
    /// timed out or cancelled, or never ours).
    pub(crate) fn reply(&mut self, id: i64, result: Result<Bytes, Error>) -> Option<Outcome> {
        let e = self.remove(id)?;
        Some(Outcome {
            id,
            reply: e.reply,
            result,
        })
    }

    /// Ends request `id` here with `status` (a cancel by the app).
    pub(crate) fn end(&mut self, id: i64, status: Status, why: &str) -> Option<Ended> {
        let e = self.remove(id)?;
        let on_wire = e.message.is_none();
        Some(Ended {
            outcome: Outcome {
                id,
                reply: e.reply,
                result: Err(Error::new(status, why)),
            },
            cancel: on_wire.then_some(e.cancel),
        })
    }

    /// Ends every request whose deadline is at or before `now` with REQUEST_TIMEOUT.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Ended> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            // Removed first: a timer whose request is gone must not spin the caller's loop.
            self.timers.remove(&(t, id));
            out.extend(self.end(id, Status::ErrRequestTimeout, "request timed out"));
        }
        out
    }

    /// The earliest deadline, for the caller's timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The connection is gone: requests that were on the wire end with `status` (their fate
    /// on the server is unknown); those not yet sent stay for the next connection.
    pub(crate) fn fail_sent(&mut self, status: Status, why: &str) -> Vec<Outcome> {
        let sent: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, e)| e.message.is_none())
            .map(|(id, _)| *id)
            .collect();
        sent.into_iter()
            .filter_map(|id| self.reply(id, Err(Error::new(status, why))))
            .collect()
    }

    /// The session ends: every request left ends with `status`.
    pub(crate) fn fail_all(&mut self, status: Status, why: &str) -> Vec<Outcome> {
        let ids: Vec<i64> = self.pending.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.reply(id, Err(Error::new(status, why))))
            .collect()
    }

    /// Keeps request `id`'s message here after all (in-process: while it waits for a call),
    /// so that ending the request drops it before the outcome is out. It is not queued as
    /// unsent: no later connection writes it.
    pub(crate) fn hold(&mut self, id: i64, message: Outgoing) {
        if let Some(e) = self.pending.get_mut(&id) {
            e.message = Some(message);
        }
    }

    /// The message [`Requests::hold`] kept for `id`; `None` once the request ended, or once
    /// its deadline passed (the timer ends it next: the backend, which cannot be told to drop
    /// a call, never gets it).
    pub(crate) fn take_held(&mut self, id: i64) -> Option<Outgoing> {
        let e = self.pending.get_mut(&id)?;
        if e.deadline <= Instant::now() {
            return None;
        }
        e.message.take()
    }

    /// Whether request `id` still waits for its outcome.
    pub(crate) fn contains(&self, id: i64) -> bool {
        self.pending.contains_key(&id)
    }

    /// How many requests have no outcome yet.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    fn remove(&mut self, id: i64) -> Option<Entry> {
        let e = self.pending.remove(&id)?;
        self.timers.remove(&(e.deadline, id));
        if e.message.is_some() {
            self.unsent.retain(|&u| u != id);
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cancel_msg(id: i64, target: i64, reason: &str) -> Message {
        Message::text(format!("cancel {id} {target} {reason}"))
    }

    fn req(id: i64, deadline: Instant) -> Request {
        Request {
            id,
            message: Message::text(format!("req {id}")).into(),
            deadline,
            reply: ReplyTo::Event,
            cancel: cancel_msg,
        }
    }

    fn status(o: &Outcome) -> Status {
        o.result
            .as_ref()
            .map_or_else(|e| e.status(), |_| Status::Ok)
    }

    fn later(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }

    #[test]
    fn online_request_is_sent_at_once_and_answered_once() {
        let mut r = Requests::default();
        assert_eq!(
            r.add(req(1, later(60)), true),
            Some(Message::text("req 1").into())
        );
        assert!(r.take_unsent().is_empty());
        let o = r.reply(1, Ok(Bytes::from_static(b"{}"))).unwrap();
        assert_eq!((o.id, status(&o)), (1, Status::Ok));
        assert!(
            r.reply(1, Ok(Bytes::new())).is_none(),
            "a second reply is ignored"
        );
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }

    /// In-process, a request waiting for a call keeps its message in the book: when it ends,
    /// the message, and its bytes of the send budget, are gone before its outcome is handed out.
    #[test]
    fn a_held_message_goes_with_its_request() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let held = std::sync::Arc::new(AtomicU64::new(0));
        let budget = super::super::budget::SendBudget::new(1000, held.clone(), || {});
        let metered = |id: i64, deadline: Instant| Request {
            message: budget.take(Message::text(format!("req {id}"))).unwrap(),
            ..req(id, deadline)
        };
        let mut r = Requests::default();
        let soon = later(30);
        for (id, deadline) in [(1, soon), (2, later(60))] {
            let m = r.add(metered(id, deadline), true).unwrap();
            r.hold(id, m);
        }
        assert_eq!(held.load(Ordering::Relaxed), 10);
        let ended = r.expire(soon);
        assert_eq!(
            held.load(Ordering::Relaxed),
            5,
            "dropped before the outcome is out"
        );
        assert_eq!(ended.len(), 1);
        assert!(r.take_held(1).is_none());
        // Not unsent: no connection writes it; taken for its call, it is still counted.
        assert!(r.take_unsent().is_empty());
        let m = r.take_held(2).unwrap();
        assert!(r.take_held(2).is_none());
        assert_eq!(held.load(Ordering::Relaxed), 5);
        assert_eq!(m.into_message(), Message::text("req 2"));
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    /// §3.1: a request already past its deadline when it is added is not handed out to be
    /// written; it ends with REQUEST_TIMEOUT and no cancel (the server never had it).
    #[test]
    fn spec3_1_a_request_past_its_deadline_is_not_written() {
        let mut r = Requests::default();
        let now = Instant::now();
        assert!(r.add(req(1, now), true).is_none());
        let ended = r.expire(Instant::now());
        assert_eq!(ended.len(), 1);
        assert_eq!(status(&ended[0].outcome), Status::ErrRequestTimeout);
        assert!(ended[0].cancel.is_none(), "nothing to cancel on the server");
        assert!(r.take_unsent().is_empty());
        assert_eq!(r.len(), 0);

        // Made offline, and past its deadline when the connection opens (the timer and the
        // connection were ready at once): not handed out; the timer ends it.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(r.add(req(2, soon), false).is_none());
        // Held for the in-process backend likewise: not handed to the backend once late.
        let m = r.add(req(3, soon), true).unwrap();
        r.hold(3, m);
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.take_unsent().is_empty());
        assert!(r.take_held(3).is_none());
        let ended = r.expire(Instant::now());
        assert_eq!(ended.len(), 2);
        assert!(ended
            .iter()
            .all(|e| e.cancel.is_none() && status(&e.outcome) == Status::ErrRequestTimeout));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn spec3_offline_requests_go_out_in_submission_order() {
        let mut r = Requests::default();
        for id in [5, 3, 9] {
            assert!(r.add(req(id, later(60)), false).is_none());
        }
        let sent = r.take_unsent();
        assert_eq!(
            sent,
            [(5, "req 5"), (3, "req 3"), (9, "req 9")].map(|(id, m)| (id, Message::text(m).into()))
        );
        assert!(r.take_unsent().is_empty());
    }

    #[test]
    fn spec3_5_cancel_of_a_sent_request_tells_the_server_and_an_unsent_one_does_not() {
        let mut r = Requests::default();
        r.add(req(1, later(60)), true);
        r.add(req(2, later(60)), false);
        let sent = r.end(1, Status::ErrCancelled, "why").unwrap();
        assert_eq!(status(&sent.outcome), Status::ErrCancelled);
        assert_eq!(
            (sent.cancel.unwrap())(7, 1, "why"),
            Message::text("cancel 7 1 why")
        );
        let unsent = r.end(2, Status::ErrCancelled, "why").unwrap();
        assert!(unsent.cancel.is_none());
        assert!(
            r.take_unsent().is_empty(),
            "a cancelled request is never sent"
        );
        assert!(r.end(2, Status::ErrCancelled, "why").is_none());
    }

    #[test]
    fn timeouts_fire_in_deadline_order_online_or_not() {
        let mut r = Requests::default();
        let t0 = Instant::now();
        r.add(req(1, t0 + Duration::from_millis(30)), true);
        r.add(req(2, t0 + Duration::from_millis(10)), false);
        r.add(req(3, t0 + Duration::from_millis(50)), true);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(r.expire(t0).is_empty());
        let ended = r.expire(t0 + Duration::from_millis(30));
        let ids: Vec<_> = ended.iter().map(|e| e.outcome.id).collect();
        assert_eq!(ids, [2, 1]);
        assert!(ended
            .iter()
            .all(|e| status(&e.outcome) == Status::ErrRequestTimeout));
        assert!(ended[0].cancel.is_none() && ended[1].cancel.is_some());
        assert!(r.take_unsent().is_empty());
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn a_reply_stops_the_timer() {
        let mut r = Requests::default();
        let t0 = Instant::now();
        r.add(req(1, t0), true);
        r.reply(1, Ok(Bytes::new())).unwrap();
        assert!(r.expire(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn spec10_a_cut_fails_sent_requests_and_keeps_unsent_ones() {
        let mut r = Requests::default();
        r.add(req(1, later(60)), true);
        r.add(req(2, later(60)), false);
        let failed = r.fail_sent(Status::ErrDisconnected, "lost");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].id, status(&failed[0])),
            (1, Status::ErrDisconnected)
        );
        assert_eq!(r.take_unsent(), vec![(2, Message::text("req 2").into())]);
        assert_eq!(r.len(), 1);
    }

    /// What a connection ended without writing goes out first on the next one, in its order;
    /// a request that ended meanwhile is dropped.
    #[test]
    fn put_back_requests_go_first_in_their_order() {
        let mut r = Requests::default();
        for id in [1, 2, 3] {
            r.add(req(id, later(60)), true);
        }
        r.add(req(4, later(60)), false);
        r.end(2, Status::ErrCancelled, "cancelled");
        r.put_back(
            [1, 2, 3]
                .into_iter()
                .map(|id| (id, Message::text(format!("req {id}")).into()))
                .collect(),
        );
        assert_eq!(
            r.take_unsent(),
            [(1, "req 1"), (3, "req 3"), (4, "req 4")].map(|(id, m)| (id, Message::text(m).into()))
        );
    }

    #[test]
    fn close_fails_everything_once() {
        let mut r = Requests::default();
        r.add(req(1, later(60)), true);
        r.add(req(2, later(60)), false);
        let all = r.fail_all(Status::ErrClientClosed, "closed");
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|o| status(o) == Status::ErrClientClosed));
        assert_eq!((r.len(), r.next_deadline()), (0, None));
        assert!(r.take_unsent().is_empty());
    }

    #[test]
    fn outcomes_become_response_events_or_go_to_the_waiting_caller() {
        let o = Outcome {
            id: 4,
            reply: ReplyTo::Event,
            result: Err(Error::new(Status::ErrRemote, "no \"such\" room")),
        };
        let ev = o.into_event().unwrap();
        assert_eq!(
            (ev.kind(), ev.request_id(), ev.status()),
            (EventKind::Response, 4, Status::ErrRemote)
        );
        assert_eq!(ev.data(), br#""no \"such\" room""#);

        let (tx, mut rx) = oneshot::channel();
        let o = Outcome {
            id: 5,
            reply: ReplyTo::Oneshot(tx),
            result: Ok(Bytes::from_static(b"1")),
        };
        assert!(o.into_event().is_none());
        assert_eq!(rx.try_recv().unwrap().unwrap(), Bytes::from_static(b"1"));
    }
}
