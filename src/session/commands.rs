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
use crate::stats::{ConnectionState, Counters};

/// A new channel, open. `panicked` is the client's flag that its session panicked, which
/// the session raises through [`SessionEnd::panicked`].
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
            end: SessionEnd { open, panicked },
        },
    )
}

/// What the session's parts need of the channel as the session ends, whichever part sees the
/// end first (the book, a connection's outbox, the channel's owner): the client's panic flag,
/// and the gate under which the state turns CLOSED.
#[derive(Clone)]
pub(crate) struct SessionEnd {
    open: Arc<RwLock<bool>>,
    panicked: Arc<AtomicBool>,
}

impl SessionEnd {
    /// Tells the app's side that the session panicked: raised before the state reads CLOSED
    /// and before the channel closes, so a call refused from then on says PANIC, not that the
    /// app closed the client.
    pub(crate) fn panicked(&self) {
        self.panicked.store(true, Ordering::Release);
    }

    /// Switches `counters` to state CLOSED with every send shut out: a
    /// [`CommandTx::send_running`] that saw the session running has handed its command over
    /// (the session's end answers what it did not read: requests and packets end, cancels
    /// take effect), and every later one sees the new state.
    pub(crate) fn stop(&self, counters: &Counters) {
        let _gate = self.open.write().unwrap_or_else(|e| e.into_inner());
        counters.set_state(ConnectionState::Closed);
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
        self.send_if(cmd, || true)
    }

    /// Hands `cmd` to the session unless `counters` reads CLOSED, asked under the gate: the
    /// session switches to CLOSED only under [`SessionEnd::stop`], so a command is never
    /// accepted once the state reads CLOSED. `Err` gives it back.
    pub(crate) fn send_running(&self, cmd: Command, counters: &Counters) -> Result<(), Command> {
        self.send_if(cmd, || counters.state() != ConnectionState::Closed)
    }

    fn send_if(&self, cmd: Command, ok: impl FnOnce() -> bool) -> Result<(), Command> {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        if !*open || !ok() {
            return Err(cmd);
        }
        // The receiver lives as long as the gate is open (closing takes it first).
        self.tx.send(cmd).map_err(|e| e.0)
    }
}

/// The session's side.
pub(crate) struct CommandRx {
    rx: mpsc::UnboundedReceiver<Command>,
    end: SessionEnd,
}

impl CommandRx {
    /// The next command; `None` only when every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Command> {
        self.rx.recv().await
    }

    /// The channel's part in the session's end, for the parts of the session that may see
    /// it first.
    pub(crate) fn end(&self) -> SessionEnd {
        self.end.clone()
    }

    /// Closes the channel for good and returns every command sent before, in order. A send
    /// racing with this either completed before (and is returned) or fails.
    pub(crate) fn close_and_drain(&mut self) -> Vec<Command> {
        {
            let mut open = self.end.open.write().unwrap_or_else(|e| e.into_inner());
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

    /// Sends racing the switch to CLOSED: once `stop` returns, every command that saw the
    /// session running is in the channel, and none enters it after.
    #[test]
    fn no_send_passes_the_switch_to_closed() {
        for _ in 0..300 {
            let (tx, mut rx) = channel(Arc::default());
            let (tx, counters) = (Arc::new(tx), Arc::new(Counters::default()));
            let accepted = Arc::new(AtomicUsize::new(0));
            let senders: Vec<_> = (0..3)
                .map(|_| {
                    let (tx, counters, accepted) = (tx.clone(), counters.clone(), accepted.clone());
                    thread::spawn(move || {
                        while tx.send_running(Command::Pause, &counters).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            thread::yield_now();
            rx.end().stop(&counters);
            let mut before = 0;
            while rx.rx.try_recv().is_ok() {
                before += 1;
            }
            for s in senders {
                s.join().unwrap();
            }
            assert!(rx.rx.try_recv().is_err(), "a command entered after CLOSED");
            assert_eq!(before, accepted.load(Ordering::Relaxed));
        }
    }
}
