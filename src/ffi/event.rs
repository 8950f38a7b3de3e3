//! `tether_event` accessors, status strings, version and the last error message.

use std::ffi::c_char;

use crate::event::Event;
use crate::status::{Error, Status};

use super::boundary::{boundary, code, last_error_ptr, out_arg, pure_boundary, status_of};
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

/// The kind: one of `TETHER_EVENT_*`. Returns 0 for NULL. Any thread; the event is not changed.
#[no_mangle]
pub unsafe extern "C" fn tether_event_kind(ev: *const tether_event) -> u32 {
    boundary(|_| 0, || field(ev, 0, |e| e.kind() as u32))
}

/// RESPONSE: the id `tether_client_request` returned. PONG: the ping's id. MESSAGE: the
/// server's event id (negative for buffered events, 0 otherwise). 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_request_id(ev: *const tether_event) -> i64 {
    boundary(|_| 0, || field(ev, 0, |e| e.request_id()))
}

/// RESPONSE: `TETHER_OK`, `TETHER_ERR_REMOTE` (data is the server's error string as JSON),
/// `_REQUEST_TIMEOUT`, `_CANCELLED`, `_DISCONNECTED` or `_CLIENT_CLOSED`. DISCONNECTED: why the
/// connection ended. `TETHER_OK` for other kinds; `TETHER_ERR_NULL` for NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_status(ev: *const tether_event) -> tether_status {
    boundary(code, || {
        field(ev, Status::ErrNull.code(), |e| e.status().code())
    })
}

/// MESSAGE: the gomuks command name (`sync_complete`, `run_id`, ...); "" for other kinds and
/// for NULL. Borrowed: valid as long as the event; never NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_command(ev: *const tether_event) -> *const c_char {
    const EMPTY: &str = "\0";
    boundary(
        |_| EMPTY.as_ptr().cast(),
        || field(ev, EMPTY, |e| e.command_with_nul()).as_ptr().cast(),
    )
}

/// The payload, borrowed for as long as the event lives: MESSAGE and RESPONSE: the raw JSON of
/// the envelope's `data`, exactly as received; PACKET: the packet bytes; DISCONNECTED: the
/// close reason or error text (UTF-8). `*ptr` is never NULL on success (it may point at 0
/// bytes). `TETHER_ERR_NULL` if any argument is NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_data(
    ev: *const tether_event,
    ptr: *mut *const u8,
    len: *mut usize,
) -> tether_status {
    boundary(code, || status_of(event_data(ev, ptr, len)))
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

/// DISCONNECTED: the websocket close code, 0 when the connection ended without a close frame,
/// or the HTTP status when the upgrade was refused. 0 otherwise and for NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_close_code(ev: *const tether_event) -> u16 {
    boundary(|_| 0, || field(ev, 0, |e| e.close_code()))
}

/// DISCONNECTED: milliseconds until the next connection attempt; -1 when no retry follows
/// (CLOSED comes next) and for other kinds and NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_retry_in_ms(ev: *const tether_event) -> i64 {
    boundary(
        |_| -1,
        || {
            field(ev, -1, |e| {
                e.retry_in()
                    .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            })
        },
    )
}

/// PONG: the round-trip time in microseconds; -1 for other kinds and NULL.
///
/// Also -1 for the PONG that rwws servers send as the answer to the auth frame (spec
/// rwws-binary.md §2.4): it answers no ping of ours, so it has no round trip, and its request id
/// is 0. Its server clock (`tether_event_server_time_ms`) is still valid.
#[no_mangle]
pub unsafe extern "C" fn tether_event_rtt_us(ev: *const tether_event) -> i64 {
    boundary(
        |_| -1,
        || {
            field(ev, -1, |e| {
                e.rtt()
                    .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            })
        },
    )
}

/// PONG (gomuks): the event id the ping acknowledged, 0 if it carried no acknowledgement.
/// 0 for other kinds and NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_acked_id(ev: *const tether_event) -> i64 {
    boundary(|_| 0, || field(ev, 0, |e| e.acked_id()))
}

/// PONG (rwws): the server's unix time in milliseconds, 0 if absent or implausible.
#[no_mangle]
pub unsafe extern "C" fn tether_event_server_time_ms(ev: *const tether_event) -> i64 {
    boundary(|_| 0, || field(ev, 0, |e| e.server_time_ms()))
}

/// CONNECTING, CONNECTED, DISCONNECTED: whether this connection asked the server to resume
/// (gomuks: `run_id` + `last_received_event` were sent). false otherwise and for NULL.
#[no_mangle]
pub unsafe extern "C" fn tether_event_resume_attempted(ev: *const tether_event) -> bool {
    boundary(|_| false, || field(ev, false, |e| e.resume_attempted()))
}

/// CONNECTING, CONNECTED, DISCONNECTED: the connection attempt number, from 1. 0 otherwise.
#[no_mangle]
pub unsafe extern "C" fn tether_event_attempt(ev: *const tether_event) -> u32 {
    boundary(|_| 0, || field(ev, 0, |e| e.attempt()))
}

/// Frees an event taken with `tether_client_poll`. NULL is fine; never free an event lent to a
/// callback, and never free one twice.
#[no_mangle]
pub unsafe extern "C" fn tether_event_free(ev: *mut tether_event) {
    boundary(
        |_| (),
        || {
            if !ev.is_null() {
                // SAFETY: the caller passes an event from tether_client_poll, once.
                drop(unsafe { Box::from_raw(ev) });
            }
        },
    )
}

/// A static, NUL-terminated English description of a status; "unknown status" for values the
/// library does not define. Never NULL, never freed. Any thread.
#[no_mangle]
pub extern "C" fn tether_status_str(s: tether_status) -> *const c_char {
    pure_boundary(
        |st| st.description_nul().as_ptr().cast(),
        || match Status::from_code(s) {
            Some(st) => st.description_nul().as_ptr().cast(),
            None => c"unknown status".as_ptr(),
        },
    )
}

/// The message of the most recent failed call on the calling thread ("" if none), naming
/// the argument or the reason (e.g. why a configuration is invalid). Borrowed: valid until
/// the next failing tether call on this thread. Never NULL. Credentials never appear in it.
#[no_mangle]
pub extern "C" fn tether_last_error() -> *const c_char {
    pure_boundary(|_| last_error_ptr(), last_error_ptr)
}

/// The library version, e.g. "0.1.0" (static, never freed). Compare with
/// `TETHER_VERSION_STRING` to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn tether_version() -> *const c_char {
    pure_boundary(|_| VERSION.as_ptr().cast(), || VERSION.as_ptr().cast())
}

/// The library version as `(MAJOR << 16) | (MINOR << 8) | PATCH`, the same encoding as
/// `TETHER_VERSION_NUMBER`. Before 1.0 a different MAJOR.MINOR means an incompatible ABI.
#[no_mangle]
pub extern "C" fn tether_version_number() -> u32 {
    pure_boundary(|_| version_number(), version_number)
}

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

fn version_number() -> u32 {
    let p = |s: &str| s.parse::<u32>().unwrap_or(0);
    (p(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (p(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | p(env!("CARGO_PKG_VERSION_PATCH"))
}
