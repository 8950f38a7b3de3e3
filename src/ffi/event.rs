//! `tether_event` accessors and `tether_event_free`.

use std::ffi::c_char;

use crate::event::Event;
use crate::status::{Error, Status};

use super::boundary::{code, free_handle, out_arg, status_of};
use super::tether_status;

/// One event, taken with `tether_client_poll` (owned; free with `tether_event_free`) or lent to
/// an event callback (borrowed for the call only).
pub struct tether_event {
    ev: Event,
}

impl tether_event {
    pub(crate) fn wrap(ev: Event) -> tether_event {
        tether_event { ev }
    }
}

/// Reads a field of a possibly-NULL event, with `default` for NULL.
fn field<'a, T>(ev: *const tether_event, default: T, f: impl FnOnce(&'a Event) -> T) -> T {
    // SAFETY: the caller passes an event it owns or was lent, or NULL; 'a is the C lifetime.
    match unsafe { ev.as_ref::<'a>() } {
        Some(e) => f(&e.ev),
        None => default,
    }
}

ffi_fn! {
    /// The kind: one of `TETHER_EVENT_*`. Returns 0 for NULL. Any thread; the event is not changed.
    fn tether_event_kind(ev: *const tether_event) -> u32 {
        field(ev, 0, |e| e.kind() as u32)
    } ?= |_| 0
}

ffi_fn! {
    /// RESPONSE: the id `tether_client_request` returned. PONG: the ping's id. MESSAGE: the
    /// server's event id (negative for buffered events, 0 otherwise). 0 for NULL.
    fn tether_event_request_id(ev: *const tether_event) -> i64 {
        field(ev, 0, |e| e.request_id())
    } ?= |_| 0
}

ffi_fn! {
    /// RESPONSE: `TETHER_OK`, `TETHER_ERR_REMOTE` (data is the server's error string as JSON),
    /// `_REQUEST_TIMEOUT`, `_CANCELLED`, `_DISCONNECTED`, `_CLIENT_CLOSED`, `_PANIC` after an
    /// internal panic, or (in-process) `_STATE` for an account command the backend cannot run
    /// logged out, `_UNSUPPORTED` for what the library lacks, `_INVALID_ARGUMENT` for a
    /// command name with a NUL and `_PROTOCOL` for an answer that is neither a response nor
    /// an error. DISCONNECTED: why the
    /// connection ended. UNSENT: `TETHER_ERR_CLIENT_CLOSED`, or `TETHER_ERR_PANIC` after an
    /// internal panic. `TETHER_OK` for other kinds; `TETHER_ERR_NULL` for NULL.
    fn tether_event_status(ev: *const tether_event) -> tether_status {
        field(ev, Status::ErrNull.code(), |e| e.status().code())
    } ?= code
}

/// "" for an event without a command; the accessor lends it, so it must be static.
const EMPTY_COMMAND: &str = "\0";

ffi_fn! {
    /// MESSAGE: the gomuks command name (`sync_complete`, `run_id`, ...); "" for other kinds and
    /// for NULL. Borrowed: valid as long as the event; never NULL.
    fn tether_event_command(ev: *const tether_event) -> *const c_char {
        field(ev, EMPTY_COMMAND, |e| e.command_with_nul()).as_ptr().cast()
    } ?= |_| EMPTY_COMMAND.as_ptr().cast()
}

ffi_fn! {
    /// The payload, borrowed for as long as the event lives: MESSAGE and a successful RESPONSE:
    /// the raw JSON of the envelope's `data`, exactly as received; a failed RESPONSE: a JSON
    /// string, the server's error text (decoded and encoded again, so its escapes may differ)
    /// or the library's reason; PACKET: the packet bytes; DISCONNECTED: the
    /// close reason or error text (UTF-8). `*ptr` is never NULL on success (it may point at 0
    /// bytes). `TETHER_ERR_NULL` if any argument is NULL.
    fn tether_event_data(
        ev: *const tether_event,
        ptr: *mut *const u8,
        len: *mut usize,
    ) -> tether_status {
        status_of(event_data(ev, ptr, len))
    } ?= code
}

fn event_data(ev: *const tether_event, ptr: *mut *const u8, len: *mut usize) -> Result<(), Error> {
    let data = field(ev, None, |e| Some(e.data()))
        .ok_or_else(|| Error::new(Status::ErrNull, "event is NULL"))?;
    let (p, l) = (out_arg(ptr, "ptr")?, out_arg(len, "len")?);
    // Bytes::as_ptr is dangling (never NULL) for empty data, which is what C expects.
    *p = data.as_ptr();
    *l = data.len();
    Ok(())
}

ffi_fn! {
    /// DISCONNECTED: the websocket close code, 0 when the connection ended without a close frame,
    /// or the HTTP status when the upgrade was refused. 0 otherwise and for NULL.
    fn tether_event_close_code(ev: *const tether_event) -> u16 {
        field(ev, 0, |e| e.close_code())
    } ?= |_| 0
}

ffi_fn! {
    /// DISCONNECTED: milliseconds until the next connection attempt; -1 when none is planned
    /// (the client stopped for good: the outcomes of what it still held, then CLOSED, follow;
    /// or the app paused it: the client goes on after `tether_client_unpause`) and for other
    /// kinds and NULL. Later if the event queue is full by
    /// then: the attempt waits for room (see `tether_config_set_queue_capacity`).
    fn tether_event_retry_in_ms(ev: *const tether_event) -> i64 {
        field(ev, -1, |e| {
            e.retry_in()
                .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        })
    } ?= |_| -1
}

ffi_fn! {
    /// PONG: the round-trip time in microseconds; -1 for other kinds and NULL.
    ///
    /// Also -1 for the PONG that rwws servers send as the answer to the auth frame (spec
    /// rwws-binary.md §2.4): it answers no ping of ours, so it has no round trip, and its request id
    /// is 0. Its server clock (`tether_event_server_time_ms`) is still valid. -1 too for the
    /// pong of a ping that waited while the client had stopped reading (the app let the queue
    /// fill): it may have sat unread, so its time would be the app's stall, not the network's.
    fn tether_event_rtt_us(ev: *const tether_event) -> i64 {
        field(ev, -1, |e| {
            e.rtt()
                .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        })
    } ?= |_| -1
}

ffi_fn! {
    /// PONG (gomuks): the event id the ping acknowledged, 0 if it carried no acknowledgement.
    /// 0 for other kinds and NULL.
    fn tether_event_acked_id(ev: *const tether_event) -> i64 {
        field(ev, 0, |e| e.acked_id())
    } ?= |_| 0
}

ffi_fn! {
    /// PONG (rwws): the server's unix time in milliseconds, 0 if absent or not a date; 0 for
    /// other kinds and NULL.
    fn tether_event_server_time_ms(ev: *const tether_event) -> i64 {
        field(ev, 0, |e| e.server_time_ms())
    } ?= |_| 0
}

ffi_fn! {
    /// CONNECTING, CONNECTED, DISCONNECTED: whether this connection asked the server to resume
    /// (gomuks: `run_id` + `last_received_event` in its upgrade request); for CONNECTING, and
    /// for an attempt that ended before its upgrade was sent, whether it was to ask. false
    /// otherwise and for NULL.
    fn tether_event_resume_attempted(ev: *const tether_event) -> bool {
        field(ev, false, |e| e.resume_attempted())
    } ?= |_| false
}

ffi_fn! {
    /// RESUMED (gomuks): `TETHER_RESUME_SUCCEEDED` (every event missed since the resume point
    /// arrives exactly once, before `init_complete`: keep the cached state) or
    /// `TETHER_RESUME_RESET` (the backend restarted or no longer held the resume point: drop
    /// the cached state; the fresh state follows) or `TETHER_RESUME_CAUGHT_UP` (the resume
    /// point was gone, but with `last_server_ts` configured the changes since then follow as
    /// one `sync_complete` with `catchup`: keep the cached state and apply it; the missed
    /// events themselves are not delivered). 0 for other kinds and NULL.
    fn tether_event_resume_outcome(ev: *const tether_event) -> u32 {
        field(ev, 0, |e| e.resume_outcome().map_or(0, |o| o as u32))
    } ?= |_| 0
}

ffi_fn! {
    /// CONNECTING, CONNECTED, DISCONNECTED: the connection attempt number, from 1 (0 for the
    /// DISCONNECTED of an internal panic). 0 otherwise and for NULL.
    fn tether_event_attempt(ev: *const tether_event) -> u32 {
        field(ev, 0, |e| e.attempt())
    } ?= |_| 0
}

ffi_fn! {
    /// PROGRESS: how much of the upload is done, as the backend reports it (gomuks v0.2607.0:
    /// a fraction from 0 to 1, although its header promises a percentage). -1 for other kinds
    /// and NULL.
    fn tether_event_progress(ev: *const tether_event) -> f64 {
        field(ev, -1.0, |e| e.progress().unwrap_or(-1.0))
    } ?= |_| -1.0
}

ffi_fn! {
    /// Frees an event taken with `tether_client_poll`. NULL is fine; never free an event lent to a
    /// callback, and never free one twice.
    fn tether_event_free(ev: *mut tether_event) {
        // SAFETY: the caller passes an event from tether_client_poll, once, or NULL.
        unsafe { free_handle(ev, |_| ()) }
    } ?= |_| ()
}
