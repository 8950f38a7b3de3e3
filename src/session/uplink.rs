//! What the peer has acknowledged of the bytes a connection wrote, so that a deadline can tell
//! a slow uplink from a dead one.
//!
//! A ping written behind megabytes of earlier sends sits in the kernel's send buffer until the
//! link has carried them; on a slow uplink that takes longer than the pong timeout, and the
//! server's silence until then says nothing about the server. The kernel knows how many of the
//! bytes handed to it the peer has not acknowledged yet (Linux and Android: `SIOCOUTQ`; Apple:
//! `SO_NWRITE`). While that backlog is not empty and the peer keeps acknowledging, bytes are
//! moving; a peer that stopped acknowledging is gone, or has stopped reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes written to one TCP connection, counted by its stream; shared with [`Uplink`].
#[derive(Clone, Default)]
pub(crate) struct Written(Arc<AtomicU64>);

impl Written {
    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The send side of one open connection.
///
/// Holds the socket's descriptor without owning it: the session keeps the stream that owns it
/// open for as long as it uses this value.
pub(crate) struct Uplink {
    written: Written,
    #[cfg(unix)]
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

impl Backlog {
    /// Whether the peer still has bytes of ours to take and acknowledged some since
    /// `earlier` (with no earlier look, a backlog alone counts): the link is carrying our
    /// bytes, so the silence of its other direction may be our own backlog's doing.
    pub(crate) fn moving_since(&self, earlier: Option<Backlog>) -> bool {
        self.unacked > 0 && !matches!(earlier, Some(e) if self.acked <= e.acked)
    }
}

/// One ping the server has not answered by its deadline, as the uplink saw it.
///
/// A ping with nothing of ours ahead of it reached the server at once, so its deadline
/// stands. One written behind a backlog is waited for while the peer keeps taking our bytes,
/// and once those include the ping, for one more pong timeout: it may have arrived just now.
pub(crate) struct PingTrack {
    /// Whether bytes of ours were ahead of the ping when it was sent.
    behind: bool,
    /// The backlog at the previous look (first: when the ping was sent).
    last: Option<Backlog>,
    /// Bytes written once the ping was surely among them (at a look with nothing unflushed).
    end: Option<u64>,
    /// Whether a look has seen the ping acknowledged.
    arrived: bool,
}

impl PingTrack {
    /// A ping about to be queued behind `backlog`; `queued` tells whether tether holds
    /// unwritten bytes.
    pub(crate) fn sent(backlog: Option<Backlog>, queued: bool) -> PingTrack {
        let last = backlog;
        PingTrack {
            behind: last.is_some_and(|b| queued || b.unacked > 0),
            last,
            end: None,
            arrived: false,
        }
    }

    /// At the ping's deadline, the server silent since: whether to wait one more pong
    /// timeout, given the backlog now, the bytes written so far, and whether tether still
    /// holds unwritten bytes. Returns the backlog it waits on.
    pub(crate) fn wait_more(
        &mut self,
        now: Option<Backlog>,
        written: u64,
        queued: bool,
    ) -> Option<Backlog> {
        let now = now.filter(|_| self.behind)?;
        if self.end.is_none() && !queued {
            self.end = Some(written);
        }
        let wait = if self.end.is_some_and(|e| now.acked >= e) {
            !std::mem::replace(&mut self.arrived, true)
        } else {
            self.last.is_some_and(|l| now.acked > l.acked)
        };
        self.last = Some(now);
        wait.then_some(now)
    }
}

impl Uplink {
    /// The uplink of the TCP connection whose writes `written` counts.
    #[cfg(unix)]
    pub(crate) fn new(written: Written, fd: std::os::fd::RawFd) -> Uplink {
        Uplink { written, fd }
    }

    /// See the unix variant: other systems never tell the backlog.
    #[cfg(not(unix))]
    pub(crate) fn new(written: Written) -> Uplink {
        Uplink { written }
    }

    /// Bytes written to the connection so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.get()
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
        // SAFETY: the descriptor is open (see the type's doc) and `n` outlives the call.
        let r = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ as _, &mut n) };
        (r == 0).then(|| u64::try_from(n).unwrap_or(0))
    }

    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos"
    ))]
    fn unacked(&self) -> Option<u64> {
        let mut n: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SO_NWRITE: bytes in the send buffer, which keeps them until they are acknowledged.
        // SAFETY: the descriptor is open (see the type's doc); `n` and `len` outlive the call.
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

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos"
    )))]
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

    #[test]
    fn moving_needs_a_backlog_and_acknowledged_progress() {
        assert!(at(10, 5).moving_since(Some(at(20, 4))));
        assert!(!at(0, 5).moving_since(Some(at(20, 4))), "all delivered");
        assert!(
            !at(10, 4).moving_since(Some(at(10, 4))),
            "nothing acknowledged"
        );
        assert!(
            at(10, 5).moving_since(None),
            "a first look needs a backlog only"
        );
        assert!(!at(0, 5).moving_since(None));
    }

    /// Looks at a ping's deadlines: (backlog, bytes written, tether holds unwritten bytes).
    fn looks(sent: (Option<Backlog>, bool), at: &[(Option<Backlog>, u64, bool)]) -> Vec<bool> {
        let mut t = PingTrack::sent(sent.0, sent.1);
        at.iter()
            .map(|&(b, w, q)| t.wait_more(b, w, q).is_some())
            .collect()
    }

    #[test]
    fn a_ping_with_nothing_ahead_keeps_its_deadline() {
        let idle = Some(at(0, 100));
        assert_eq!(looks((idle, false), &[(idle, 100, false)]), [false]);
        // Our writes after the ping do not put it off either.
        assert_eq!(
            looks((idle, false), &[(Some(at(50, 100)), 150, true)]),
            [false]
        );
        // Nor where the system does not tell.
        assert_eq!(looks((None, true), &[(None, 100, false)]), [false]);
    }

    #[test]
    fn a_ping_behind_a_backlog_waits_while_it_moves_then_one_timeout_more() {
        let sent = (Some(at(900, 100)), true);
        assert_eq!(
            looks(
                sent,
                &[
                    (Some(at(700, 300)), 1000, true),  // moving, ping not flushed yet
                    (Some(at(400, 600)), 1010, false), // moving; the ping ends by 1010
                    (Some(at(0, 1010)), 1010, false),  // arrived since the last look
                    (Some(at(0, 1010)), 1010, false),  // and the server still silent
                ]
            ),
            [true, true, true, false]
        );
    }

    #[test]
    fn a_ping_behind_a_backlog_that_stopped_moving_is_not_waited_for() {
        let sent = (Some(at(900, 100)), false);
        assert_eq!(looks(sent, &[(Some(at(900, 100)), 1000, false)]), [false]);
        assert_eq!(
            looks(
                sent,
                &[
                    (Some(at(500, 500)), 1000, false),
                    (Some(at(500, 500)), 1000, false)
                ]
            ),
            [true, false]
        );
        // A backlog the system stops telling ends the wait.
        assert_eq!(looks(sent, &[(None, 1000, false)]), [false]);
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
        let up = Uplink::new(written.clone(), c.as_raw_fd());
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
