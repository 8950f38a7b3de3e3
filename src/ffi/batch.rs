//! The batch path: many events per call, described by an array of fixed-layout entries over
//! one packed byte buffer, for bindings whose per-call cost is high (ctypes, JNA).
//!
//! Layout (all little-endian on the supported targets, native alignment, 80 bytes per entry;
//! `tests/c` asserts sizes and offsets): see `tether_batch_entry`. Command names and payloads
//! are copied back to back into the batch's buffer; an entry refers to them by offset and
//! length, so a binding can copy the whole buffer out once and slice it.

use crate::event::Event;
use crate::status::{Error, Status};

use super::boundary::{code, fail, free_handle, out_arg, status_of};
use super::client::{take_batch, tether_client};
use super::tether_status;

/// One event of a batch. `command_*` and `data_*` locate the command name (no NUL) and the
/// payload (as `tether_event_data`) inside the batch buffer. Fields that do not apply to the
/// kind hold the same values as the single-event accessors return (0, or -1 for `rtt_us` and
/// `retry_in_ms`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tether_batch_entry {
    /// As `tether_event_request_id`. Offset 0.
    pub request_id: i64,
    /// Offset of the payload in the buffer. Offset 8.
    pub data_offset: u64,
    /// Length of the payload. Offset 16.
    pub data_len: u64,
    /// As `tether_event_acked_id`. Offset 24.
    pub acked_id: i64,
    /// As `tether_event_server_time_ms`. Offset 32.
    pub server_time_ms: i64,
    /// As `tether_event_rtt_us`. Offset 40.
    pub rtt_us: i64,
    /// As `tether_event_retry_in_ms`. Offset 48.
    pub retry_in_ms: i64,
    /// As `tether_event_kind`. Offset 56.
    pub kind: u32,
    /// As `tether_event_status`. Offset 60.
    pub status: tether_status,
    /// Offset of the command name in the buffer. Offset 64.
    pub command_offset: u32,
    /// Length of the command name (0 for none). Offset 68.
    pub command_len: u32,
    /// As `tether_event_attempt`. Offset 72.
    pub attempt: u32,
    /// As `tether_event_close_code`. Offset 76.
    pub close_code: u16,
    /// As `tether_event_resume_attempted` (0 or 1). Offset 78.
    pub resume_attempted: u8,
    /// Always 0. Offset 79.
    pub reserved: u8,
}

/// A reusable container for `tether_client_poll_batch`. Create with `tether_batch_new`, free
/// with `tether_batch_free`. Not thread-safe: one batch per polling thread.
pub struct tether_batch {
    max: usize,
    events: Vec<Event>,
    entries: Vec<tether_batch_entry>,
    bytes: Vec<u8>,
}

impl tether_batch {
    fn clear(&mut self) {
        self.events.clear();
        self.entries.clear();
        self.bytes.clear();
    }

    fn pack(&mut self) -> Result<(), Error> {
        let too_big = || Error::new(Status::ErrInvalidArgument, "batch buffer over 4 GiB");
        for ev in &self.events {
            let cmd = ev.command().as_bytes();
            let command_offset = u32::try_from(self.bytes.len()).map_err(|_| too_big())?;
            self.bytes.extend_from_slice(cmd);
            let data_offset = self.bytes.len() as u64;
            self.bytes.extend_from_slice(ev.data());
            let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let us = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
            self.entries.push(tether_batch_entry {
                request_id: ev.request_id(),
                data_offset,
                data_len: ev.data().len() as u64,
                acked_id: ev.acked_id(),
                server_time_ms: ev.server_time_ms(),
                rtt_us: ev.rtt().map_or(-1, us),
                retry_in_ms: ev.retry_in().map_or(-1, ms),
                kind: ev.kind() as u32,
                status: ev.status().code(),
                command_offset,
                command_len: cmd.len() as u32,
                attempt: ev.attempt(),
                close_code: ev.close_code(),
                resume_attempted: u8::from(ev.resume_attempted()),
                reserved: 0,
            });
        }
        // The payloads now live in `bytes`; release the received buffers at once.
        self.events.clear();
        Ok(())
    }
}

ffi_fn! {
    /// Creates a batch that holds up to `max_events` events (at least 1). `*out` receives a batch
    /// owned by the caller (free with `tether_batch_free`). `TETHER_ERR_INVALID_ARGUMENT` for 0.
    fn tether_batch_new(max_events: usize, out: *mut *mut tether_batch) -> tether_status {
        if max_events == 0 {
            return fail(Error::new(
                Status::ErrInvalidArgument,
                "max_events must be positive",
            ));
        }
        status_of(out_arg(out, "out").map(|o| {
            *o = Box::into_raw(Box::new(tether_batch {
                max: max_events,
                events: Vec::with_capacity(max_events.min(4096)),
                entries: Vec::with_capacity(max_events.min(4096)),
                bytes: Vec::new(),
            }));
        }))
    } ?= code
}

ffi_fn! {
    /// Waits up to `timeout_ms` (0: do not wait; negative: until one arrives) for an event, then
    /// moves it and every other queued event, up to the batch's capacity, into `batch`, replacing
    /// what it held. Returns `TETHER_OK` with `*out_count` (may be NULL) set to the number of
    /// events (at least 1); `TETHER_TIMEOUT` or `TETHER_CLOSED` (as `tether_client_poll`) with the
    /// batch emptied. A CLOSED event is always the last entry. Puts the client in poll mode.
    /// Any thread, but one batch per thread.
    client fn tether_client_poll_batch(
        c: *mut tether_client,
        timeout_ms: i32,
        batch: *mut tether_batch,
        out_count: *mut usize,
    ) -> tether_status |h| {
        let b = match out_arg(batch, "batch") {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        b.clear();
        let mut events = std::mem::take(&mut b.events);
        let r = take_batch(h, timeout_ms, b.max, &mut events);
        b.events = events;
        match r.and_then(|s| b.pack().map(|()| s)) {
            Ok(s) => {
                // SAFETY: the caller passes a writable pointer or NULL.
                if let (Status::Ok, Some(n)) = (s, unsafe { out_count.as_mut() }) {
                    *n = b.entries.len();
                }
                s.code()
            }
            Err(e) => fail(e),
        }
    } ?= code
}

ffi_fn! {
    /// Lends the batch's contents until its next `tether_client_poll_batch` or `tether_batch_free`:
    /// `*entries` and `*count` the entries, `*bytes` and `*bytes_len` the buffer they point into.
    /// Pointers are never NULL on success (they may address 0 items). `TETHER_ERR_NULL` if any
    /// argument is NULL.
    fn tether_batch_view(
        batch: *const tether_batch,
        entries: *mut *const tether_batch_entry,
        count: *mut usize,
        bytes: *mut *const u8,
        bytes_len: *mut usize,
    ) -> tether_status {
        status_of(view(batch, entries, count, bytes, bytes_len))
    } ?= code
}

fn view(
    batch: *const tether_batch,
    entries: *mut *const tether_batch_entry,
    count: *mut usize,
    bytes: *mut *const u8,
    bytes_len: *mut usize,
) -> Result<(), Error> {
    // SAFETY: the caller passes a live batch or NULL.
    let b =
        unsafe { batch.as_ref() }.ok_or_else(|| Error::new(Status::ErrNull, "batch is NULL"))?;
    let outs = (
        out_arg(entries, "entries")?,
        out_arg(count, "count")?,
        out_arg(bytes, "bytes")?,
        out_arg(bytes_len, "bytes_len")?,
    );
    *outs.0 = b.entries.as_ptr();
    *outs.1 = b.entries.len();
    *outs.2 = b.bytes.as_ptr();
    *outs.3 = b.bytes.len();
    Ok(())
}

ffi_fn! {
    /// Frees a batch. NULL is fine; never twice.
    fn tether_batch_free(batch: *mut tether_batch) {
        // SAFETY: the caller passes a batch from tether_batch_new, once, or NULL.
        unsafe { free_handle(batch, |_| ()) }
    } ?= |_| ()
}
