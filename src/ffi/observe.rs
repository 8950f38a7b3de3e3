//! What an app attaches to a bug report: the process-wide log hook, and per client its id,
//! connection state and statistics.

use std::ffi::{c_char, c_void, CString};

use crate::logging::{set_log_sink, LogLevel, LogRecord};
use crate::status::{Error, Status};

use super::boundary::{code, out_arg, status_of};
use super::client::tether_client;
use super::dispatch::{tether_destroy_cb, AppCtx};
use super::tether_status;

/// One log record, lent to a `tether_log_cb` for the duration of the call.
#[repr(C)]
pub struct tether_log_record {
    /// `TETHER_LOG_ERROR` (1) to `TETHER_LOG_TRACE` (5).
    pub level: u32,
    /// The part of the library that wrote it ("tether::session", "tether::gomuks", ...).
    pub target: *const c_char,
    /// `tether_client_id` of the client it belongs to; 0 for none.
    pub client_id: u64,
    /// What happened, NUL-terminated UTF-8. Never holds a token, password, cookie or key.
    pub message: *const c_char,
    /// When it happened, in microseconds since the Unix epoch (the callback may run a little
    /// later). Fields are only ever added after this one.
    pub unix_time_us: i64,
}

/// Receives log records on the library's `tether-log` thread, one at a time, in order. The
/// record and its strings are valid only during the call. It may do anything but call
/// `tether_set_log_callback`, or free a client whose event callback or proxy resolver may be
/// inside `tether_set_log_callback` at that moment (see there).
pub type tether_log_cb =
    Option<unsafe extern "C" fn(ctx: *mut c_void, record: *const tether_log_record)>;

/// The app's callback and context, owned by the log thread; dropping it runs `destroy`.
struct Hook {
    cb: unsafe extern "C" fn(*mut c_void, *const tether_log_record),
    ctx: AppCtx,
}

impl Hook {
    fn call(&self, r: &LogRecord) {
        let target = CString::new(r.target).unwrap_or_default();
        let message = CString::new(r.message.replace('\0', " ")).unwrap_or_default();
        let rec = tether_log_record {
            level: r.level as u32,
            target: target.as_ptr(),
            client_id: r.client,
            message: message.as_ptr(),
            unix_time_us: r
                .time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        };
        // A panic must not unwind through the app's frames, nor kill the log thread.
        // SAFETY: the app registered `cb` for exactly this call; `rec` outlives it.
        let _ = std::panic::catch_unwind(|| unsafe { (self.cb)(self.ctx.ptr(), &rec) });
    }
}

ffi_fn! {
    /// Installs the process-wide log callback: `cb(ctx, record)` receives every record at
    /// `max_level` or more important (`TETHER_LOG_ERROR` 1 to `TETHER_LOG_TRACE` 5; larger
    /// values mean TRACE), on the library's own `tether-log` thread, never on a network
    /// thread: a slow callback costs dropped records (the next record says how many), never
    /// a stalled connection. Records describe connect attempts with address and timing, the
    /// HTTP status of a refused upgrade or login, TLS failures, close codes, resume
    /// asked/succeeded/reset, the backoff chosen, request timeouts and decoding errors; none
    /// holds a secret. Replaces the previous callback: this call returns once the previous
    /// callback has received its last record and its `destroy(ctx)` has run (on the log
    /// thread), so it is never called again afterwards. `cb` NULL (or `max_level` 0) removes
    /// the callback; then logging costs one atomic load per record site. `destroy` may be
    /// NULL. `destroy(ctx)` runs exactly once whatever this call returns, also on
    /// `TETHER_ERR_STATE` (called from inside a log callback, or the `tether-log` thread could
    /// not be started), where it runs at once; the one exception is `TETHER_ERR_FORKED` (a
    /// child process after fork() in a process that had created a client), where nothing is
    /// called and `ctx` stays the app's. In a child forked before any client was created the
    /// library works, but the callback installed before the fork is gone with the parent's
    /// log thread (never called there, its `destroy` never run): install one again in the
    /// child to get its records. Concurrent calls take effect in one order; the level left
    /// in place is that of the callback left in place. Any thread. Since this call waits for the log thread, a log callback must not free a client
    /// whose event callback or proxy resolver may be inside this call at that moment, nor one
    /// whose event callback's `destroy(ctx)` (which that free runs and waits for) makes this
    /// call: the free waits for that callback, and the callback for the log thread, for ever.
    fn tether_set_log_callback(
        cb: tether_log_cb,
        ctx: *mut c_void,
        destroy: tether_destroy_cb,
        max_level: u32,
    ) -> tether_status {
        let level = LogLevel::from_u8(max_level.min(u32::from(u8::MAX)) as u8);
        let ctx = AppCtx::new(ctx, destroy);
        let hook = match (cb, level) {
            (Some(cb), Some(_)) => Some(Hook { cb, ctx }),
            _ => {
                // Nothing to install: the context is the app's again, at once.
                drop(ctx);
                None
            }
        };
        let sink = hook.map(|h| -> crate::logging::LogSink { Box::new(move |r: &LogRecord| h.call(r)) });
        let from_log_thread = crate::logging::on_log_thread();
        if set_log_sink(sink, level.unwrap_or(LogLevel::Error)) {
            status_of(Ok(()))
        } else if from_log_thread {
            status_of(Err(Error::new(
                Status::ErrState,
                "tether_set_log_callback cannot be called from a log callback",
            )))
        } else {
            // set_log_sink refuses only those two cases.
            status_of(Err(Error::new(
                Status::ErrState,
                "cannot start the tether-log thread",
            )))
        }
    } ?= code
}

/// A client's statistics, filled by `tether_client_stats`. Set `size` to
/// `sizeof(tether_stats)` before the call: the struct only grows at its end, so a program
/// built against an older header keeps working with a newer library, which fills only the
/// fields that fit in `size`.
#[repr(C)]
pub struct tether_stats {
    /// In: the size of the caller's struct. Out: how many bytes the library filled.
    pub size: u32,
    /// `TETHER_STATE_*`, as `tether_client_state` reports it.
    pub state: u32,
    /// Connection attempts started.
    pub connect_attempts: u64,
    /// Attempts that ended connected (for rwws: authenticated).
    pub connections: u64,
    /// gomuks: connections that asked to resume and got every missed event.
    pub resumes_succeeded: u64,
    /// gomuks: connections that asked to resume and got a fresh state (or a catchup) instead.
    pub resumes_reset: u64,
    /// Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    pub wire_bytes_in: u64,
    /// Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    pub wire_bytes_out: u64,
    /// Bytes of the received messages after decompression: compression saved
    /// `1 - wire_bytes_in / payload_bytes_in`.
    pub payload_bytes_in: u64,
    /// Websocket data messages received (0 in-process, where no websocket carries the
    /// backend's events, nor any bytes: only `events_received` counts them).
    pub messages_received: u64,
    /// Server events received (gomuks: not replies or pongs; rwws: packets).
    pub events_received: u64,
    /// Requests written to a connection (in-process: handed to the backend).
    pub requests_sent: u64,
    /// Requests without an outcome yet.
    pub requests_in_flight: u64,
    /// Requests that ended with `TETHER_ERR_REQUEST_TIMEOUT`.
    pub requests_timed_out: u64,
    /// Events waiting to be taken.
    pub queued_events: u64,
    /// Round-trip time of the last ping answered with a measured round trip (see
    /// `tether_event_rtt_us`) in microseconds; -1 before the first.
    pub last_rtt_us: i64,
    /// How long the current connection has been up, in milliseconds; -1 while not connected.
    pub connected_ms: i64,
    /// Bytes of requests and packets waiting to be written: made while disconnected, or
    /// faster than the uplink carries. At most `max_unsent_bytes` (one larger message alone
    /// excepted); a send that would pass it fails with `TETHER_ERR_SEND_BUFFER_FULL`. Added
    /// after the first version of the struct: a caller whose `size` ends before it gets
    /// everything else.
    pub unsent_bytes: u64,
}

/// The size of the first version of `tether_stats`, which every caller's struct holds at
/// least. Fields added later go at the end and leave this as it is.
const STATS_MIN_SIZE: usize = std::mem::offset_of!(tether_stats, unsent_bytes);

ffi_fn! {
    /// The client's id, unique in the process and never 0: log records name their client by
    /// it (`tether_log_record.client_id`). 0 for NULL, and for a client an internal panic
    /// poisoned (`TETHER_ERR_PANIC`). Any thread.
    client fn tether_client_id(c: *const tether_client) -> u64 |h| {
        h.client().id()
    } ?= |_| 0
}

ffi_fn! {
    /// Writes the client's connection state (`TETHER_STATE_IDLE`, `_CONNECTING`,
    /// `_CONNECTED`, `_WAITING` between attempts, `_PAUSED` by the app, `_CLOSED`) to `*out`.
    /// Reading it takes no event. `TETHER_ERR_NULL` for a NULL argument. Any thread.
    client fn tether_client_state(c: *const tether_client, out: *mut u32) -> tether_status |h| {
        status_of(out_arg(out, "out").map(|o| *o = h.client().state() as u32))
    } ?= code
}

ffi_fn! {
    /// Fills `*out` with the client's statistics. The caller sets `out->size` to
    /// `sizeof(tether_stats)` first; the library fills the fields that fit in it and sets
    /// `out->size` to the bytes it filled. `TETHER_ERR_INVALID_ARGUMENT` if `out->size` is
    /// smaller than the first version of the struct (nothing else written); `TETHER_ERR_NULL`
    /// for a NULL argument. Cheap (a few atomic loads); any thread.
    client fn tether_client_stats(c: *const tether_client, out: *mut tether_stats) -> tether_status |h| {
        status_of(fill_stats(h, out))
    } ?= code
}

fn fill_stats(h: &tether_client, out: *mut tether_stats) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::new(Status::ErrNull, "out is NULL"));
    }
    // Only raw pointers into `out`: an older caller's struct is shorter than ours, so no
    // `&mut tether_stats` may be made of it.
    // SAFETY: `out` is non-NULL and points to the caller's struct, whose first field is `size`.
    let size = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() } as usize;
    if size < STATS_MIN_SIZE {
        return Err(Error::new(
            Status::ErrInvalidArgument,
            format!("out->size is {size}; set it to sizeof(tether_stats)"),
        ));
    }
    let c = h.client();
    let s = c.stats();
    let ms = |d: Option<std::time::Duration>, f: fn(&std::time::Duration) -> u128| {
        d.map_or(-1, |d| i64::try_from(f(&d)).unwrap_or(i64::MAX))
    };
    let full = tether_stats {
        size: 0,
        state: s.state as u32,
        connect_attempts: s.connect_attempts,
        connections: s.connections,
        resumes_succeeded: s.resumes_succeeded,
        resumes_reset: s.resumes_reset,
        wire_bytes_in: s.wire_bytes_in,
        wire_bytes_out: s.wire_bytes_out,
        payload_bytes_in: s.payload_bytes_in,
        messages_received: s.messages_received,
        events_received: s.events_received,
        requests_sent: s.requests_sent,
        requests_in_flight: s.requests_in_flight,
        requests_timed_out: s.requests_timed_out,
        queued_events: s.queued_events,
        last_rtt_us: ms(s.last_rtt, std::time::Duration::as_micros),
        connected_ms: ms(s.connected_for, std::time::Duration::as_millis),
        unsent_bytes: s.unsent_bytes,
    };
    // An older caller's struct is shorter than ours: copy only the fields it has room for
    // (past the first version every field is 8 bytes, so whole ones end on a multiple of 8).
    let full_size = std::mem::size_of::<tether_stats>();
    let n = if size >= full_size {
        full_size
    } else {
        size - size % 8
    };
    // SAFETY: `out` has `size` writable bytes (the caller's promise) and `full` has at least
    // `n`; `size` is the struct's first field, within every version.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&full as *const tether_stats).cast::<u8>(),
            out.cast::<u8>(),
            n,
        );
        std::ptr::addr_of_mut!((*out).size).write_unaligned(n as u32);
    }
    Ok(())
}
