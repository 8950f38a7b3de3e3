//! A descriptor that is readable exactly while events are queued, for select/epoll/asyncio.
//!
//! Linux: one non-blocking eventfd. Elsewhere: a non-blocking pipe. The queue reports every
//! empty/non-empty transition under its lock, so the state set here never lags the queue.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct Readiness {
    /// The end the host polls.
    read: OwnedFd,
    /// The end written to; `None` for an eventfd (both ends are `read`).
    write: Option<OwnedFd>,
}

impl Readiness {
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Readiness> {
        // SAFETY: plain syscall; the fd is owned right after.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Readiness {
            // SAFETY: a fresh descriptor nobody else owns.
            read: unsafe { OwnedFd::from_raw_fd(fd) },
            write: None,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Readiness> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&r, &w] {
            let raw = fd.as_raw_fd();
            // SAFETY: fcntl on descriptors we own.
            unsafe {
                libc::fcntl(
                    raw,
                    libc::F_SETFL,
                    libc::fcntl(raw, libc::F_GETFL) | libc::O_NONBLOCK,
                );
                libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(Readiness {
            read: r,
            write: Some(w),
        })
    }

    /// The descriptor the host waits on.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Makes the descriptor readable (`true`) or not (`false`). Only called on transitions.
    pub(crate) fn set(&self, ready: bool) {
        if ready {
            let one = 1u64.to_ne_bytes();
            let (fd, buf): (RawFd, &[u8]) = match &self.write {
                None => (self.read.as_raw_fd(), &one),
                Some(w) => (w.as_raw_fd(), &one[..1]),
            };
            // SAFETY: writing from a live buffer to a descriptor we own. A full pipe or a
            // saturated counter already means "readable", so errors need no handling.
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        } else {
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reading into a live buffer from a descriptor we own.
                let n = unsafe {
                    libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                // An eventfd resets in one read; a pipe may hold several bytes.
                if n <= 0 || self.write.is_none() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(r: &Readiness) -> bool {
        let mut p = libc::pollfd {
            fd: r.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn follows_set() {
        let r = Readiness::new().unwrap();
        assert!(!readable(&r));
        r.set(true);
        assert!(readable(&r));
        r.set(false);
        assert!(!readable(&r));
        r.set(false);
        assert!(!readable(&r));
    }
}
