//! Per-client counters and the connection state, readable at any time from any thread while
//! the session task updates them. A leaf: imports nothing of the crate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a client's connection is. Discriminants are the C ABI's `TETHER_STATE_*` values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Created; `connect` was not called yet.
    #[default]
    Idle = 0,
    /// A connection attempt runs (TCP, TLS, upgrade, handshake).
    Connecting = 1,
    /// Connected.
    Connected = 2,
    /// Between attempts, waiting out the backoff delay.
    Waiting = 3,
    /// Closed for good (by the app, or the server refused us for good).
    Closed = 4,
    /// Paused by the app: no connection and no attempt until it unpauses.
    Paused = 5,
}

impl ConnectionState {
    fn from_u8(v: u8) -> ConnectionState {
        match v {
            1 => ConnectionState::Connecting,
            2 => ConnectionState::Connected,
            3 => ConnectionState::Waiting,
            4 => ConnectionState::Closed,
            5 => ConnectionState::Paused,
            _ => ConnectionState::Idle,
        }
    }
}

/// A snapshot of a client's counters ([`crate::Client::stats`]). Byte and message counts
/// cover every connection of the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The connection's state when the snapshot was taken (`connected_for` agrees with it).
    pub state: ConnectionState,
    /// Connection attempts started.
    pub connect_attempts: u64,
    /// Attempts that ended connected (and, for rwws, authenticated).
    pub connections: u64,
    /// gomuks: connections that asked to resume and got every missed event.
    pub resumes_succeeded: u64,
    /// gomuks: connections that asked to resume and got a fresh state (or a catchup) instead.
    pub resumes_reset: u64,
    /// Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    pub wire_bytes_in: u64,
    /// Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    pub wire_bytes_out: u64,
    /// Bytes of the messages' payloads after decompression; with gomuks compression,
    /// `1 - wire_bytes_in / payload_bytes_in` is what compression saved.
    pub payload_bytes_in: u64,
    /// Websocket data messages received (0 in-process, where no websocket carries the
    /// backend's events, nor any bytes: only `events_received` counts them).
    pub messages_received: u64,
    /// Server events received (gomuks: envelopes that are not replies or pongs; rwws:
    /// packets).
    pub events_received: u64,
    /// Requests written to a connection (in-process: handed to the backend).
    pub requests_sent: u64,
    /// Requests without an outcome yet.
    pub requests_in_flight: u64,
    /// Requests that ended with REQUEST_TIMEOUT.
    pub requests_timed_out: u64,
    /// Events waiting for the app.
    pub queued_events: u64,
    /// Round-trip time of the last ping answered with a measured round trip (see
    /// [`crate::Event::rtt`]).
    pub last_rtt: Option<Duration>,
    /// How long the current connection has been up; `None` while not connected.
    pub connected_for: Option<Duration>,
    /// Bytes of requests and packets waiting to be written: made while disconnected, or
    /// faster than the uplink carries. At most `max_unsent_bytes` (one larger message alone
    /// excepted).
    pub unsent_bytes: u64,
}

/// What the session and the dialects of one client report through: its id for log records
/// and its counters, and what its connects learned about the server's addresses.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    pub(crate) client: u64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) stalled: Arc<StalledAddrs>,
    /// gomuks: the backend's latest `client_state` said it is not logged in, so a request
    /// that needs the account would make it close the connection
    /// ([`crate::dialect::gomuks::needs_account`]).
    pub(crate) logged_out: Arc<AtomicBool>,
}

/// Server addresses that took a connection's TCP and then left TLS or the websocket upgrade
/// unanswered, oldest first: the client's later connects try them after the others (RFC 8305
/// §4 lets a client sort by what it has seen). A path-MTU black hole on one address family
/// does this: the small TCP handshake gets through and the server's certificate never
/// arrives. That address wins every TCP race, so without this each attempt would stall on it
/// until the connect timeout, for ever, while the other family works.
#[derive(Default)]
pub(crate) struct StalledAddrs(Mutex<VecDeque<SocketAddr>>);

impl StalledAddrs {
    /// How many are remembered; the oldest is forgotten first.
    const KEEP: usize = 8;

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SocketAddr>> {
        crate::lock(&self.0)
    }

    /// `a` stalled after its TCP connect.
    pub(crate) fn add(&self, a: SocketAddr) {
        let mut v = self.lock();
        v.retain(|x| *x != a);
        if v.len() == Self::KEEP {
            v.pop_front();
        }
        v.push_back(a);
    }

    /// Whether every one of `addrs` stalled (and there is one).
    pub(crate) fn all(&self, addrs: &[SocketAddr]) -> bool {
        let v = self.lock();
        !addrs.is_empty() && addrs.iter().all(|a| v.contains(a))
    }

    /// `a` completed a connection: it is tried in its usual place again.
    pub(crate) fn forget(&self, a: SocketAddr) {
        self.lock().retain(|x| *x != a);
    }

    /// `items` with those whose address (`addr`) stalled moved to the end, and how many were
    /// moved. The others keep their order; the moved ones go in the order they stalled, the
    /// one that stalled longest ago first: when every address has stalled, each connect tries
    /// first the one with the oldest failure (which may have recovered), and one that stalls
    /// again goes to the back, so no address that works is left untried for good.
    pub(crate) fn last<T>(
        &self,
        items: Vec<T>,
        addr: impl Fn(&T) -> Option<SocketAddr>,
    ) -> (Vec<T>, usize) {
        let v = self.lock();
        if v.is_empty() {
            return (items, 0);
        }
        let age = |t: &T| addr(t).and_then(|a| v.iter().position(|x| *x == a));
        let (mut stalled, fine): (Vec<T>, Vec<T>) =
            items.into_iter().partition(|t| age(t).is_some());
        stalled.sort_by_key(|t| age(t));
        let moved = stalled.len();
        (fine.into_iter().chain(stalled).collect(), moved)
    }
}

impl Probe {
    /// A probe for a new client, with the next process-wide client id (ids start at 1).
    pub(crate) fn new() -> Probe {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Probe {
            client: NEXT.fetch_add(1, Ordering::Relaxed),
            ..Probe::default()
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    /// The state (low 8 bits) and, while connected, when the connection opened (the rest:
    /// microseconds since `epoch`, plus one), in one word so that a reader never sees one
    /// state with the other's connect time.
    link: AtomicU64,
    pub(crate) connect_attempts: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) resumes_succeeded: AtomicU64,
    pub(crate) resumes_reset: AtomicU64,
    pub(crate) wire_bytes_in: AtomicU64,
    pub(crate) wire_bytes_out: AtomicU64,
    pub(crate) payload_bytes_in: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) events_received: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_in_flight: AtomicU64,
    pub(crate) requests_timed_out: AtomicU64,
    /// Shared with the client's send budget, which keeps it.
    pub(crate) unsent_bytes: Arc<AtomicU64>,
    /// Last RTT in microseconds, plus one (0: none yet).
    last_rtt_us: AtomicU64,
    epoch: EpochCell,
}

/// A fixed instant that connection times are measured from (atomics hold no `Instant`).
struct EpochCell(Instant);

impl Default for EpochCell {
    fn default() -> Self {
        EpochCell(Instant::now())
    }
}

/// Adds `n` to a counter; relaxed: each counter is read on its own, never as a set.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn state(&self) -> ConnectionState {
        Self::unpack(self.link.load(Ordering::Acquire)).0
    }

    pub(crate) fn set_state(&self, s: ConnectionState) {
        let at = if s == ConnectionState::Connected {
            // 56 bits of microseconds last two thousand years.
            self.epoch.0.elapsed().as_micros() as u64 + 1
        } else {
            0
        };
        self.link.store(at << 8 | s as u64, Ordering::Release);
    }

    /// The state and when the connection opened (0: not connected) of a `link` word.
    fn unpack(link: u64) -> (ConnectionState, u64) {
        (ConnectionState::from_u8(link as u8), link >> 8)
    }

    pub(crate) fn set_rtt(&self, rtt: Duration) {
        self.last_rtt_us
            .store(rtt.as_micros() as u64 + 1, Ordering::Relaxed);
    }

    /// A snapshot; `queued_events` comes from the queue, which the counters do not know.
    pub(crate) fn snapshot(&self, queued_events: usize) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rtt = get(&self.last_rtt_us);
        let (state, at) = Self::unpack(self.link.load(Ordering::Acquire));
        Stats {
            state,
            connect_attempts: get(&self.connect_attempts),
            connections: get(&self.connections),
            resumes_succeeded: get(&self.resumes_succeeded),
            resumes_reset: get(&self.resumes_reset),
            wire_bytes_in: get(&self.wire_bytes_in),
            wire_bytes_out: get(&self.wire_bytes_out),
            payload_bytes_in: get(&self.payload_bytes_in),
            messages_received: get(&self.messages_received),
            events_received: get(&self.events_received),
            requests_sent: get(&self.requests_sent),
            requests_in_flight: get(&self.requests_in_flight),
            requests_timed_out: get(&self.requests_timed_out),
            queued_events: queued_events as u64,
            last_rtt: (rtt > 0).then(|| Duration::from_micros(rtt - 1)),
            connected_for: (at > 0).then(|| {
                self.epoch
                    .0
                    .elapsed()
                    .saturating_sub(Duration::from_micros(at - 1))
            }),
            unsent_bytes: get(&self.unsent_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot taken while the state changes never pairs one state with the other's
    /// connect time (`connected_for` is `Some` exactly when the state is `Connected`).
    #[test]
    fn a_snapshot_never_mixes_two_states() {
        let c = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let flip = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.set_state(ConnectionState::Connected);
                    c.set_state(ConnectionState::Waiting);
                }
            })
        };
        for _ in 0..200_000 {
            let s = c.snapshot(0);
            assert_eq!(
                s.state == ConnectionState::Connected,
                s.connected_for.is_some(),
                "{s:?}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        flip.join().unwrap();
    }

    #[test]
    fn state_and_connected_time_follow_each_other() {
        let c = Counters::default();
        assert_eq!(c.state(), ConnectionState::Idle);
        assert_eq!(c.snapshot(0).connected_for, None);
        c.set_state(ConnectionState::Connected);
        std::thread::sleep(Duration::from_millis(5));
        let s = c.snapshot(3);
        assert!(s.connected_for.unwrap() >= Duration::from_millis(5));
        assert_eq!(s.queued_events, 3);
        c.set_state(ConnectionState::Waiting);
        assert_eq!(c.state(), ConnectionState::Waiting);
        assert_eq!(c.snapshot(0).connected_for, None);
    }

    #[test]
    fn rtt_zero_is_still_an_rtt() {
        let c = Counters::default();
        assert_eq!(c.snapshot(0).last_rtt, None);
        c.set_rtt(Duration::ZERO);
        assert_eq!(c.snapshot(0).last_rtt, Some(Duration::ZERO));
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], i))
    }

    #[test]
    fn stalled_addresses_go_last_until_they_connect_and_only_the_newest_are_kept() {
        let s = StalledAddrs::default();
        let all: Vec<SocketAddr> = (1..=4).map(addr).collect();
        let order = |items: &[SocketAddr]| s.last(items.to_vec(), |a| Some(*a));
        assert_eq!(order(&all), (all.clone(), 0));
        s.add(addr(3));
        s.add(addr(1));
        // 3 stalled before 1.
        assert_eq!(order(&all), (vec![addr(2), addr(4), addr(3), addr(1)], 2));
        // Every address stalled: the oldest stall goes first; stalling again sends it back.
        assert_eq!(order(&[addr(1), addr(3)]).0, [addr(3), addr(1)]);
        s.add(addr(3));
        assert_eq!(order(&[addr(1), addr(3)]).0, [addr(1), addr(3)]);
        s.forget(addr(1));
        assert_eq!(order(&all).0, [addr(1), addr(2), addr(4), addr(3)]);
        // Items without an address stay in place.
        assert_eq!(
            s.last(vec![None, Some(addr(3)), None], |a| *a).0,
            [None, None, Some(addr(3))]
        );
        for i in 10..10 + StalledAddrs::KEEP as u16 {
            s.add(addr(i));
        }
        // addr(3) was the oldest: forgotten.
        assert_eq!(order(&[addr(3), addr(2)]).1, 0);
        assert_eq!(order(&[addr(10), addr(2)]).1, 1);
    }
}
