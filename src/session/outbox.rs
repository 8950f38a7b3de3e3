//! What one connection still has to write, written beside everything else the session does:
//! a write the peer does not take (a slow uplink, a server not reading yet) must not hold
//! up request deadlines, cancels, reads, pings or a close.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// One message to write, and what becomes of it if the connection ends first.
pub(crate) enum Out {
    /// Request `id`: back with the unsent requests, written on the next connection.
    Request(i64, Message),
    /// The app's packet: back with the unsent packets likewise.
    Packet(Message),
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
    /// `Control` messages handed to the websocket and flushed so far.
    controls_flushed: u64,
    /// A `Control` message was handed over: flush before the next message, so that a ping
    /// reaches the socket as soon as it can, whatever the app queues behind it.
    flush_first: bool,
}

/// What the connection left unwritten when it ended.
pub(crate) struct Unwritten {
    pub(crate) requests: Vec<(i64, Message)>,
    pub(crate) packets: Vec<Message>,
}

impl Outbox {
    /// Queues `out`. A cancel of a request not written yet takes the request out instead:
    /// the server never sees either.
    pub(crate) fn push(&mut self, out: Out) {
        if let Out::Cancel(of, _) = out {
            if self.withdraw(of) {
                return;
            }
        }
        if let Out::Control(_) = out {
            self.controls_pushed += 1;
        }
        self.items.push_back(out);
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

    /// The place of the next `Control` message pushed among all of them: it is in the socket
    /// once [`Outbox::controls_flushed`] reaches this.
    pub(crate) fn next_control_place(&self) -> u64 {
        self.controls_pushed + 1
    }

    /// How many `Control` messages were handed to the websocket and flushed.
    pub(crate) fn controls_flushed(&self) -> u64 {
        self.controls_flushed
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
                self.controls_flushed = self.controls_handed;
                if self.items.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let control = matches!(self.items.front(), Some(Out::Control(_)));
            if let Err(e) = std::task::ready!(Pin::new(&mut *sink).poll_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            let (id, m) = match self.items.pop_front().expect("not empty") {
                Out::Request(id, m) => (Some(id), m),
                Out::Packet(m) | Out::Cancel(_, m) | Out::Control(m) => (None, m),
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

    #[test]
    fn a_cancel_of_a_request_still_here_takes_it_out() {
        let mut o = Outbox::default();
        o.push(Out::Request(1, Message::text("r1")));
        o.push(Out::Control(Message::text("ping")));
        o.push(Out::Request(2, Message::text("r2")));
        o.push(Out::Cancel(1, Message::text("cancel 1")));
        o.push(Out::Cancel(9, Message::text("cancel 9")));
        o.push(Out::Packet(Message::binary(vec![1])));
        let u = o.into_unwritten();
        assert_eq!(u.requests, vec![(2, Message::text("r2"))]);
        assert_eq!(u.packets, vec![Message::binary(vec![1])]);
    }
}
