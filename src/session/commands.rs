//! The channel from the app's threads to the session task.
//!
//! Its one promise beyond a plain channel: a command whose `send` succeeded is seen by
//! [`CommandRx::close_and_drain`], so every accepted request gets its answer before CLOSED.
//! A bare tokio channel cannot promise that: a send that passed the closed check but has not
//! yet claimed its slot is invisible to `try_recv` (which tokio versions even report that
//! case as "empty" or "disconnected" differs), and its id would never be answered. Here each
//! send happens under a shared gate that the close takes exclusively, so no send is ever half
//! done while the channel is drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::Command;

/// A new channel, open. `panicked` is the client's flag that its session panicked, which
/// the session sets through [`CommandRx::mark_panicked`].
pub(crate) fn channel(panicked: Arc<AtomicBool>) -> (CommandTx, CommandRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let open = Arc::new(RwLock::new(true));
    (
        CommandTx {
            tx,
            open: open.clone(),
        },
        CommandRx {
            rx,
            open,
            panicked: PanicMark(panicked),
        },
    )
}

/// The client's flag that its session panicked, for whoever must raise it before the
/// channel's owner drops: the session's book, whose end makes the state CLOSED, after which
/// the app's calls are refused, and must be refused with PANIC.
#[derive(Clone)]
pub(crate) struct PanicMark(Arc<AtomicBool>);

impl PanicMark {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The app's side; cheap to call from any number of threads at once.
pub(crate) struct CommandTx {
    tx: mpsc::UnboundedSender<Command>,
    open: Arc<RwLock<bool>>,
}

impl CommandTx {
    /// Hands `cmd` to the session; `Err` gives it back once the channel is closed.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Command> {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        if !*open {
            return Err(cmd);
        }
        // The receiver lives as long as the gate is open (closing takes it first).
        self.tx.send(cmd).map_err(|e| e.0)
    }
}

/// The session's side.
pub(crate) struct CommandRx {
    rx: mpsc::UnboundedReceiver<Command>,
    open: Arc<RwLock<bool>>,
    panicked: PanicMark,
}

impl CommandRx {
    /// The next command; `None` only when every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Command> {
        self.rx.recv().await
    }

    /// Tells the app's side that the session panicked; called before the channel closes, so
    /// a send the close refuses can already tell the app why.
    pub(crate) fn mark_panicked(&self) {
        self.panicked.set();
    }

    /// The flag [`CommandRx::mark_panicked`] raises, for the session's book.
    pub(crate) fn panic_mark(&self) -> PanicMark {
        self.panicked.clone()
    }

    /// Closes the channel for good and returns every command sent before, in order. A send
    /// racing with this either completed before (and is returned) or fails.
    pub(crate) fn close_and_drain(&mut self) -> Vec<Command> {
        {
            let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
            *open = false;
        }
        self.rx.close();
        let mut out = Vec::new();
        while let Ok(cmd) = self.rx.try_recv() {
            out.push(cmd);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    /// Sends racing a close: what was accepted is exactly what the drain returns. Many
    /// rounds, since the window a plain channel has is a few instructions wide.
    #[test]
    fn every_accepted_send_is_drained() {
        for _ in 0..300 {
            let (tx, mut rx) = channel(Arc::default());
            let tx = Arc::new(tx);
            let accepted = Arc::new(AtomicUsize::new(0));
            let senders: Vec<_> = (0..3)
                .map(|_| {
                    let (tx, accepted) = (tx.clone(), accepted.clone());
                    thread::spawn(move || {
                        while tx.send(Command::Pause).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            thread::yield_now();
            let drained = rx.close_and_drain().len();
            for s in senders {
                s.join().unwrap();
            }
            assert_eq!(drained, accepted.load(Ordering::Relaxed));
            assert!(tx.send(Command::Pause).is_err());
        }
    }
}
