//! The backend's event buffer and per-listener ack entries, with the semantics of gomuks'
//! buffer (gomuks-rpc.md §7.1–§7.4) — including its weaknesses, because a client that only
//! works against a kinder buffer would fail against the real one:
//!
//! - ids are consumed for every cacheable event, but events are *stored* only while at least
//!   one listener has an ack entry (§7.1);
//! - every ack and every entry removal runs a GC that drops everything up to and including the
//!   oldest ack, and drops any listener whose ack is newer than the oldest stored id — which
//!   includes a fully caught-up listener that acks the same id twice (§7.4 item 2);
//! - `prev_listener_id` removes the old entry, and GCs, before the new listener subscribes
//!   (§7.4 item 1);
//! - resume needs `last_received_event - 1` to be still stored (or to be the next id).
//!
//! Ids are negative and grow more negative; "newer" means more negative. `buf[i]` holds id
//! `min_id - i`. An empty buffer has `min_id == max_id - 1` (the id the next event gets).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// See the module documentation.
#[derive(Debug)]
pub struct EventBuffer {
    buf: VecDeque<(i64, Arc<str>)>,
    /// Id of `buf[0]` (the oldest stored event), or `max_id - 1` when nothing is stored.
    min_id: i64,
    /// The newest id handed out (0 before the first event).
    max_id: i64,
    max_size: usize,
    acked: HashMap<u64, i64>,
}

impl EventBuffer {
    /// A buffer that stores at most `max_size` events. 0 disables caching: events then get no
    /// id at all (`request_id` 0), as in gomuks' FFI and wasm builds (§7.1).
    pub fn new(max_size: usize) -> EventBuffer {
        EventBuffer {
            buf: VecDeque::new(),
            min_id: -1,
            max_id: 0,
            max_size,
            acked: HashMap::new(),
        }
    }

    /// The newest id handed out (0 before the first).
    pub fn newest_id(&self) -> i64 {
        self.max_id
    }

    /// How many events are stored.
    pub fn stored(&self) -> usize {
        self.buf.len()
    }

    /// Every listener's ack entry.
    pub fn acks(&self) -> &HashMap<u64, i64> {
        &self.acked
    }

    /// Assigns the next id to an event and stores it if anyone could resume from it. `line`
    /// builds the wire line for the id. Returns the id (0 when caching is disabled) and the line.
    pub fn push(&mut self, line: impl FnOnce(i64) -> Arc<str>) -> (i64, Arc<str>) {
        if self.max_size == 0 {
            return (0, line(0));
        }
        self.max_id -= 1;
        let id = self.max_id;
        let line = line(id);
        if self.acked.is_empty() {
            // Nobody could resume: consume the id only.
            self.min_id = self.max_id - 1;
        } else {
            self.buf.push_back((id, line.clone()));
        }
        if self.buf.len() > self.max_size {
            let excess = self.buf.len() - self.max_size;
            self.buf.drain(..excess);
            self.min_id = self.buf[0].0;
        }
        (id, line)
    }

    /// A ping's `last_received_id` (non-zero) for `listener`.
    pub fn ack(&mut self, listener: u64, id: i64) {
        self.acked.insert(listener, id);
        self.gc();
    }

    /// Removes `listener`'s entry (close 1001, or `prev_listener_id` on a later connection).
    pub fn forget(&mut self, listener: u64) {
        self.acked.remove(&listener);
        self.gc();
    }

    fn gc(&mut self) {
        let min_id = self.min_id;
        let mut needed = self.max_id;
        self.acked.retain(|_, &mut ack| {
            // An ack newer than the oldest stored id counts as "too far behind" — even when
            // it means the listener is simply caught up (§7.4 item 2).
            if ack > min_id {
                return false;
            }
            needed = needed.max(ack);
            true
        });
        // The acked event itself is not needed again: keep from the next one on.
        needed -= 1;
        if needed < self.min_id {
            let drop = usize::try_from(self.min_id - needed).unwrap_or(usize::MAX);
            self.buf.drain(..drop.min(self.buf.len()));
            self.min_id = needed;
        }
    }

    /// Registers `listener`. With `resume_from < 0` (the run id already checked by the caller)
    /// and every event after it still stored, returns them (possibly none) and starts the
    /// listener's entry there; otherwise `None` (a fresh start) and the entry starts at the
    /// newest id.
    pub fn subscribe(&mut self, listener: u64, resume_from: i64) -> Option<Vec<Arc<str>>> {
        let resumable =
            resume_from < 0 && resume_from - 1 <= self.min_id && resume_from >= self.max_id;
        if !resumable {
            self.acked.insert(listener, self.max_id);
            return None;
        }
        // `buf[k]` holds id `min_id - k`, so the event right after `resume_from` is at
        // `min_id - resume_from + 1`; `resumable` makes that at most `buf.len()`.
        let start = usize::try_from(self.min_id - resume_from + 1).unwrap_or(0);
        let replay = self
            .buf
            .iter()
            .skip(start)
            .map(|(_, line)| line.clone())
            .collect();
        self.acked.insert(listener, resume_from);
        Some(replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: i64) -> Arc<str> {
        format!("{id}").into()
    }

    fn ids(lines: &[Arc<str>]) -> Vec<i64> {
        lines.iter().map(|l| l.parse().unwrap()).collect()
    }

    fn push(b: &mut EventBuffer, n: usize) {
        for _ in 0..n {
            b.push(line);
        }
    }

    /// §7.1: with no ack entry, events consume ids but are not stored.
    #[test]
    fn spec7_1_nothing_is_stored_without_listeners() {
        let mut b = EventBuffer::new(512);
        push(&mut b, 3);
        assert_eq!((b.newest_id(), b.stored()), (-3, 0));
        assert_eq!(b.subscribe(1, 0), None);
        push(&mut b, 2);
        assert_eq!(b.stored(), 2);
        assert_eq!(b.acks()[&1], -3);
    }

    /// §7.2: a listener that disconnects without 1001 keeps its entry and resumes with exactly
    /// the events after its last received one; with nothing missed the replay is empty.
    #[test]
    fn spec7_2_resume_replays_what_was_missed() {
        let mut b = EventBuffer::new(512);
        b.subscribe(1, 0);
        push(&mut b, 5);
        b.ack(1, -3);
        let replay = b.subscribe(2, -5).expect("resumable");
        assert!(replay.is_empty());
        push(&mut b, 2);
        assert_eq!(ids(&b.subscribe(3, -5).expect("resumable")), [-6, -7]);
        // Not yet issued, or positive: fresh start.
        assert_eq!(b.subscribe(4, -8), None);
        assert_eq!(b.subscribe(5, 3), None);
    }

    /// §7.1: the buffer holds at most `max_size` events; a resume from before them fails.
    #[test]
    fn spec7_1_overflow_makes_old_resume_points_fail() {
        let mut b = EventBuffer::new(4);
        b.subscribe(1, 0);
        push(&mut b, 10);
        assert_eq!(b.stored(), 4);
        assert_eq!(b.subscribe(2, -3), None);
        assert_eq!(
            ids(&b.subscribe(3, -6).expect("resumable")),
            [-7, -8, -9, -10]
        );
    }

    /// §7.4 item 2: a caught-up listener that acks the same id twice loses its entry, and
    /// with no other listener nothing is stored any more.
    #[test]
    fn spec7_4_idle_double_ack_drops_the_listener() {
        let mut b = EventBuffer::new(512);
        b.subscribe(1, 0);
        push(&mut b, 3);
        b.ack(1, -3);
        assert!(b.acks().contains_key(&1));
        b.ack(1, -3);
        assert!(!b.acks().contains_key(&1), "{:?}", b.acks());
        push(&mut b, 2);
        assert_eq!(b.stored(), 0);
        assert_eq!(
            b.subscribe(2, -3),
            None,
            "the missed events were never stored"
        );
    }

    /// §7.4 item 1: removing the old entry (prev_listener_id) before subscribing empties the
    /// buffer when no other listener holds it, so a client that missed events cannot resume.
    #[test]
    fn spec7_4_prev_listener_id_defeats_resume() {
        let mut with_prev = EventBuffer::new(512);
        let mut without = EventBuffer::new(512);
        for b in [&mut with_prev, &mut without] {
            b.subscribe(1, 0);
            push(b, 25);
            b.ack(1, -20);
            push(b, 7);
        }
        assert_eq!(
            ids(&without.subscribe(2, -25).expect("resumable")),
            (-32..=-26).rev().collect::<Vec<_>>()
        );
        with_prev.forget(1);
        assert_eq!(with_prev.subscribe(2, -25), None);
    }

    /// §7.1: close 1001 frees the entry; GC then trims what only that listener needed.
    #[test]
    fn spec7_1_forgetting_the_last_listener_empties_the_buffer() {
        let mut b = EventBuffer::new(512);
        b.subscribe(1, 0);
        push(&mut b, 5);
        b.forget(1);
        assert_eq!(b.stored(), 0);
        assert!(b.acks().is_empty());
    }

    /// §7.1: size 0 disables caching: no ids at all.
    #[test]
    fn spec7_1_size_zero_disables_ids() {
        let mut b = EventBuffer::new(0);
        b.subscribe(1, 0);
        assert_eq!(b.push(line).0, 0);
        assert_eq!(b.newest_id(), 0);
    }
}
