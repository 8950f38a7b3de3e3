//! The batch path: many events per call, described by an array of fixed-layout entries over
//! one packed byte buffer, for bindings whose per-call cost is high (ctypes, JNA).
//!
//! Layout (all little-endian on the supported targets, native alignment, 80 bytes per entry;
//! `tests/c` asserts sizes and offsets): see `tether_batch_entry`. Payloads and command names
//! are copied into the batch's buffer, each distinct command name once per batch; an entry
//! refers to them by offset and length, so a binding can copy the whole buffer out once and
//! slice it, and turn each command name into a string once per batch (keyed by its offset).

use crate::event::Event;
use crate::queue::Batch;
use crate::status::{Error, Status};

use super::boundary::{code, fail, free_handle, out_arg, status_of};
use super::client::{take_batch, tether_client};
use super::tether_status;

/// One event of a batch. `command_*` and `data_*` locate the command name (no NUL) and the
/// payload (as `tether_event_data`) inside the batch buffer; entries with the same command
/// name share its bytes (the same `command_offset`). Fields that do not apply to the
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
    /// As `tether_event_resume_outcome` (0, or a `TETHER_RESUME_*` value). Offset 79.
    pub resume_outcome: u8,
}

/// Most bytes one batch buffer holds: entries locate command names with `u32` offsets. An
/// event is taken off the queue only if it fits, so packing cannot fail after the take.
const MAX_BATCH_BYTES: usize = u32::MAX as usize;

/// Distinct command names a batch stores once (later ones are stored per entry): gomuks has
/// nine, and a linear search of a few short names costs less than copying them.
const MAX_NAMES_SHARED: usize = 8;

#[cfg(test)]
thread_local! {
    /// Tests lower the cap instead of allocating 4 GiB.
    static TEST_MAX_BATCH_BYTES: std::cell::Cell<usize> =
        const { std::cell::Cell::new(MAX_BATCH_BYTES) };
}

fn max_batch_bytes() -> usize {
    #[cfg(test)]
    return TEST_MAX_BATCH_BYTES.with(std::cell::Cell::get);
    #[cfg(not(test))]
    MAX_BATCH_BYTES
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

    /// Copies the taken events into the buffer. The events were taken only while they fit in
    /// `max_batch_bytes()`, so every offset fits its field.
    fn pack(&mut self) {
        // (offset, length) of the names packed so far: a batch carries a few names many times.
        let mut names: Vec<(usize, usize)> = Vec::new();
        for ev in &self.events {
            let cmd = ev.command().as_bytes();
            let command_offset = match names
                .iter()
                .find(|&&(at, n)| self.bytes[at..at + n] == *cmd)
            {
                Some(&(at, _)) => at as u32,
                None => {
                    let at = self.bytes.len();
                    self.bytes.extend_from_slice(cmd);
                    if names.len() < MAX_NAMES_SHARED && !cmd.is_empty() {
                        names.push((at, cmd.len()));
                    }
                    at as u32
                }
            };
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
                resume_outcome: ev.resume_outcome().map_or(0, |o| o as u8),
            });
        }
        // The payloads now live in `bytes`; release the received buffers at once.
        self.events.clear();
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
    ///
    /// The batch buffer holds at most 4 GiB: an event that would take it further stays queued
    /// for the next call. If the first event alone is larger, nothing is taken and
    /// `TETHER_ERR_MESSAGE_TOO_LARGE` is returned with the batch emptied and the event still
    /// queued; take it with `tether_client_poll`.
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
        let (cap, mut used, mut refused) = (max_batch_bytes(), 0usize, 0usize);
        // Sizes only: this runs under the queue lock; the copying happens in `pack`.
        let fits = |ev: &Event| {
            let n = ev.command().len() + ev.data().len();
            if n > cap - used {
                refused = n;
                return false;
            }
            used += n;
            true
        };
        let mut events = std::mem::take(&mut b.events);
        let taken = take_batch(h, timeout_ms, b.max, &mut events, fits);
        b.events = events;
        let status = match taken {
            Ok(Batch::Taken(_)) => {
                b.pack();
                Status::Ok
            }
            Ok(Batch::Refused) => {
                return fail(Error::new(
                    Status::ErrMessageTooLarge,
                    format!(
                        "the next event ({refused} bytes) does not fit in a batch (at most \
                         {cap} bytes); it stays queued, take it with tether_client_poll"
                    ),
                ))
            }
            Ok(Batch::Timeout) => Status::Timeout,
            Ok(Batch::Finished) => Status::Closed,
            Err(e) => return fail(e),
        };
        // SAFETY: the caller passes a writable pointer or NULL.
        if let (Status::Ok, Some(n)) = (status, unsafe { out_count.as_mut() }) {
            *n = b.entries.len();
        }
        status.code()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::ffi::*;
    use std::ptr::null_mut;

    fn message(id: i64, len: usize) -> Event {
        let mut e = Event::new(EventKind::Message);
        e.request_id = id;
        e.data = bytes::Bytes::from(vec![b'x'; len]);
        e
    }

    /// An unconnected client whose queue the test fills directly.
    unsafe fn client_with(events: Vec<Event>) -> *mut tether_client {
        let mut cfg = null_mut();
        assert_eq!(tether_config_new(&mut cfg), TETHER_OK);
        assert_eq!(
            tether_config_set_url(cfg, c"ws://127.0.0.1:9/".as_ptr()),
            TETHER_OK
        );
        let mut c = null_mut();
        assert_eq!(tether_client_new(cfg, &mut c), TETHER_OK);
        tether_config_free(cfg);
        (*c).client().queue().push_all(events);
        c
    }

    /// (kind, request id, data length) of each entry.
    unsafe fn entries(b: *const tether_batch) -> Vec<(u32, i64, u64)> {
        let (mut e, mut n, mut bytes, mut len) = (std::ptr::null(), 0, std::ptr::null(), 0);
        assert_eq!(
            tether_batch_view(b, &mut e, &mut n, &mut bytes, &mut len),
            TETHER_OK
        );
        std::slice::from_raw_parts(e, n)
            .iter()
            .map(|e| (e.kind, e.request_id, e.data_len))
            .collect()
    }

    /// Entries with the same command name share its bytes; every entry still finds its own
    /// name and payload.
    #[test]
    fn a_batch_stores_each_command_name_once() {
        let named = |id: i64, name: &str| {
            let mut e = message(id, 3);
            e.command = crate::event::command_name(name);
            e
        };
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let c = client_with(vec![
                named(1, "sync_complete"),
                named(2, "typing"),
                named(3, "sync_complete"),
                named(4, "custom_event"),
                named(5, "custom_event"),
                Event::new(EventKind::Connecting),
            ]);
            let mut b = null_mut();
            assert_eq!(tether_batch_new(16, &mut b), TETHER_OK);
            let mut n = 0;
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
            let (mut e, mut count, mut bytes, mut len) = (std::ptr::null(), 0, std::ptr::null(), 0);
            assert_eq!(
                tether_batch_view(b, &mut e, &mut count, &mut bytes, &mut len),
                TETHER_OK
            );
            let e = std::slice::from_raw_parts(e, count);
            let buf = std::slice::from_raw_parts(bytes, len);
            let name = |x: &tether_batch_entry| {
                let at = x.command_offset as usize;
                std::str::from_utf8(&buf[at..at + x.command_len as usize]).unwrap()
            };
            let names: Vec<&str> = e.iter().map(name).collect();
            assert_eq!(
                names,
                [
                    "sync_complete",
                    "typing",
                    "sync_complete",
                    "custom_event",
                    "custom_event",
                    ""
                ]
            );
            assert_eq!(e[0].command_offset, e[2].command_offset);
            assert_eq!(e[3].command_offset, e[4].command_offset);
            assert_ne!(e[0].command_offset, e[1].command_offset);
            // Three names and five payloads of 3 bytes.
            assert_eq!(len, "sync_completetypingcustom_event".len() + 5 * 3);
            for x in &e[..5] {
                let at = x.data_offset as usize;
                assert_eq!(&buf[at..at + 3], b"xxx");
            }
            tether_batch_free(b);
            tether_client_free(c);
        }
    }

    /// Packing used to fail after the events had been taken off the queue, losing them
    /// (CLOSED among them). An event the buffer cannot hold now waits for the next call.
    #[test]
    fn a_full_batch_leaves_the_next_event_queued() {
        TEST_MAX_BATCH_BYTES.with(|m| m.set(100));
        let closed = Event::new(EventKind::Closed);
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let c = client_with(vec![message(1, 40), message(2, 40), message(3, 40), closed]);
            let mut b = null_mut();
            assert_eq!(tether_batch_new(16, &mut b), TETHER_OK);
            let mut n = 0;
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
            assert_eq!(
                entries(b),
                [(TETHER_EVENT_MESSAGE, 1, 40), (TETHER_EVENT_MESSAGE, 2, 40)]
            );
            assert_eq!(n, 2);
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
            assert_eq!(
                entries(b),
                [(TETHER_EVENT_MESSAGE, 3, 40), (TETHER_EVENT_CLOSED, 0, 0)]
            );
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_CLOSED);
            tether_batch_free(b);
            tether_client_free(c);
        }
    }

    /// An event no batch can hold is refused with a status, stays first in the queue, and
    /// `tether_client_poll` still delivers it.
    #[test]
    fn an_event_larger_than_any_batch_stays_queued_for_poll() {
        TEST_MAX_BATCH_BYTES.with(|m| m.set(10));
        let closed = Event::new(EventKind::Closed);
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let c = client_with(vec![message(1, 40), closed]);
            let mut b = null_mut();
            assert_eq!(tether_batch_new(16, &mut b), TETHER_OK);
            let mut n = 7;
            assert_eq!(
                tether_client_poll_batch(c, 0, b, &mut n),
                TETHER_ERR_MESSAGE_TOO_LARGE
            );
            assert_eq!((n, entries(b).len()), (7, 0));
            let msg = std::ffi::CStr::from_ptr(tether_last_error())
                .to_str()
                .unwrap();
            assert!(msg.contains("tether_client_poll"), "{msg}");
            let mut ev = null_mut();
            assert_eq!(tether_client_poll(c, 0, &mut ev), TETHER_OK);
            assert_eq!(
                (tether_event_kind(ev), tether_event_request_id(ev)),
                (TETHER_EVENT_MESSAGE, 1)
            );
            tether_event_free(ev);
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
            assert_eq!(entries(b), [(TETHER_EVENT_CLOSED, 0, 0)]);
            tether_batch_free(b);
            tether_client_free(c);
        }
    }
}
