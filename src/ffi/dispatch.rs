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

/// An app's `ctx` together with the `destroy` it passed for it: dropping this runs
/// `destroy(ctx)`, so it runs exactly once, on whichever thread lets go. Every function that
/// takes a `destroy` wraps its `ctx` in one first, so that every way the call can fail (a NULL
/// or refused argument, a thread that would not start) gives the context back to the app the
/// same way as the end of a successful registration does.
pub(crate) struct AppCtx {
    ctx: *mut c_void,
    destroy: tether_destroy_cb,
}

// SAFETY: the C contract lets the library use `ctx` (and run `destroy`) on its own threads, and
// call a callback with it from several threads where the function says so; the app owns
// `ctx`'s thread safety.
unsafe impl Send for AppCtx {}
unsafe impl Sync for AppCtx {}

impl AppCtx {
    pub(crate) fn new(ctx: *mut c_void, destroy: tether_destroy_cb) -> AppCtx {
        AppCtx { ctx, destroy }
    }

    /// The pointer to pass to the app's callbacks.
    pub(crate) fn ptr(&self) -> *mut c_void {
        self.ctx
    }
}

impl Drop for AppCtx {
    fn drop(&mut self) {
        if let Some(d) = self.destroy {
            // SAFETY: the app passed `destroy` for `ctx`; this is the one owner, so it runs
            // once, and nothing calls a callback with `ctx` after it.
            unsafe { d(self.ctx) };
        }
    }
}

pub(crate) struct Dispatcher {
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts the thread, which drops `ctx` (running its `destroy`) after the last callback.
    /// On error nothing was started and `ctx` comes back, for the caller to drop once it
    /// holds no lock (its `destroy` may call into the library).
    pub(crate) fn start(
        queue: Arc<EventQueue>,
        cb: unsafe extern "C" fn(*mut c_void, *const tether_event),
        ctx: AppCtx,
    ) -> Result<Dispatcher, (std::io::Error, AppCtx)> {
        // Handed over once the thread runs: a spawn that fails drops its closure, and the
        // context must not go with it.
        let (hand, take) = std::sync::mpsc::sync_channel::<AppCtx>(1);
        let spawned = std::thread::Builder::new()
            .name("tether-dispatch".into())
            .spawn(move || {
                let Ok(ctx) = take.recv() else { return };
                loop {
                    match queue.pop_blocking(None) {
                        Pop::Event(ev) => {
                            let last = ev.kind() == EventKind::Closed;
                            // Counted for the resume point once the callback has returned:
                            // a binding's callback may only buffer it, and wait for room.
                            let handed = queue.hand_over_later(std::slice::from_ref(&ev));
                            let ev = tether_event::wrap(ev);
                            // SAFETY: the app registered `cb` for this `ctx`; `ev` lives
                            // until after the call.
                            unsafe { cb(ctx.ptr(), &ev) };
                            if let Some(h) = handed {
                                h.done();
                            }
                            if last {
                                break;
                            }
                        }
                        Pop::Finished => break,
                        Pop::Timeout => {}
                    }
                }
                // destroy(ctx), after the last callback.
                drop(ctx);
            });
        match spawned {
            Ok(thread) => {
                // The thread waits for it, so it cannot be gone.
                let _ = hand.send(ctx);
                Ok(Dispatcher {
                    thread: Some(thread),
                })
            }
            Err(e) => Err((e, ctx)),
        }
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
