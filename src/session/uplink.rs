//! What the peer has acknowledged of the bytes a connection wrote, so that a pong deadline can
//! tell a slow uplink from a dead one.
//!
//! A ping written behind megabytes of earlier sends sits in the kernel's send buffer until the
//! link has carried them; on a slow uplink that takes longer than the pong timeout, and the
//! server's silence until then says nothing about the server. The kernel knows how many of the
//! bytes handed to it the peer has not acknowledged yet (Linux and Android: `SIOCOUTQ`; Apple:
//! `SO_NWRITE`). While the peer keeps acknowledging bytes that were ahead of the ping, the link
//! is carrying them; a peer that stopped acknowledging is gone, or has stopped reading.
//!
//! "The peer" is the first hop: a proxy, or a load balancer that ends TLS, acknowledges what
//! it buffers; a server behind it is judged only once the ping has reached that hop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A backlog small enough to count as nothing: a ping behind no more than this keeps its
/// deadline unchanged. 64 KiB is a second or less on 3G and later uplinks; on 2G it is about a
/// pong timeout, as a message in flight always was.
const SMALL: u64 = 64 * 1024;

/// Bytes written to one TCP connection, counted by its stream; shared with [`Uplink`].
#[derive(Clone, Default)]
pub(crate) struct Written(Arc<AtomicU64>);

impl Written {
    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The send side of one open connection.
pub(crate) struct Uplink {
    written: Written,
    #[cfg(unix)]
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android", target_vendor = "apple")),
        allow(dead_code)
    )]
    fd: std::os::fd::RawFd,
}

/// The state of the uplink at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// Bytes handed to the kernel that the peer has not acknowledged.
    pub(crate) unacked: u64,
    /// Bytes the peer has acknowledged since the connection opened.
    pub(crate) acked: u64,
}

/// One unanswered ping, as the uplink saw it.
///
/// A ping with (almost) nothing of ours ahead of it reached the peer at once, so its deadline
/// stands. One queued behind a backlog is waited for while the peer keeps acknowledging our
/// bytes, and once the ping's own bytes are acknowledged, for one more pong timeout: it may
/// have arrived only just now. The outbox flushes a ping before anything queued after it, and
/// the bytes written by then bound the wait, however much the app goes on sending.
pub(crate) struct PingTrack {
    /// Whether a backlog was ahead of the ping when it was queued.
    behind: bool,
    /// The backlog at the previous look (first: when the ping was queued).
    last: Option<Backlog>,
    /// The ping's place among the outbox's `Control` messages.
    place: u64,
    /// Bytes written when the ping was flushed: once the peer has acknowledged these, it has
    /// the ping.
    end: Option<u64>,
    /// Whether a look has seen the ping acknowledged.
    arrived: bool,
    /// Whether the last look put the deadline off.
    put_off: bool,
}

/// Why a pong deadline is put off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The peer acknowledged bytes ahead of the ping since the last look; this many of ours
    /// are still unacknowledged.
    Moving(u64),
    /// The peer has acknowledged the ping since the last look.
    Arrived,
}

impl PingTrack {
    /// A ping about to be queued as `Control` message `place`, behind `backlog` in the kernel
    /// and, if `queued`, behind messages tether has not flushed yet.
    pub(crate) fn sent(backlog: Option<Backlog>, queued: bool, place: u64) -> PingTrack {
        PingTrack {
            behind: backlog.is_some_and(|b| queued || b.unacked > SMALL),
            last: backlog,
            place,
            end: None,
            arrived: false,
            put_off: false,
        }
    }

    /// Takes the outbox's mark (`Outbox::control_mark`): once its count reaches the ping's
    /// place, its bytes bound where the ping ends.
    pub(crate) fn flushed(&mut self, (controls_flushed, written): (u64, u64)) {
        if self.end.is_none() && controls_flushed >= self.place {
            self.end = Some(written);
        }
    }

    /// What a look with the backlog `now` finds, without counting as a look.
    pub(crate) fn judge(&self, now: Option<Backlog>) -> Option<Wait> {
        let now = now.filter(|_| self.behind)?;
        if self.end.is_some_and(|e| now.acked >= e) {
            (!self.arrived).then_some(Wait::Arrived)
        } else {
            let moving = self.last.is_some_and(|l| now.acked > l.acked);
            moving.then_some(Wait::Moving(now.unacked))
        }
    }

    /// At the ping's deadline, the server silent since: whether to wait one more pong
    /// timeout, given the backlog now.
    pub(crate) fn wait_more(&mut self, now: Option<Backlog>) -> Option<Wait> {
        let wait = self.judge(now);
        self.arrived |= wait == Some(Wait::Arrived);
        self.put_off = wait.is_some();
        self.last = now;
        wait
    }

    /// Whether the ping's deadline is being waited for, by its last look or by what a look
    /// would find now: a verdict on the link is still to come.
    pub(crate) fn pending(&self, now: Option<Backlog>) -> bool {
        self.put_off || self.judge(now).is_some()
    }

    /// Progress is counted from `backlog` on: the app stopped reading for a while, and what
    /// the peer acknowledged meanwhile says nothing about the link now.
    pub(crate) fn restart(&mut self, backlog: Option<Backlog>) {
        self.last = backlog;
    }
}

impl Uplink {
    /// The uplink of the TCP connection `fd` whose writes `written` counts.
    ///
    /// # Safety
    ///
    /// `fd` must stay open, as that connection, for as long as the value is used: the
    /// stream that owns it must outlive it.
    #[cfg(unix)]
    pub(crate) unsafe fn new(written: Written, fd: std::os::fd::RawFd) -> Uplink {
        Uplink { written, fd }
    }

    /// See the unix variant: other systems never tell the backlog.
    #[cfg(not(unix))]
    pub(crate) fn new(written: Written) -> Uplink {
        Uplink { written }
    }

    /// The count of bytes written to the connection.
    pub(crate) fn meter(&self) -> Written {
        self.written.clone()
    }

    /// The backlog now; `None` where the system does not tell it.
    pub(crate) fn backlog(&self) -> Option<Backlog> {
        let unacked = self.unacked()?;
        Some(Backlog {
            unacked,
            acked: self.written.get().saturating_sub(unacked),
        })
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn unacked(&self) -> Option<u64> {
        let mut n: libc::c_int = 0;
        // SIOCOUTQ (the same number as TIOCOUTQ): unsent plus sent-but-unacknowledged bytes.
        // SAFETY: the descriptor is open (`new`'s contract) and `n` outlives the call.
        let r = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ as _, &mut n) };
        (r == 0).then(|| u64::try_from(n).unwrap_or(0))
    }

    #[cfg(target_vendor = "apple")]
    fn unacked(&self) -> Option<u64> {
        let mut n: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SO_NWRITE: bytes in the send buffer, which keeps them until they are acknowledged.
        // SAFETY: the descriptor is open (`new`'s contract); `n` and `len` outlive the call.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_NWRITE,
                (&mut n as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then(|| u64::try_from(n).unwrap_or(0))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    fn unacked(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unacked: u64, acked: u64) -> Backlog {
        Backlog { unacked, acked }
    }

    /// A ping queued as control message 5 (`sent`: backlog, tether holds unflushed
    /// messages), then looked at deadline after deadline: (backlog, controls flushed and
    /// bytes written before the look).
    fn looks(
        sent: (Option<Backlog>, bool),
        at: &[(Option<Backlog>, u64, u64)],
    ) -> Vec<Option<Wait>> {
        let mut t = PingTrack::sent(sent.0, sent.1, 5);
        at.iter()
            .map(|&(b, f, w)| {
                t.flushed((f, w));
                t.wait_more(b)
            })
            .collect()
    }

    const MB: u64 = 1 << 20;
    use Wait::{Arrived, Moving};

    #[test]
    fn a_ping_with_little_ahead_keeps_its_deadline() {
        let idle = Some(at(0, 100));
        assert_eq!(looks((idle, false), &[(idle, 5, 100)]), [None]);
        // A message in flight when the ping went out changes nothing,
        let small = Some(at(2000, 100));
        assert_eq!(
            looks((small, false), &[(Some(at(0, 2100)), 5, 2100)]),
            [None]
        );
        // nor do our writes after the ping,
        assert_eq!(
            looks((idle, false), &[(Some(at(MB, 100)), 5, MB + 100)]),
            [None]
        );
        // nor a system that does not tell.
        assert_eq!(looks((None, true), &[(None, 5, 100)]), [None]);
    }

    #[test]
    fn a_ping_behind_a_backlog_waits_while_it_moves_then_one_timeout_more() {
        let sent = (Some(at(MB, 100)), true);
        let end = 2 * MB + 700;
        assert_eq!(
            looks(
                sent,
                &[
                    (Some(at(MB, 300)), 4, 2 * MB),        // moving, ping not flushed yet
                    (Some(at(2 * MB + 100, 600)), 5, end), // moving; flushed at `end`
                    (Some(at(0, end)), 6, end),            // arrived since the last look
                    (Some(at(0, end)), 6, end),            // and the server still silent
                ]
            ),
            [
                Some(Moving(MB)),
                Some(Moving(2 * MB + 100)),
                Some(Arrived),
                None
            ]
        );
    }

    #[test]
    fn an_app_that_keeps_sending_does_not_hold_off_the_verdict() {
        // The peer takes every byte, the app writes more all the time: the ping was flushed
        // when 2 MB had been written; once those are acknowledged, one more timeout.
        let mut t = PingTrack::sent(Some(at(MB, 0)), true, 5);
        t.flushed((5, 2 * MB));
        t.flushed((9, 3 * MB));
        assert_eq!(t.wait_more(Some(at(2 * MB, MB))), Some(Moving(2 * MB)));
        t.flushed((13, 5 * MB));
        assert_eq!(t.wait_more(Some(at(3 * MB, 2 * MB))), Some(Arrived));
        t.flushed((17, 7 * MB));
        assert_eq!(t.wait_more(Some(at(4 * MB, 3 * MB))), None);
    }

    #[test]
    fn a_ping_behind_a_backlog_that_stopped_moving_is_not_waited_for() {
        let sent = (Some(at(MB, 100)), false);
        assert_eq!(looks(sent, &[(Some(at(MB, 100)), 5, MB + 100)]), [None]);
        assert_eq!(
            looks(
                sent,
                &[
                    (Some(at(MB, 500)), 4, MB + 500),
                    (Some(at(MB, 500)), 4, MB + 500)
                ]
            ),
            [Some(Moving(MB)), None]
        );
        // A backlog the system stops telling ends the wait.
        assert_eq!(looks(sent, &[(None, 5, 1000)]), [None]);
    }

    #[test]
    fn judging_is_not_a_look_and_a_restart_counts_progress_from_then() {
        let mut t = PingTrack::sent(Some(at(MB, 0)), true, 5);
        assert_eq!(t.judge(Some(at(MB, 10))), Some(Moving(MB)));
        assert_eq!(
            t.judge(Some(at(MB, 10))),
            Some(Moving(MB)),
            "judge changes nothing"
        );
        assert!(t.pending(Some(at(MB, 10))));
        assert_eq!(t.wait_more(Some(at(MB, 10))), Some(Moving(MB)));
        assert!(t.pending(Some(at(MB, 10))), "the look put it off");
        t.restart(Some(at(MB, 500)));
        assert_eq!(t.wait_more(Some(at(MB, 500))), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_backlog_counts_what_the_peer_has_not_acknowledged() {
        use std::os::fd::AsRawFd;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let written = Written::default();
        // SAFETY: `c` outlives `up`.
        let up = unsafe { Uplink::new(written.clone(), c.as_raw_fd()) };
        c.write_all(b"hello").await.unwrap();
        written.add(5);
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        // Loopback acknowledges at once; give the ACK a moment to be processed.
        let mut b = up.backlog().expect("linux tells the backlog");
        for _ in 0..100 {
            if b.unacked == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            b = up.backlog().unwrap();
        }
        assert_eq!(b, at(0, 5));
    }
}
