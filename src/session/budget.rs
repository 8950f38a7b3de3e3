//! The send budget: how many bytes of the app's requests and packets may wait to be written.
//!
//! Without it an app that sends faster than the uplink carries, or keeps sending while
//! disconnected, grows the process without bound and learns of it only when it is killed.
//! Each request or packet takes its bytes from the budget when the app hands it over and gives
//! them back when the websocket takes it (or it is dropped unsent: timed out, cancelled, or the
//! client closed). The bytes travel with the message as an [`Outgoing`], so no path that drops
//! one can forget to give them back. A call that would overdraw the budget is refused with
//! `ErrSendBufferFull` and the app keeps its message; pings and cancels are not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use crate::status::{Error, Status};

/// One client's budget; shared by the app's threads and the session task.
pub(crate) struct SendBudget {
    limit: u64,
    /// Bytes taken and not given back; read by `stats()` as `unsent_bytes`.
    held: Arc<AtomicU64>,
}

impl SendBudget {
    /// A budget of `limit` bytes whose holdings `held` counts.
    pub(crate) fn new(limit: u64, held: Arc<AtomicU64>) -> Arc<SendBudget> {
        Arc::new(SendBudget { limit, held })
    }

    /// Takes `message`'s bytes from the budget. A message larger than the whole budget is
    /// taken only while nothing else waits, so it can still be sent, alone.
    pub(crate) fn take(self: &Arc<Self>, message: Message) -> Result<Outgoing, Error> {
        let bytes = message.len() as u64;
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held.saturating_add(bytes) <= self.limit).then(|| held + bytes)
            });
        match taken {
            Ok(_) => Ok(Outgoing {
                message,
                hold: Hold {
                    budget: self.clone(),
                    bytes,
                },
            }),
            Err(held) => Err(Error::new(
                Status::ErrSendBufferFull,
                format!(
                    "{held} bytes already wait to be sent and this {bytes}-byte message would \
                     pass the limit of {} (max_unsent_bytes); send it again once fewer wait",
                    self.limit
                ),
            )),
        }
    }
}

/// A request or packet of the app's, holding its bytes of the budget until it is handed to
/// the websocket ([`Outgoing::into_message`]) or dropped.
pub(crate) struct Outgoing {
    message: Message,
    hold: Hold,
}

struct Hold {
    budget: Arc<SendBudget>,
    bytes: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Outgoing {
    /// The message for the websocket; its bytes go back to the budget now.
    pub(crate) fn into_message(self) -> Message {
        drop(self.hold);
        self.message
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Outgoing").field(&self.message).finish()
    }
}

/// Outside any budget: for tests of the parts that only move messages.
#[cfg(test)]
impl From<Message> for Outgoing {
    fn from(message: Message) -> Outgoing {
        SendBudget::new(u64::MAX, Arc::default())
            .take(message)
            .expect("an unlimited budget")
    }
}

#[cfg(test)]
impl PartialEq for Outgoing {
    fn eq(&self, other: &Outgoing) -> bool {
        self.message == other.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> (Arc<SendBudget>, Arc<AtomicU64>) {
        let held = Arc::new(AtomicU64::new(0));
        (SendBudget::new(limit, held.clone()), held)
    }

    fn msg(n: usize) -> Message {
        Message::binary(vec![7u8; n])
    }

    #[test]
    fn a_message_that_would_overdraw_is_refused_and_handed_back_bytes_free_room() {
        let (b, held) = budget(100);
        let first = b.take(msg(60)).unwrap();
        let second = b.take(msg(40)).unwrap();
        assert_eq!(held.load(Ordering::Relaxed), 100);
        let e = b.take(msg(1)).expect_err("over the limit");
        assert_eq!(e.status(), Status::ErrSendBufferFull);
        assert!(e.message().contains("100 bytes already wait"), "{e}");
        // Written: its bytes are back at once, the message itself goes on.
        assert_eq!(first.into_message().len(), 60);
        assert_eq!(held.load(Ordering::Relaxed), 40);
        b.take(msg(60)).map(drop).unwrap();
        // Dropped unsent (timed out, cancelled, closed): back too.
        drop(second);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_message_larger_than_the_budget_goes_alone() {
        let (b, held) = budget(100);
        let big = b.take(msg(500)).unwrap();
        assert_eq!(held.load(Ordering::Relaxed), 500);
        assert_eq!(
            b.take(msg(1)).err().map(|e| e.status()),
            Some(Status::ErrSendBufferFull)
        );
        drop(big);
        let small = b.take(msg(1)).unwrap();
        assert_eq!(
            b.take(msg(500)).err().map(|e| e.status()),
            Some(Status::ErrSendBufferFull),
            "only while nothing else waits"
        );
        drop(small);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn threads_racing_for_the_last_room_never_overdraw() {
        let (b, held) = budget(1000);
        let kept: Vec<Outgoing> = std::thread::scope(|s| {
            let hands: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|_| b.take(msg(10)).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hands.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(kept.len(), 100);
        assert_eq!(held.load(Ordering::Relaxed), 1000);
        drop(kept);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }
}
