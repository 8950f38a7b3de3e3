//! Keepalive pings in flight on one connection, apart from requests: a pong carries the
//! round-trip time and the id the ping acknowledged (gomuks-rpc.md §6, rwws-binary.md §2.7).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

struct Sent {
    id: i64,
    /// When it was made; `None` once its pong may have waited unread (see
    /// [`Pings::unmeasurable`]), which would count the client's own stall as the network's.
    at: Option<Instant>,
    acked: i64,
}

/// What a pong answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    /// The ping's id (for an id-less pong, the oldest ping's).
    pub(crate) id: i64,
    /// Round-trip time, if the ping was ours, still waiting, and the client read all along.
    pub(crate) rtt: Option<Duration>,
    /// The event id that ping acknowledged (0 if none).
    pub(crate) acked: i64,
}

/// Most unanswered pings remembered. A server that keeps sending data but answers no ping
/// keeps the link alive (any byte does), so without a bound one entry per ping interval
/// would pile up for as long as the connection lasts; a pong for a forgotten ping has no RTT.
const MAX_WAITING: usize = 64;

/// Pings sent on the current connection and not answered yet, oldest first.
#[derive(Default)]
pub(crate) struct Pings {
    waiting: VecDeque<Sent>,
}

impl Pings {
    /// A ping with request id `id` acknowledging `acked` was written at `at`.
    pub(crate) fn sent(&mut self, id: i64, at: Instant, acked: i64) {
        if self.waiting.len() == MAX_WAITING {
            self.waiting.pop_front();
        }
        self.waiting.push_back(Sent {
            id,
            at: Some(at),
            acked,
        });
    }

    /// The client stopped reading (the app's queue was full) while these pings waited, so
    /// a pong may have sat unread in the socket: their pongs still acknowledge, but report
    /// no round-trip time, rather than the app's stall as the network's latency.
    pub(crate) fn unmeasurable(&mut self) {
        for s in &mut self.waiting {
            s.at = None;
        }
    }

    /// A pong for ping `id` arrived at `now`; id 0 (rwws pongs carry none) answers the oldest.
    pub(crate) fn answered(&mut self, id: i64, now: Instant) -> Answered {
        let pos = if id == 0 {
            (!self.waiting.is_empty()).then_some(0)
        } else {
            self.waiting.iter().position(|s| s.id == id)
        };
        match pos.and_then(|p| self.waiting.remove(p)) {
            Some(s) => Answered {
                id: s.id,
                rtt: s.at.map(|at| now.saturating_duration_since(at)),
                acked: s.acked,
            },
            None => Answered {
                id,
                rtt: None,
                acked: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec6_pong_by_id_gives_rtt_and_ack() {
        let t0 = Instant::now();
        let mut p = Pings::default();
        p.sent(10, t0, -4);
        p.sent(11, t0 + Duration::from_millis(5), 0);
        let a = p.answered(11, t0 + Duration::from_millis(8));
        assert_eq!(
            a,
            Answered {
                id: 11,
                rtt: Some(Duration::from_millis(3)),
                acked: 0
            }
        );
        let a = p.answered(10, t0 + Duration::from_millis(9));
        assert_eq!(
            a,
            Answered {
                id: 10,
                rtt: Some(Duration::from_millis(9)),
                acked: -4
            }
        );
        assert_eq!(
            p.answered(10, t0),
            Answered {
                id: 10,
                rtt: None,
                acked: 0
            }
        );
    }

    #[test]
    fn spec6_pongs_of_pings_that_waited_through_a_stall_ack_without_rtt() {
        let t0 = Instant::now();
        let mut p = Pings::default();
        p.sent(10, t0, -4);
        p.unmeasurable();
        p.sent(11, t0, -5);
        let a = p.answered(10, t0 + Duration::from_secs(2));
        assert_eq!((a.id, a.rtt, a.acked), (10, None, -4));
        let a = p.answered(11, t0 + Duration::from_millis(3));
        assert_eq!(
            (a.id, a.rtt, a.acked),
            (11, Some(Duration::from_millis(3)), -5)
        );
    }

    #[test]
    fn unanswered_pings_are_bounded_oldest_forgotten_first() {
        let t0 = Instant::now();
        let mut p = Pings::default();
        for id in 1..=1000 {
            p.sent(id, t0, 0);
        }
        assert_eq!(p.waiting.len(), MAX_WAITING);
        assert_eq!(p.answered(1, t0).rtt, None, "forgotten");
        assert!(p.answered(1000, t0).rtt.is_some());
        assert_eq!(p.answered(0, t0).id, 1001 - MAX_WAITING as i64);
    }

    #[test]
    fn rwws2_7_idless_pong_answers_the_oldest_ping() {
        let t0 = Instant::now();
        let mut p = Pings::default();
        assert_eq!(
            p.answered(0, t0),
            Answered {
                id: 0,
                rtt: None,
                acked: 0
            }
        );
        p.sent(3, t0, 0);
        p.sent(4, t0, 0);
        assert_eq!(p.answered(0, t0).id, 3);
        assert_eq!(p.answered(0, t0).id, 4);
    }
}
