//! `tether_settings`: a typed list of rwws settings (spec §2.8), sent as one Settings packet.

use crate::status::{Error, Status};

use super::boundary::{bytes_arg, code, fail, free_handle, out_arg, status_of};
use super::client::tether_client;
use super::tether_status;

/// rwws settings to send with `tether_client_send_settings`. Create with
/// `tether_settings_new`, free with `tether_settings_free`. Not thread-safe.
pub struct tether_settings {
    items: Vec<(u8, Vec<u8>)>,
}

ffi_fn! {
    /// Creates an empty settings list; `*out` is owned by the caller (free with
    /// `tether_settings_free`). `TETHER_ERR_NULL` if `out` is NULL.
    fn tether_settings_new(out: *mut *mut tether_settings) -> tether_status {
        status_of(out_arg(out, "out").map(|o| {
            *o = Box::into_raw(Box::new(tether_settings { items: Vec::new() }));
        }))
    } ?= code
}

ffi_fn! {
    /// Appends setting `id` with `value` (`len` bytes, copied; NULL with 0 for an empty value).
    /// Ids 0x00 (reserved) and 0xFF (the list terminator) are `TETHER_ERR_INVALID_ARGUMENT`.
    /// The protocol defines no setting yet; the server must know the id and its value layout.
    fn tether_settings_add(
        s: *mut tether_settings,
        id: u8,
        value: *const u8,
        len: usize,
    ) -> tether_status {
        status_of(add(s, id, value, len))
    } ?= code
}

fn add(s: *mut tether_settings, id: u8, value: *const u8, len: usize) -> Result<(), Error> {
    let s = out_arg(s, "settings")?;
    let value = bytes_arg(value, len, "value")?;
    // Validated here so the error points at the call that added it.
    crate::dialect::rwws::codec::settings_packet([(id, value)])?;
    s.items.push((id, value.to_vec()));
    Ok(())
}

ffi_fn! {
    /// rwws: sends the settings as one Settings packet (`01`, pairs, `ff`); queued while
    /// disconnected. Sent once: a later connection does not repeat them, so settings the
    /// server must know on every connection are sent again on each CONNECTED. A packet the
    /// client ends without having written (a close while offline, a stop for good such as a
    /// 3001) comes back in a `TETHER_EVENT_UNSENT` event with its bytes, before CLOSED.
    /// `TETHER_ERR_STATE` for gomuks clients, after close and once the state reads
    /// `TETHER_STATE_CLOSED`; `TETHER_ERR_SEND_BUFFER_FULL`
    /// if it would pass `max_unsent_bytes` (nothing taken). `s` is read during the call only
    /// (free or reuse it afterwards; no other thread may change it meanwhile). Any thread.
    client fn tether_client_send_settings(
        c: *mut tether_client,
        s: *const tether_settings,
    ) -> tether_status |h| {
        // SAFETY: the caller passes a live settings list or NULL.
        let Some(s) = (unsafe { s.as_ref() }) else {
            return fail(Error::new(Status::ErrNull, "settings is NULL"));
        };
        let pairs: Vec<(u8, &[u8])> = s.items.iter().map(|(id, v)| (*id, &v[..])).collect();
        status_of(h.client().send_settings(&pairs))
    } ?= code
}

ffi_fn! {
    /// Frees a settings list. NULL is fine; never twice.
    fn tether_settings_free(s: *mut tether_settings) {
        // SAFETY: the caller passes a list from tether_settings_new, once, or NULL.
        unsafe { free_handle(s, |_| ()) }
    } ?= |_| ()
}
