//! The boundary every export runs inside: panics caught, fork detected, errors recorded.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::status::{Error, Status};

use super::tether_status;

thread_local! {
    /// Message of the last failure on this thread (`tether_last_error`).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Set in a child process by the `pthread_atfork` handler: the runtime's threads did not
/// survive the fork, so nothing may touch it.
static FORKED: AtomicBool = AtomicBool::new(false);
static FORK_GUARD: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: a single atomic store.
    FORKED.store(true, Ordering::Relaxed);
}

/// Arms the fork guard; called when the first client is created.
pub(crate) fn install_fork_guard() {
    FORK_GUARD.call_once(|| {
        // SAFETY: registers a handler that only stores an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// Records `message` as this thread's last error. A call from a thread-local or pthread key
/// destructor may come after this thread's slot was destroyed: the message is then dropped
/// (`with` would panic, and that panic would reach C).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message; valid until the thread's next failing call.
/// Empty once the thread's slot is destroyed (see [`set_last_error`]).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Records the error and returns its status code.
pub(crate) fn fail(e: Error) -> tether_status {
    set_last_error(&e.to_string());
    e.status().code()
}

/// `Ok(())` to `TETHER_OK`, errors recorded.
pub(crate) fn status_of(r: Result<(), Error>) -> tether_status {
    match r {
        Ok(()) => Status::Ok.code(),
        Err(e) => fail(e),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    format!("internal panic: {}", crate::panic_text(p))
}

/// Runs an export body. After a fork or a panic it returns `fallback(status)` instead; no
/// panic ever unwinds into C.
pub(crate) fn boundary<T>(fallback: impl Fn(Status) -> T, body: impl FnOnce() -> T) -> T {
    if FORKED.load(Ordering::Relaxed) {
        set_last_error("tether cannot be used in a child process after fork()");
        return fallback(Status::ErrForked);
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(p) => {
            set_last_error(&panic_message(&*p));
            fallback(Status::ErrPanic)
        }
    }
}

/// [`boundary`] for functions that touch no shared state (status strings, version, last
/// error): they keep working in a forked child.
pub(crate) fn pure_boundary<T>(fallback: impl Fn(Status) -> T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| {
        set_last_error(&panic_message(&*p));
        fallback(Status::ErrPanic)
    })
}

/// A handle whose calls go through [`handle_boundary`]: a panic inside one of its calls
/// poisons it, and a poisoned handle refuses every later call.
pub(crate) trait Handle {
    /// What a NULL handle is called in the error message ("client").
    const NAME: &'static str;
    /// Whether an earlier panic left the handle unusable.
    fn is_poisoned(&self) -> bool;
    /// Marks the handle unusable.
    fn poison(&self);
}

/// [`boundary`] for calls on a handle: NULL is `ErrNull`, a poisoned handle is `ErrPanic`, and
/// a panic poisons the handle.
pub(crate) fn handle_boundary<H: Handle, T>(
    c: *const H,
    fallback: impl Fn(Status) -> T,
    body: impl FnOnce(&H) -> T,
) -> T {
    boundary(&fallback, || {
        // SAFETY: the caller passes a pointer from the handle's constructor that it has not
        // freed.
        let Some(client) = (unsafe { c.as_ref() }) else {
            set_last_error(&format!("{} is NULL", H::NAME));
            return fallback(Status::ErrNull);
        };
        if client.is_poisoned() {
            set_last_error(&format!(
                "the {} is unusable after an internal panic",
                H::NAME
            ));
            return fallback(Status::ErrPanic);
        }
        match catch_unwind(AssertUnwindSafe(|| body(client))) {
            Ok(v) => v,
            Err(p) => {
                client.poison();
                set_last_error(&panic_message(&*p));
                fallback(Status::ErrPanic)
            }
        }
    })
}

/// Releases a handle the library handed to C, for every `tether_*_free`: NULL is a no-op;
/// otherwise `teardown` runs first on a shared reference, because another thread (a
/// callback on the dispatcher) may still be using the handle until teardown has stopped it,
/// and only then is the Box reclaimed, once.
///
/// # Safety
/// `p` is NULL or a pointer from `Box::into_raw` that the caller gives up here, once.
pub(crate) unsafe fn free_handle<T>(p: *mut T, teardown: impl FnOnce(&T)) {
    // SAFETY: the caller's promise; the handle is live until the Box is rebuilt below.
    let Some(h) = (unsafe { p.as_ref() }) else {
        return;
    };
    teardown(h);
    // SAFETY: as above; nothing uses the handle once teardown has returned.
    drop(unsafe { Box::from_raw(p) });
}

/// The fallback for functions returning a status.
pub(crate) fn code(s: Status) -> tether_status {
    s.code()
}

/// Reads a required NUL-terminated UTF-8 argument.
pub(crate) fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::new(Status::ErrNull, format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string that outlives this call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::new(Status::ErrInvalidUtf8, format!("{what} is not valid UTF-8")))
}

/// Reads a `(ptr, len)` payload; NULL is allowed only with length 0.
pub(crate) fn bytes_arg<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::new(
            Status::ErrNull,
            format!("{what} is NULL with a non-zero length"),
        ));
    }
    // No object is larger (and from_raw_parts requires it): a garbage length is refused
    // instead of read past.
    if len > isize::MAX as usize {
        return Err(Error::new(
            Status::ErrInvalidArgument,
            format!("{what} length {len} is larger than any object"),
        ));
    }
    // SAFETY: the caller passes `len` readable bytes that outlive this call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes an output, or fails with `ErrNull` if the pointer is NULL.
pub(crate) fn out_arg<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller passes a writable pointer or NULL.
    unsafe { p.as_mut() }.ok_or_else(|| Error::new(Status::ErrNull, format!("{what} is NULL")))
}

/// Converts a C millisecond timeout: negative waits forever.
pub(crate) fn timeout_arg(ms: i32) -> Option<std::time::Duration> {
    u64::try_from(ms).ok().map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_with_a_message() {
        let r = boundary(code, || -> tether_status { panic!("boom") });
        assert_eq!(r, Status::ErrPanic.code());
        // SAFETY: pointer to this thread's message.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn free_handle_accepts_null_and_drops_once() {
        use std::sync::atomic::AtomicUsize;
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut torn_down = 0;
        // SAFETY: NULL, then a fresh Box given up once.
        unsafe {
            free_handle(std::ptr::null_mut::<Counted>(), |_| torn_down += 1);
            assert_eq!(torn_down, 0);
            free_handle(Box::into_raw(Box::new(Counted)), |_| {
                assert_eq!(DROPS.load(Ordering::SeqCst), 0, "dropped before teardown");
                torn_down += 1;
            });
        }
        assert_eq!((torn_down, DROPS.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn argument_helpers() {
        assert_eq!(
            str_arg(std::ptr::null(), "x").unwrap_err().status(),
            Status::ErrNull
        );
        let bad = b"\xff\0";
        assert_eq!(
            str_arg(bad.as_ptr().cast(), "x").unwrap_err().status(),
            Status::ErrInvalidUtf8
        );
        assert_eq!(bytes_arg(std::ptr::null(), 0, "d").unwrap(), b"");
        assert_eq!(
            bytes_arg(std::ptr::null(), 3, "d").unwrap_err().status(),
            Status::ErrNull
        );
        assert_eq!(timeout_arg(-1), None);
        assert_eq!(timeout_arg(5), Some(std::time::Duration::from_millis(5)));
    }
}
