//! Log records an app can attach to a bug report: what the library did and why, never a
//! secret. A record goes to `tracing` (for Rust apps) and to the sink an app installed with
//! [`set_log_sink`] (the C hook and the bindings' loggers). A leaf: imports nothing of the
//! crate.
//!
//! The sink runs on its own thread (`tether-log`), fed through a bounded channel, so a slow or
//! blocking sink (a Python logger waiting for the GIL) never stalls the network threads; when
//! the channel is full, records are dropped and the next delivered record says how many.
//! With no sink installed a record costs one relaxed atomic load before any formatting.
//!
//! The log thread does not survive `fork()`. In a child the sink installed in the parent is
//! gone (never called, never dropped) and records wait for a sink installed in the child,
//! which starts a log thread of its own there.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::{Mutex, MutexGuard, Once};

/// How important a record is. Discriminants are the C ABI's `TETHER_LOG_*` values.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// The client gave up or a call failed in a way the app must handle.
    Error = 1,
    /// An attempt to connect failed (refused, timed out) and will be retried, or the library
    /// closed a connection over a server's bad message.
    Warn = 2,
    /// The connection's life: attempts, connections, closes, resumes, backoff. A connection
    /// that dropped and will be resumed is normal life on a phone, so it is logged here.
    Info = 3,
    /// Details: timings of each step, requests that timed out, ignored messages.
    Debug = 4,
    /// Everything else the library notices.
    Trace = 5,
}

impl LogLevel {
    /// The level for a C value, clamping values above TRACE to TRACE; 0 is "off".
    pub fn from_u8(v: u8) -> Option<LogLevel> {
        match v {
            0 => None,
            1 => Some(LogLevel::Error),
            2 => Some(LogLevel::Warn),
            3 => Some(LogLevel::Info),
            4 => Some(LogLevel::Debug),
            _ => Some(LogLevel::Trace),
        }
    }
}

/// One log record, as a sink receives it.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// Importance.
    pub level: LogLevel,
    /// The part of the library that wrote it (`tether::session`, `tether::gomuks`, ...).
    pub target: &'static str,
    /// The id of the client it belongs to ([`crate::Client::id`]); 0 for none.
    pub client: u64,
    /// What happened, in words. Never holds a token, password, cookie or key.
    pub message: String,
    /// When it happened (the sink may run a little later, on its own thread).
    pub time: std::time::SystemTime,
}

/// Receives records on the `tether-log` thread, one at a time, in order.
pub type LogSink = Box<dyn FnMut(&LogRecord) + Send>;

/// Records more important than this (or equal) reach the sink; 0 while no sink is installed.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
/// Records dropped because the sink thread fell behind, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENDER: Mutex<Option<SyncSender<Msg>>> = Mutex::new(None);

/// How many records may wait for a slow sink before new ones are dropped.
const BACKLOG: usize = 4096;

enum Msg {
    Record(LogRecord),
    /// This many records were dropped (the channel was full) just before the next message.
    Dropped(u64, std::time::SystemTime),
    /// Replaces the sink; the old one is dropped on the log thread, after its last record,
    /// and then the sender is told.
    Sink(Option<LogSink>, u8, SyncSender<()>),
}

/// Installs `sink` for every record at `max` or more important, replacing the previous sink;
/// `None` removes it. Records are delivered on the `tether-log` thread. Returns once the
/// previous sink has received its last record and been dropped, so after this call it is
/// never called again (what lets a binding remove its sink before its runtime shuts down).
/// Returns false, changing nothing, when called from a sink itself (the log thread would wait
/// for itself).
pub fn set_log_sink(sink: Option<LogSink>, max: LogLevel) -> bool {
    if on_log_thread() {
        return false;
    }
    let level = if sink.is_some() { max as u8 } else { 0 };
    let (done_tx, done) = sync_channel(1);
    let mut swap = Msg::Sink(sink, level, done_tx);
    forget_the_thread_in_a_forked_child();
    // Concurrent swaps go one at a time, so the level left in place is that of the sink left
    // in place. The channel's own lock is not held while waiting for room in it.
    let one_at_a_time = crate::lock(swap_lock());
    for _ in 0..2 {
        let tx = {
            let mut g = crate::lock(&SENDER);
            if g.is_none() {
                if matches!(swap, Msg::Sink(None, ..)) {
                    MAX_LEVEL.store(0, Ordering::Release);
                    return true;
                }
                *g = start_thread();
            }
            g.clone()
        };
        let Some(tx) = tx else { break };
        // Until the swap is done, records are made for whichever of the two sinks wants more;
        // the log thread hands each sink only those at its own level. A full channel blocks
        // this call only (records are dropped, never wait), and it is woken as the log thread
        // takes messages.
        MAX_LEVEL.fetch_max(level, Ordering::AcqRel);
        match tx.send(swap) {
            Ok(()) => {
                // The log thread answers once it has dropped the old sink.
                let _ = done.recv();
                MAX_LEVEL.store(level, Ordering::Release);
                drop(one_at_a_time);
                return true;
            }
            Err(back) => {
                // The log thread is gone: start another and try once more.
                swap = back.0;
                *crate::lock(&SENDER) = None;
            }
        }
    }
    MAX_LEVEL.store(0, Ordering::Release);
    drop(one_at_a_time);
    // The sink goes outside the locks: its owner's destroy may log or install another.
    drop(swap);
    false
}

/// Serializes sink swaps. Behind a pointer so that a forked child starts with a fresh lock:
/// a thread that held this one at the fork does not exist there.
static SWAP: AtomicPtr<Mutex<()>> = AtomicPtr::new(std::ptr::null_mut());

fn swap_lock() -> &'static Mutex<()> {
    let p = SWAP.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once per process below and never freed (a child forgets it).
        return unsafe { &*p };
    }
    let fresh = Box::into_raw(Box::new(Mutex::new(())));
    match SWAP.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: leaked on purpose: it lives as long as the process.
        Ok(_) => unsafe { &*fresh },
        Err(other) => {
            // SAFETY: `fresh` was never shared; `other` is the one in place, never freed.
            drop(unsafe { Box::from_raw(fresh) });
            unsafe { &*other }
        }
    }
}

/// The name of the thread that runs the sinks.
const LOG_THREAD: &str = "tether-log";

/// Whether this is the log thread, where sinks run (and cannot be replaced: the swap waits
/// for that thread).
pub(crate) fn on_log_thread() -> bool {
    std::thread::current().name() == Some(LOG_THREAD)
}

fn start_thread() -> Option<SyncSender<Msg>> {
    forget_the_thread_in_a_forked_child();
    let (tx, rx) = sync_channel::<Msg>(BACKLOG);
    std::thread::Builder::new()
        .name(LOG_THREAD.into())
        .spawn(move || {
            let mut sink: Option<LogSink> = None;
            let mut sink_level = 0u8;
            loop {
                let msg = match rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => {
                        // Caught up: a loss no record got in after (a flood just before a
                        // close, say) is told now, after every record made before it. Read
                        // under the channel's lock, which a record refused as full holds
                        // until it is counted: none is counted after this look.
                        let lost = {
                            let _counted = crate::lock(&SENDER);
                            DROPPED.swap(0, Ordering::Relaxed)
                        };
                        if lost > 0 {
                            tell_lost(&mut sink, sink_level, lost, std::time::SystemTime::now());
                        }
                        match rx.recv() {
                            Ok(m) => m,
                            Err(_) => break,
                        }
                    }
                    Err(TryRecvError::Disconnected) => break,
                };
                match msg {
                    Msg::Sink(s, level, done) => {
                        // Records lost before the swap were the old sink's.
                        let lost = DROPPED.swap(0, Ordering::Relaxed);
                        if lost > 0 {
                            tell_lost(&mut sink, sink_level, lost, std::time::SystemTime::now());
                        }
                        // The old sink (and what it owns) goes before the caller returns. A
                        // panic in a sink is the sink's: it must not end this thread.
                        let old = std::mem::replace(&mut sink, s);
                        sink_level = level;
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(old)));
                        let _ = done.send(());
                    }
                    Msg::Dropped(lost, time) => tell_lost(&mut sink, sink_level, lost, time),
                    Msg::Record(r) => {
                        let Some(f) = sink.as_mut() else { continue };
                        if r.level as u8 > sink_level {
                            continue; // made for the other sink of a swap under way
                        }
                        let _ = catch_unwind(AssertUnwindSafe(|| f(&r)));
                    }
                }
            }
        })
        .ok()
        .map(|_| tx)
}

/// Tells `sink` that `lost` records were dropped: a warning, or an error for a sink that
/// takes no warnings (it must learn that it lost records either way).
fn tell_lost(sink: &mut Option<LogSink>, sink_level: u8, lost: u64, time: std::time::SystemTime) {
    let Some(f) = sink.as_mut() else { return };
    let level = if LogLevel::Warn as u8 <= sink_level {
        LogLevel::Warn
    } else {
        LogLevel::Error
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        f(&LogRecord {
            level,
            target: "tether::log",
            client: 0,
            message: format!("{lost} log records dropped: the log callback fell behind"),
            time,
        })
    }));
}

thread_local! {
    /// The channel's lock, held by the thread that forks from just before the fork to just
    /// after it, so the child never inherits it held by a thread it does not have.
    static HELD: RefCell<Option<MutexGuard<'static, Option<SyncSender<Msg>>>>> =
        const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    let g = crate::lock(&SENDER);
    HELD.with(|h| *h.borrow_mut() = Some(g));
}

extern "C" fn after_fork_in_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// The child has no log thread: its channel is forgotten (dropping it would wake a receiver
/// that is not there) and nothing is recorded until the child installs a sink.
extern "C" fn after_fork_in_child() {
    HELD.with(|h| {
        if let Some(mut g) = h.borrow_mut().take() {
            std::mem::forget(g.take());
        }
    });
    // A swap may have been under way on another thread: the child gets a lock of its own.
    SWAP.store(std::ptr::null_mut(), Ordering::Release);
    MAX_LEVEL.store(0, Ordering::Release);
}

/// Registers the fork handlers, once, before the first log thread starts.
fn forget_the_thread_in_a_forked_child() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers only take and release this module's lock and store atomics.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            );
        }
    });
}

/// Whether a record at `level` would reach the sink.
#[inline]
pub(crate) fn enabled(level: LogLevel) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Hands a record to the sink thread without ever blocking the caller.
pub(crate) fn emit(level: LogLevel, target: &'static str, client: u64, message: String) {
    let g = crate::lock(&SENDER);
    let Some(tx) = g.as_ref() else { return };
    let time = std::time::SystemTime::now();
    // A loss is told where it happened: before the first record that gets in after it.
    let lost = DROPPED.swap(0, Ordering::Relaxed);
    if lost > 0 {
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Dropped(lost, time)) {
            DROPPED.fetch_add(lost + 1, Ordering::Relaxed);
            return;
        }
    }
    let r = LogRecord {
        level,
        target,
        client,
        message,
        time,
    };
    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Record(r)) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes a record for client `$client` to `tracing` and, when enabled, to the app's sink:
/// `tlog!(client_id, Info, "session", "connected in {} ms", ms)`. The message is formatted
/// only when someone listens.
macro_rules! tlog {
    ($client:expr, $level:ident, $target:literal, $($arg:tt)+) => {{
        let level = $crate::logging::LogLevel::$level;
        let to_sink = $crate::logging::enabled(level);
        let to_tracing = $crate::logging::tracing_enabled!($level);
        if to_sink || to_tracing {
            let message = format!($($arg)+);
            if to_tracing {
                $crate::logging::tracing_event!($level, $target, $client, &message);
            }
            if to_sink {
                $crate::logging::emit(level, concat!("tether::", $target), $client, message);
            }
        }
    }};
}
pub(crate) use tlog;

macro_rules! tracing_enabled {
    (Error) => {
        tracing::enabled!(tracing::Level::ERROR)
    };
    (Warn) => {
        tracing::enabled!(tracing::Level::WARN)
    };
    (Info) => {
        tracing::enabled!(tracing::Level::INFO)
    };
    (Debug) => {
        tracing::enabled!(tracing::Level::DEBUG)
    };
    (Trace) => {
        tracing::enabled!(tracing::Level::TRACE)
    };
}
pub(crate) use tracing_enabled;

macro_rules! tracing_event {
    (Error, $target:literal, $client:expr, $m:expr) => { tracing::error!(target: concat!("tether::", $target), client = $client, "{}", $m) };
    (Warn, $target:literal, $client:expr, $m:expr) => { tracing::warn!(target: concat!("tether::", $target), client = $client, "{}", $m) };
    (Info, $target:literal, $client:expr, $m:expr) => { tracing::info!(target: concat!("tether::", $target), client = $client, "{}", $m) };
    (Debug, $target:literal, $client:expr, $m:expr) => { tracing::debug!(target: concat!("tether::", $target), client = $client, "{}", $m) };
    (Trace, $target:literal, $client:expr, $m:expr) => { tracing::trace!(target: concat!("tether::", $target), client = $client, "{}", $m) };
}
pub(crate) use tracing_event;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::Duration;

    /// Installs an error sink that sends `f(record)` on `tx` but holds its first record back
    /// until the channel has overflowed with `flood 0`, `flood 1`, ...; returns how many
    /// records were made.
    fn flood_a_held_sink<T: Send + 'static>(
        tx: std::sync::mpsc::Sender<T>,
        f: impl Fn(&LogRecord) -> T + Send + 'static,
    ) -> usize {
        let (open, gate) = channel::<()>();
        let (holding, held) = channel::<()>();
        let mut first = true;
        set_log_sink(
            Some(Box::new(move |r: &LogRecord| {
                if std::mem::take(&mut first) {
                    let _ = holding.send(());
                    let _ = gate.recv_timeout(Duration::from_secs(10));
                }
                tx.send(f(r)).unwrap();
            })),
            LogLevel::Error,
        );
        // The first record in the sink's hands before the rest: the channel then fills and
        // stays full, so no record gets in between the lost ones.
        tlog!(1u64, Error, "test", "flood 0");
        held.recv_timeout(Duration::from_secs(10)).unwrap();
        let flood = BACKLOG + 100;
        for i in 1..flood {
            tlog!(1u64, Error, "test", "flood {i}");
        }
        open.send(()).unwrap();
        flood
    }

    /// The sink is process-wide; tests that install one run in this single test.
    #[test]
    fn sink_gets_records_at_or_above_its_level_in_order_and_is_dropped_when_replaced() {
        let (tx, rx) = channel::<(LogLevel, String, u64)>();
        let tx2 = tx.clone();
        assert!(set_log_sink(
            Some(Box::new(move |r: &LogRecord| {
                tx.send((r.level, r.message.clone(), r.client)).unwrap();
            })),
            LogLevel::Info,
        ));
        assert!(enabled(LogLevel::Warn) && enabled(LogLevel::Info) && !enabled(LogLevel::Debug));
        tlog!(7u64, Info, "test", "one {}", 1);
        tlog!(7u64, Debug, "test", "hidden");
        tlog!(8u64, Error, "test", "two");
        let got: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                (LogLevel::Info, "one 1".to_owned(), 7),
                (LogLevel::Error, "two".to_owned(), 8)
            ]
        );

        // A replaced sink is dropped (its sender with it) after its last record.
        set_log_sink(
            Some(Box::new(move |r: &LogRecord| {
                tx2.send((r.level, r.message.clone(), r.client)).unwrap();
            })),
            LogLevel::Trace,
        );
        tlog!(1u64, Trace, "test", "three");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().1, "three");
        // Removal waits for the sink's last record: nothing can follow it.
        tlog!(1u64, Trace, "test", "four");
        set_log_sink(None, LogLevel::Trace);
        assert_eq!(rx.try_recv().unwrap().1, "four");
        assert!(!enabled(LogLevel::Error));
        tlog!(1u64, Error, "test", "nobody listens");
        // Both sinks gone: every sender dropped, the channel ends.
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());

        // A record made for a more verbose sink (the other one of a swap under way) never
        // reaches a sink that did not ask for it.
        let (tx3, rx3) = channel::<LogLevel>();
        set_log_sink(
            Some(Box::new(move |r: &LogRecord| tx3.send(r.level).unwrap())),
            LogLevel::Error,
        );
        emit(
            LogLevel::Trace,
            "tether::test",
            1,
            "made for another sink".into(),
        );
        emit(LogLevel::Error, "tether::test", 1, "for this one".into());
        set_log_sink(None, LogLevel::Error);
        assert_eq!(rx3.try_iter().collect::<Vec<_>>(), [LogLevel::Error]);

        // A sink of errors only still learns that records were dropped: the notice comes at
        // its level when it takes no warnings.
        let (tx4, rx4) = channel::<(LogLevel, String)>();
        let flood = flood_a_held_sink(tx4, |r| (r.level, r.message.clone()));
        let is_notice = |m: &str| m.contains("log records dropped");
        // Nothing follows the flood: the loss is told once the thread has caught up, after
        // every record that got in, with the count of those that did not.
        let mut got = Vec::new();
        while !got
            .last()
            .is_some_and(|(_, m): &(LogLevel, String)| is_notice(m))
        {
            got.push(
                rx4.recv_timeout(Duration::from_secs(10))
                    .expect("the loss is told"),
            );
        }
        let (level, notice) = got.pop().unwrap();
        assert_eq!(level, LogLevel::Error, "{notice}");
        assert!(got.iter().all(|(_, m)| m.starts_with("flood ")), "{got:?}");
        assert_eq!(
            notice,
            format!(
                "{} log records dropped: the log callback fell behind",
                flood - got.len()
            )
        );
        // A record made after the loss was told comes after it, and is not counted lost.
        tlog!(1u64, Error, "test", "after the flood");
        set_log_sink(None, LogLevel::Error);
        let rest: Vec<_> = rx4.try_iter().map(|(_, m)| m).collect();
        assert_eq!(rest, ["after the flood"]);

        // A loss just before the sink is removed is told to that sink, before it goes.
        let (tx5, rx5) = channel::<String>();
        flood_a_held_sink(tx5, |r| r.message.clone());
        set_log_sink(None, LogLevel::Error);
        let got: Vec<_> = rx5.try_iter().collect();
        let told = got.iter().filter(|m| is_notice(m)).count();
        assert_eq!(
            (told, got.last().map(|m| is_notice(m))),
            (1, Some(true)),
            "{got:?}"
        );

        // Installing and removing at once, from two threads: whichever call takes effect last
        // leaves its sink and its level together. Never a sink in place (not dropped) with
        // records switched off, nor records on with no sink.
        for _ in 0..3000 {
            struct Flag(Arc<AtomicBool>);
            impl Drop for Flag {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let dropped = Arc::new(AtomicBool::new(false));
            let flag = Flag(dropped.clone());
            let go = Arc::new(std::sync::Barrier::new(2));
            let g = go.clone();
            let install = std::thread::spawn(move || {
                g.wait();
                set_log_sink(
                    Some(Box::new(move |_: &LogRecord| {
                        let _ = &flag;
                    })),
                    LogLevel::Trace,
                )
            });
            go.wait();
            assert!(set_log_sink(None, LogLevel::Trace));
            assert!(install.join().unwrap());
            let installed = !dropped.load(Ordering::SeqCst);
            assert_eq!(enabled(LogLevel::Trace), installed);
            set_log_sink(None, LogLevel::Trace);
        }
    }
}
