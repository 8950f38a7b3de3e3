//! What one connection still has to write, written beside everything else the session does:
//! a write the peer does not take (a slow uplink, a server not reading yet) must not hold
//! up request deadlines, cancels, reads, pings or a close.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::budget::Outgoing;
use super::uplink::Written;

/// One message to write, and what becomes of it if the connection ends first.
pub(crate) enum Out {
    /// Request `id`: back with the unsent requests, written on the next connection.
    Request(i64, Outgoing),
    /// The app's packet: back with the unsent packets likewise.
    Packet(Outgoing),
    /// The cancel of request `of` (needless while that request is still here).
    Cancel(i64, Message),
    /// A ping or anything else that only means something on this connection.
    Control(Message),
}

/// The connection's messages not handed to the websocket yet, oldest first.
#[derive(Default)]
pub(crate) struct Outbox {
    items: VecDeque<Out>,
    /// Something was handed to the websocket and not flushed yet.
    unflushed: bool,
    /// `Control` messages pushed so far: a ping's place among them tells when it is out.
    controls_pushed: u64,
    /// `Control` messages handed to the websocket so far.
    controls_handed: u64,
    /// At the last flush that took `Control` messages out: how many had been flushed then,
    /// and the bytes the connection had written by then (0 without a meter).
    control_mark: (u64, u64),
    /// The connection's written bytes, read for `control_mark`.
    meter: Option<Written>,
    /// A `Control` message was handed over: flush before the next message, so that a ping
    /// reaches the socket as soon as it can, whatever the app queues behind it.
    flush_first: bool,
}

/// What the connection left unwritten when it ended.
pub(crate) struct Unwritten {
    pub(crate) requests: Vec<(i64, Outgoing)>,
    pub(crate) packets: Vec<Outgoing>,
}

impl Outbox {
    /// Queues `out`. A cancel of a request not written yet takes the request out instead:
    /// the server never sees either. A `Control` message goes ahead of every request,
    /// packet and cancel still here (behind earlier `Control` messages): a ping is the
    /// connection's liveness and, for rwws, must reach the server at most 30 s after the last
    /// one, which a backlog of the app's packets on a slow uplink would otherwise hold up;
    /// nothing the app sent depends on its place.
    pub(crate) fn push(&mut self, out: Out) {
        match out {
            Out::Cancel(of, _) if self.withdraw(of) => {}
            Out::Control(_) => {
                self.controls_pushed += 1;
                let at = self
                    .items
                    .iter()
                    .take_while(|o| matches!(o, Out::Control(_)))
                    .count();
                self.items.insert(at, out);
            }
            _ => self.items.push_back(out),
        }
    }

    /// Takes request `id` out if it is still waiting here; true if it was.
    pub(crate) fn withdraw(&mut self, id: i64) -> bool {
        let at = self
            .items
            .iter()
            .position(|o| matches!(o, Out::Request(r, _) if *r == id));
        at.and_then(|i| self.items.remove(i)).is_some()
    }

    /// Whether anything is left to write or to flush.
    pub(crate) fn busy(&self) -> bool {
        self.unflushed || !self.items.is_empty()
    }

    /// Whether a `Control` message pushed now would wait behind anything of ours: messages
    /// handed to the websocket and not flushed, or earlier `Control` messages (it goes ahead
    /// of everything else, see [`Outbox::push`]).
    pub(crate) fn ahead_of_next_control(&self) -> bool {
        self.unflushed || matches!(self.items.front(), Some(Out::Control(_)))
    }

    /// The place of the next `Control` message pushed among all of them: it is in the socket
    /// once the count of [`Outbox::control_mark`] reaches this.
    pub(crate) fn next_control_place(&self) -> u64 {
        self.controls_pushed + 1
    }

    /// Reads the connection's written bytes from `meter` at each flush that takes `Control`
    /// messages out.
    pub(crate) fn meter(&mut self, meter: Written) {
        self.meter = Some(meter);
    }

    /// How many `Control` messages were handed to the websocket and flushed, and the bytes
    /// written right after the flush that took the last of them out.
    pub(crate) fn control_mark(&self) -> (u64, u64) {
        self.control_mark
    }

    /// Hands messages to `sink` while it takes them, then flushes; ready once everything is
    /// written, or at the first error. A `Control` message is flushed before the next one is
    /// handed over. Cancel-safe: a message leaves the outbox only when
    /// the sink takes it. `written` is called with each request id handed over.
    pub(crate) fn poll_write<S>(
        &mut self,
        sink: &mut S,
        cx: &mut Context<'_>,
        mut written: impl FnMut(i64),
    ) -> Poll<Result<(), WsError>>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        loop {
            if self.flush_first || self.items.is_empty() {
                let r = std::task::ready!(Pin::new(&mut *sink).poll_flush(cx));
                self.flush_first = false;
                self.unflushed = false;
                r?;
                if self.control_mark.0 != self.controls_handed {
                    let bytes = self.meter.as_ref().map_or(0, Written::get);
                    self.control_mark = (self.controls_handed, bytes);
                }
                if self.items.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let control = matches!(self.items.front(), Some(Out::Control(_)));
            if let Err(e) = std::task::ready!(Pin::new(&mut *sink).poll_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            let (id, m) = match self.items.pop_front().expect("not empty") {
                // Handed over, the message leaves the send budget.
                Out::Request(id, m) => (Some(id), m.into_message()),
                Out::Packet(m) => (None, m.into_message()),
                Out::Cancel(_, m) | Out::Control(m) => (None, m),
            };
            if let Some(id) = id {
                written(id);
            }
            self.unflushed = true;
            Pin::new(&mut *sink).start_send(m)?;
            if control {
                self.controls_handed += 1;
                self.flush_first = true;
            }
        }
    }

    /// Empties the outbox at the connection's end: the requests and packets to write on
    /// the next one, in order.
    pub(crate) fn into_unwritten(self) -> Unwritten {
        let mut u = Unwritten {
            requests: Vec::new(),
            packets: Vec::new(),
        };
        for o in self.items {
            match o {
                Out::Request(id, m) => u.requests.push((id, m)),
                Out::Packet(m) => u.packets.push(m),
                Out::Cancel(..) | Out::Control(_) => {}
            }
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes messages and flushes only when told to.
    #[derive(Default)]
    struct Gate {
        flush_ready: bool,
        taken: Vec<Message>,
    }

    impl Sink<Message> for Gate {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), WsError> {
            self.get_mut().taken.push(m);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            if self.flush_ready {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_ping_is_flushed_before_the_next_message_and_marks_the_bytes_written_then() {
        let mut o = Outbox::default();
        let meter = Written::default();
        o.meter(meter.clone());
        o.push(Out::Request(1, Message::text("r1").into()));
        assert_eq!(o.next_control_place(), 1);
        o.push(Out::Control(Message::text("ping")));
        o.push(Out::Request(2, Message::text("r2").into()));
        let mut sink = Gate::default();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut ids = Vec::new();
        // The ping goes first; the flush after it does not complete: nothing more is handed
        // over.
        assert!(o
            .poll_write(&mut sink, &mut cx, |id| ids.push(id))
            .is_pending());
        assert_eq!(sink.taken, [Message::text("ping")]);
        assert_eq!(o.control_mark(), (0, 0));
        assert!(o.busy());
        // Polled again (as after a cancelled select branch), it goes on where it stopped.
        meter.add(123);
        sink.flush_ready = true;
        assert!(o
            .poll_write(&mut sink, &mut cx, |id| ids.push(id))
            .is_ready());
        assert_eq!(
            o.control_mark(),
            (1, 123),
            "the bytes written when the ping was out"
        );
        assert_eq!(sink.taken.len(), 3);
        assert_eq!(ids, [1, 2], "each request reported once");
        assert!(!o.busy());
        assert_eq!(o.next_control_place(), 2);
    }

    /// rwws-binary.md §2.7 (pings at most 30 s apart) and gomuks-rpc.md §8: a ping does not
    /// wait behind the app's requests, packets and cancels not written yet; pings keep their
    /// order among themselves, and so does everything else.
    #[test]
    fn a_ping_goes_ahead_of_what_the_app_queued() {
        let mut o = Outbox::default();
        o.push(Out::Request(1, Message::text("r1").into()));
        o.push(Out::Packet(Message::binary(vec![1]).into()));
        o.push(Out::Control(Message::text("ping1")));
        o.push(Out::Cancel(7, Message::text("cancel 7")));
        o.push(Out::Control(Message::text("ping2")));
        o.push(Out::Request(2, Message::text("r2").into()));
        assert!(o.ahead_of_next_control(), "behind ping1 and ping2");
        let mut sink = Gate {
            flush_ready: true,
            ..Gate::default()
        };
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut ids = Vec::new();
        assert!(o
            .poll_write(&mut sink, &mut cx, |id| ids.push(id))
            .is_ready());
        assert_eq!(
            sink.taken,
            [
                Message::text("ping1"),
                Message::text("ping2"),
                Message::text("r1"),
                Message::binary(vec![1]),
                Message::text("cancel 7"),
                Message::text("r2"),
            ]
        );
        assert_eq!(ids, [1, 2]);
        assert_eq!(o.control_mark().0, 2, "both pings counted as out");
        // Requests alone, none handed over: a ping would be the first thing written.
        o.push(Out::Request(3, Message::text("r3").into()));
        assert!(o.busy() && !o.ahead_of_next_control());
    }

    #[test]
    fn a_cancel_of_a_request_still_here_takes_it_out() {
        let mut o = Outbox::default();
        o.push(Out::Request(1, Message::text("r1").into()));
        o.push(Out::Control(Message::text("ping")));
        o.push(Out::Request(2, Message::text("r2").into()));
        o.push(Out::Cancel(1, Message::text("cancel 1")));
        o.push(Out::Cancel(9, Message::text("cancel 9")));
        o.push(Out::Packet(Message::binary(vec![1]).into()));
        let u = o.into_unwritten();
        assert_eq!(u.requests, vec![(2, Message::text("r2").into())]);
        assert_eq!(u.packets, vec![Message::binary(vec![1]).into()]);
    }
}
