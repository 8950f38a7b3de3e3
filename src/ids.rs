//! Request ids. A leaf: imports nothing of the crate.

use std::sync::atomic::{AtomicI64, Ordering};

/// Request ids: positive, increasing, shared by requests, pings and cancels (gomuks-rpc.md
/// §3.1). The start is random because the backend's in-flight table is shared by all its
/// connections (§3.5), so two clients starting at 1 would cancel each other's requests.
pub(crate) struct IdGen {
    first: i64,
    next: AtomicI64,
}

impl IdGen {
    pub(crate) fn new() -> IdGen {
        IdGen::starting_at(rand::random_range(1..1i64 << 30))
    }

    fn starting_at(first: i64) -> IdGen {
        IdGen {
            first,
            next: AtomicI64::new(first),
        }
    }

    /// The next id.
    pub(crate) fn next(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this generator handed out `id` (ids below the random start never were).
    pub(crate) fn issued(&self, id: i64) -> bool {
        id >= self.first && id < self.next.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec3_1_ids_increase_and_only_handed_out_ones_count_as_issued() {
        let ids = IdGen::starting_at(100);
        assert!(!ids.issued(100));
        assert_eq!((ids.next(), ids.next()), (100, 101));
        assert!(ids.issued(100) && ids.issued(101));
        assert!(!ids.issued(99) && !ids.issued(102) && !ids.issued(-1));
    }

    #[test]
    fn spec3_5_random_start_is_positive() {
        for _ in 0..100 {
            let id = IdGen::new().next();
            assert!((1..1 << 30).contains(&id));
        }
    }
}
