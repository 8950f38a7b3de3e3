//! Callback mode: one thread per client that hands events to the app's callback, in order,
//! off the I/O threads, and calls `destroy(ctx)` exactly once at the end.

use std::ffi::c_void;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::EventKind;
use crate::queue::{EventQueue, Pop};

use super::event::tether_event;

/// Called with each event. `ev` is borrowed for the duration of the call only.
pub type tether_event_cb = Option<unsafe extern "C" fn(ctx: *mut c_void, ev: *const tether_event)>;
/// Called once with `ctx` after the last event callback.
pub type tether_destroy_cb = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

/// The app's context pointer; the app promised it may be used from the dispatcher thread.
struct Ctx(*mut c_void);
// SAFETY: the C contract hands `ctx` to the dispatcher thread; the app owns its thread safety.
unsafe impl Send for Ctx {}

pub(crate) struct Dispatcher {
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts the thread. On error nothing was started and `ctx` still belongs to the caller.
    pub(crate) fn start(
        queue: Arc<EventQueue>,
        cb: unsafe extern "C" fn(*mut c_void, *const tether_event),
        ctx: *mut c_void,
        destroy: tether_destroy_cb,
    ) -> std::io::Result<Dispatcher> {
        let ctx = Ctx(ctx);
        let thread = std::thread::Builder::new()
            .name("tether-dispatch".into())
            .spawn(move || {
                let ctx = ctx;
                loop {
                    match queue.pop_blocking(None) {
                        Pop::Event(ev) => {
                            let last = ev.kind() == EventKind::Closed;
                            let ev = tether_event::wrap(ev);
                            // SAFETY: the app registered `cb` for this `ctx`; `ev` lives
                            // until after the call.
                            unsafe { cb(ctx.0, &ev) };
                            if last {
                                break;
                            }
                        }
                        Pop::Finished => break,
                        Pop::Timeout => {}
                    }
                }
                if let Some(d) = destroy {
                    // SAFETY: exactly once, after the last callback.
                    unsafe { d(ctx.0) };
                }
            })?;
        Ok(Dispatcher {
            thread: Some(thread),
        })
    }

    /// Waits for the thread to end (the queue must have been abandoned or finished). From the
    /// dispatcher thread itself (free inside a callback) it returns at once; the thread ends
    /// after the callback returns.
    pub(crate) fn stop(mut self) {
        if let Some(t) = self.thread.take() {
            // pthread ids rather than std::thread::current(): the caller is usually a foreign
            // thread, where std would allocate a thread handle that lives until thread exit.
            // SAFETY: pthread_self and pthread_equal have no preconditions.
            let on_dispatcher =
                unsafe { libc::pthread_equal(t.as_pthread_t(), libc::pthread_self()) } != 0;
            if !on_dispatcher {
                let _ = t.join();
            }
        }
    }
}
