//! The send budget: how many bytes of the app's requests and packets may wait to be written.
//!
//! Without it an app that sends faster than the uplink carries, or keeps sending while
//! disconnected, grows the process without bound and learns of it only when it is killed.
//! Each request or packet takes its bytes from the budget when the app hands it over and gives
//! them back when the websocket takes it (or it is dropped unsent: timed out, cancelled, or the
//! client closed). The bytes travel with the message as an [`Outgoing`], so no path that drops
//! one can forget to give them back. A call that would overdraw the budget is refused with
//! `ErrSendBufferFull` and the app keeps its message; pings and cancels are not counted.
//!
//! After a refusal the app needs to know when to try again without polling `unsent_bytes`:
//! the first give-back after which the largest message refused would fit with at most half
//! the limit waiting announces it (SEND_READY). Half, not "any room", so a refused app is
//! woken once the uplink has really caught up, not for every message written while it is
//! full. An app that is never refused never sees one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::Message;

use crate::status::{Error, Status};

/// One client's budget; shared by the app's threads and the session task.
pub(crate) struct SendBudget {
    limit: u64,
    /// Bytes taken and not given back; read by `stats()` as `unsent_bytes`.
    held: Arc<AtomicU64>,
    /// One more than the size of the largest message refused since room was last announced;
    /// 0: none was. Changed only under `runs`; a give-back reads it without the lock and
    /// takes the lock only when a refusal is recorded.
    refused: AtomicU64,
    /// Orders refusals and announcements (not takes and give-backs, which stay lock-free).
    runs: Mutex<()>,
    /// Announces room after a refusal; called on whichever thread gave the bytes back.
    ready: Box<dyn Fn() + Send + Sync>,
}

impl SendBudget {
    /// A budget of `limit` bytes whose holdings `held` counts; after a refusal, `ready` is
    /// called once, when room frees (see [`SendBudget::announce_room`]). It runs on the thread
    /// that gave the bytes back, so it must not block, nor take a lock held while a message
    /// is dropped.
    pub(crate) fn new(
        limit: u64,
        held: Arc<AtomicU64>,
        ready: impl Fn() + Send + Sync + 'static,
    ) -> Arc<SendBudget> {
        Arc::new(SendBudget {
            limit,
            held,
            refused: AtomicU64::new(0),
            runs: Mutex::new(()),
            ready: Box::new(ready),
        })
    }

    /// Announces room if a call was refused and, now, the largest message refused would fit
    /// with at most half the limit waiting (or nothing waits: a message larger than the
    /// limit goes alone). Called after every give-back, which costs one load while nobody
    /// is refused. Room is a look at one moment: a take may fill it again before the app
    /// acts on the event, and is then refused and announced anew.
    fn announce_room(&self) {
        if self.refused.load(Ordering::SeqCst) == 0 {
            return;
        }
        let announce = {
            let _runs = crate::lock(&self.runs);
            let want = self.refused.load(Ordering::SeqCst);
            let room = want != 0 && self.has_room(want);
            if room {
                self.refused.store(0, Ordering::SeqCst);
            }
            room
        };
        if announce {
            (self.ready)();
        }
    }

    /// Whether a refused message of `want - 1` bytes would fit now with at most half the
    /// limit waiting.
    fn has_room(&self, want: u64) -> bool {
        let held = self.held.load(Ordering::SeqCst);
        held == 0 || held <= (self.limit / 2).min(self.limit.saturating_sub(want - 1))
    }

    /// Takes `message`'s bytes from the budget. A message larger than the whole budget is
    /// taken only while nothing else waits, so it can still be sent, alone.
    ///
    /// A take that finds no room records a refusal, then tries once more: a give-back may
    /// have freed room after the first try without seeing the record (it reads the record
    /// after its own write, the second try reads the bytes after the record's, all SeqCst, so
    /// one of the two sees the other). If the second try succeeds the record goes back to
    /// what it was, under the lock that every change of the record takes: this call was not
    /// refused, and announces nothing. If it fails, no room was owed an announcement yet, and
    /// every later give-back sees the record.
    pub(crate) fn take(self: &Arc<Self>, message: Message) -> Result<Outgoing, Error> {
        let bytes = message.len() as u64;
        let attempt = || {
            self.held
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                    (held == 0 || held.saturating_add(bytes) <= self.limit).then(|| held + bytes)
                })
        };
        if attempt().is_err() {
            let _runs = crate::lock(&self.runs);
            let before = self
                .refused
                .fetch_max(bytes.saturating_add(1), Ordering::SeqCst);
            if let Err(held) = attempt() {
                return Err(self.full(held, bytes));
            }
            self.refused.store(before, Ordering::SeqCst);
        }
        Ok(Outgoing {
            message,
            hold: Hold {
                budget: self.clone(),
                bytes,
            },
        })
    }

    fn full(&self, held: u64, bytes: u64) -> Error {
        Error::new(
            Status::ErrSendBufferFull,
            format!(
                "{held} bytes already wait to be sent and this {bytes}-byte message would pass \
                 the limit of {} (max_unsent_bytes); send it again after the SEND_READY event",
                self.limit
            ),
        )
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
        self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
        self.budget.announce_room();
    }
}

impl Outgoing {
    /// The message, still held in the budget.
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

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
        SendBudget::new(u64::MAX, Arc::default(), || {})
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
        let (b, held, _) = announcing(limit);
        (b, held)
    }

    /// A budget that counts how often it announced room.
    fn announcing(limit: u64) -> (Arc<SendBudget>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let held = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(AtomicU64::new(0));
        let count = ready.clone();
        let b = SendBudget::new(limit, held.clone(), move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        (b, held, ready)
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

    #[test]
    fn room_is_announced_once_per_refusal_when_half_the_limit_or_less_waits() {
        let (b, _, ready) = announcing(100);
        let mut kept: Vec<Outgoing> = (0..10).map(|_| b.take(msg(10)).unwrap()).collect();
        // Bytes going back while nobody was refused announce nothing.
        kept.truncate(8);
        assert_eq!(ready.load(Ordering::SeqCst), 0);
        kept.extend((0..2).map(|_| b.take(msg(10)).unwrap()));
        assert!(b.take(msg(10)).is_err());
        assert!(
            b.take(msg(10)).is_err(),
            "a second refusal: still one episode"
        );
        kept.truncate(6);
        assert_eq!(ready.load(Ordering::SeqCst), 0, "60 of 100 still wait");
        kept.truncate(5);
        assert_eq!(ready.load(Ordering::SeqCst), 1, "50 of 100 wait");
        kept.clear();
        assert_eq!(ready.load(Ordering::SeqCst), 1, "once per refusal");
    }

    #[test]
    fn room_is_announced_when_the_largest_refused_message_fits() {
        let (b, _, ready) = announcing(100);
        let mut kept: Vec<Outgoing> = (0..6).map(|_| b.take(msg(10)).unwrap()).collect();
        // 60 wait; a 70-byte message needs 30 or less.
        assert!(b.take(msg(70)).is_err());
        kept.truncate(4);
        assert_eq!(
            ready.load(Ordering::SeqCst),
            0,
            "40 wait: half, but no room for 70"
        );
        kept.truncate(3);
        assert_eq!(ready.load(Ordering::SeqCst), 1);
        // Larger than the whole budget: it goes alone, so only an empty budget is room.
        assert!(b.take(msg(500)).is_err());
        kept.truncate(1);
        assert_eq!(ready.load(Ordering::SeqCst), 1);
        kept.clear();
        assert_eq!(ready.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_refusal_racing_give_backs_is_always_announced() {
        for _ in 0..200 {
            let (b, held, ready) = announcing(100);
            let refusals = AtomicU64::new(0);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        let mut kept = Vec::new();
                        for i in 0..50 {
                            match b.take(msg(30)) {
                                Ok(o) => kept.push(o),
                                Err(_) => {
                                    refusals.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            if i % 3 == 0 {
                                kept.clear();
                            }
                        }
                    });
                }
            });
            assert_eq!(held.load(Ordering::SeqCst), 0);
            let (refused, announced) = (
                refusals.load(Ordering::SeqCst),
                ready.load(Ordering::SeqCst),
            );
            // Every refusal is followed by an announcement (none is left pending), and none
            // comes without one: a take that finds room on its second try leaves no record.
            assert_eq!(b.refused.load(Ordering::SeqCst), 0, "{refused} refused");
            assert!(
                announced <= refused && (refused == 0) == (announced == 0),
                "{refused} refused, {announced} announced"
            );
        }
    }
}
