//! The batch path: many events per call, described by an array of fixed-layout entries over
//! one packed byte buffer, for bindings whose per-call cost is high (ctypes, JNA).
//!
//! Layout (all little-endian on the supported targets, native alignment, 80 bytes per entry;
//! `tests/c` asserts sizes and offsets): see `tether_batch_entry`. Payloads and command names
//! are copied into the batch's buffer, each distinct command name once per batch; an entry
//! refers to them by offset and length, so a binding can copy the whole buffer out once and
//! slice it, and turn each command name into a string once per batch (keyed by its offset).
//!
//! A lending batch (`tether_batch_new_lending`) packs only the command names: each payload stays
//! where the library received it and is lent by pointer (`tether_batch_payloads`) until the next
//! call, so a C reader pays no copy. The events themselves are kept alive for that long.

use crate::event::Event;
use crate::queue::{Batch, HandOver};
use crate::status::{Error, Status};

use super::boundary::{code, fail, free_handle, out_arg, status_of};
use super::client::{poll_mode, take_batch, tether_client};
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

/// `data_offset` of every entry of a lending batch: its payload is not in the batch buffer;
/// `tether_batch_payloads` lends it.
pub const TETHER_BATCH_DATA_LENT: u64 = u64::MAX;

/// One payload a batch lends: `len` bytes at `ptr`. `ptr` is never NULL (with `len` 0 it
/// addresses nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_bytes {
    /// First byte. Offset 0.
    pub ptr: *const u8,
    /// Number of bytes. Offset 8.
    pub len: usize,
}

/// Most bytes one batch buffer holds: entries locate command names with `u32` offsets. An
/// event is taken off the queue only if it fits, so packing cannot fail after the take.
const MAX_BATCH_BYTES: usize = u32::MAX as usize;

/// Distinct command names a batch finds by a linear search (gomuks has nine; a scan of a few
/// short names costs less than hashing them); names past these go into a map, so a batch of
/// many distinct names still stores each once.
const NAMES_SCANNED: usize = 8;

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
    /// Payloads stay in the events (kept in `events` until the next call) instead of `bytes`.
    lends: bool,
    events: Vec<Event>,
    entries: Vec<tether_batch_entry>,
    /// One per entry, into `bytes` or into the kept events.
    payloads: Vec<tether_bytes>,
    bytes: Vec<u8>,
    /// The app has this batch's events once it polls again or frees the batch: only then do
    /// they move the resume point it persists.
    handed: Option<HandOver>,
}

impl Drop for tether_batch {
    fn drop(&mut self) {
        if let Some(h) = self.handed.take() {
            h.done();
        }
    }
}

impl tether_batch {
    fn new(max: usize, lends: bool) -> Self {
        tether_batch {
            max,
            lends,
            events: Vec::with_capacity(max.min(4096)),
            entries: Vec::with_capacity(max.min(4096)),
            payloads: Vec::with_capacity(max.min(4096)),
            bytes: Vec::new(),
            handed: None,
        }
    }

    fn clear(&mut self) {
        if let Some(h) = self.handed.take() {
            h.done();
        }
        self.events.clear();
        self.entries.clear();
        self.payloads.clear();
        self.bytes.clear();
    }

    /// Copies the taken events into the buffer (a lending batch: their command names only).
    /// The events were taken only while they fit in `max_batch_bytes()`, so every offset fits
    /// its field.
    fn pack(&mut self) {
        // (offset, length) of the names packed so far: a batch carries a few names many times.
        let mut names: Vec<(usize, usize)> = Vec::new();
        let mut more: std::collections::HashMap<Vec<u8>, u32> = Default::default();
        for ev in &self.events {
            let cmd = ev.command().as_bytes();
            let scanned = || {
                names
                    .iter()
                    .find(|&&(at, n)| self.bytes[at..at + n] == *cmd)
                    .map(|&(at, _)| at as u32)
            };
            // Every empty name is the same: offset 0, length 0.
            let command_offset = if cmd.is_empty() {
                0
            } else if let Some(at) = scanned().or_else(|| more.get(cmd).copied()) {
                at
            } else {
                let at = self.bytes.len();
                self.bytes.extend_from_slice(cmd);
                if names.len() < NAMES_SCANNED {
                    names.push((at, cmd.len()));
                } else {
                    more.insert(cmd.to_vec(), at as u32);
                }
                at as u32
            };
            let data_offset = if self.lends {
                TETHER_BATCH_DATA_LENT
            } else {
                let at = self.bytes.len() as u64;
                self.bytes.extend_from_slice(ev.data());
                at
            };
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
        // Pointers only now that `bytes` has stopped growing.
        if self.lends {
            let lent = self.events.iter().map(|ev| tether_bytes {
                ptr: ev.data().as_ptr(),
                len: ev.data().len(),
            });
            self.payloads.extend(lent);
        } else {
            let base = self.bytes.as_ptr();
            let packed = self.entries.iter().map(|e| tether_bytes {
                // SAFETY: every entry's payload lies inside `bytes`.
                ptr: unsafe { base.add(e.data_offset as usize) },
                len: e.data_len as usize,
            });
            self.payloads.extend(packed);
            // The payloads now live in `bytes`; release the received buffers at once.
            self.events.clear();
        }
    }
}

ffi_fn! {
    /// Creates a batch that holds up to `max_events` events (at least 1). `*out` receives a batch
    /// owned by the caller (free with `tether_batch_free`). `TETHER_ERR_INVALID_ARGUMENT` for 0.
    fn tether_batch_new(max_events: usize, out: *mut *mut tether_batch) -> tether_status {
        new_batch(max_events, false, out)
    } ?= code
}

ffi_fn! {
    /// Creates a batch like `tether_batch_new` that lends the payloads where the library
    /// received them instead of copying them into its buffer: for readers that use each payload
    /// in place, a copy saved per event. Each entry's `data_offset` is `TETHER_BATCH_DATA_LENT`
    /// (only the command names are in the buffer); take the payloads from
    /// `tether_batch_payloads`. Until its next `tether_client_poll_batch` or `tether_batch_free`
    /// the batch keeps the taken events' memory alive. `*out` receives a batch owned by the
    /// caller (free with `tether_batch_free`). `TETHER_ERR_INVALID_ARGUMENT` for 0.
    fn tether_batch_new_lending(max_events: usize, out: *mut *mut tether_batch) -> tether_status {
        new_batch(max_events, true, out)
    } ?= code
}

fn new_batch(max_events: usize, lends: bool, out: *mut *mut tether_batch) -> tether_status {
    // NULL first, as everywhere: a NULL is TETHER_ERR_NULL whatever else is wrong.
    status_of(out_arg(out, "out").and_then(|o| {
        if max_events == 0 {
            return Err(Error::new(
                Status::ErrInvalidArgument,
                "max_events must be positive",
            ));
        }
        *o = Box::into_raw(Box::new(tether_batch::new(max_events, lends)));
        Ok(())
    }))
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
        // A wrong mode changes nothing: the batch keeps what it holds (and lends).
        if let Err(e) = poll_mode(h) {
            return fail(e);
        }
        b.clear();
        let (cap, mut used, mut refused) = (max_batch_bytes(), 0usize, 0usize);
        // Sizes only: this runs under the queue lock; the copying happens in `pack`.
        let lends = b.lends;
        let fits = |ev: &Event| {
            let n = ev.command().len() + if lends { 0 } else { ev.data().len() };
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
            Ok((Batch::Taken(_), handed)) => {
                b.handed = handed;
                b.pack();
                Status::Ok
            }
            Ok((Batch::Refused, _)) => {
                return fail(Error::new(
                    Status::ErrMessageTooLarge,
                    format!(
                        "the next event ({refused} bytes) does not fit in a batch (at most \
                         {cap} bytes); it stays queued, take it with tether_client_poll"
                    ),
                ))
            }
            Ok((Batch::Timeout, _)) => Status::Timeout,
            Ok((Batch::Finished, _)) => Status::Closed,
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
    /// `*entries` and `*count` the entries, `*bytes` and `*bytes_len` the buffer they point into
    /// (in a lending batch, the command names only). Pointers are never NULL on success (they
    /// may address 0 items). `TETHER_ERR_NULL` if any argument is NULL; no output is written
    /// then.
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
    let b = batch_ref(batch)?;
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
    /// Lends one `tether_bytes` per entry, in entry order, until the batch's next
    /// `tether_client_poll_batch` or `tether_batch_free`: `*payloads` and `*count` (the entry
    /// count). In a batch from `tether_batch_new` they point into its buffer, in a lending batch
    /// to where the library received each payload; either way the same bytes as
    /// `tether_event_data`. Any thread, but not while another uses the batch. `TETHER_ERR_NULL`
    /// if any argument is NULL; no output is written then.
    fn tether_batch_payloads(
        batch: *const tether_batch,
        payloads: *mut *const tether_bytes,
        count: *mut usize,
    ) -> tether_status {
        status_of(batch_ref(batch).and_then(|b| {
            let outs = (out_arg(payloads, "payloads")?, out_arg(count, "count")?);
            *outs.0 = b.payloads.as_ptr();
            *outs.1 = b.payloads.len();
            Ok(())
        }))
    } ?= code
}

/// The batch behind a caller's pointer, or `ErrNull`.
fn batch_ref<'a>(batch: *const tether_batch) -> Result<&'a tether_batch, Error> {
    // SAFETY: the caller passes a live batch or NULL.
    unsafe { batch.as_ref() }.ok_or_else(|| Error::new(Status::ErrNull, "batch is NULL"))
}

ffi_fn! {
    /// Empties the batch now, as the next `tether_client_poll_batch` into it would: what it
    /// lent is released, and its events count as taken by the app in the resume state
    /// (`tether_client_resume_state`). For a consumer that moves a batch's events elsewhere
    /// before the app sees them, and then calls this. NULL is fine. The batch's thread only.
    fn tether_batch_clear(batch: *mut tether_batch) {
        if let Ok(b) = out_arg(batch, "batch") {
            b.clear();
        }
    } ?= |_| ()
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

    /// The batch's entries and its buffer, as `tether_batch_view` shows them.
    ///
    /// # Safety
    /// `b` is a live batch; the slices live until its next poll or free.
    unsafe fn view<'a>(b: *const tether_batch) -> (&'a [tether_batch_entry], &'a [u8]) {
        let (mut e, mut n, mut bytes, mut len) = (std::ptr::null(), 0, std::ptr::null(), 0);
        assert_eq!(
            tether_batch_view(b, &mut e, &mut n, &mut bytes, &mut len),
            TETHER_OK
        );
        let buf = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(bytes, len)
        };
        (std::slice::from_raw_parts(e, n), buf)
    }

    /// (kind, request id, data length) of each entry.
    unsafe fn entries(b: *const tether_batch) -> Vec<(u32, i64, u64)> {
        view(b)
            .0
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
            let (e, buf) = view(b);
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
            assert_eq!(buf.len(), "sync_completetypingcustom_event".len() + 5 * 3);
            for x in &e[..5] {
                let at = x.data_offset as usize;
                assert_eq!(&buf[at..at + 3], b"xxx");
            }
            tether_batch_free(b);
            tether_client_free(c);
        }
    }

    /// The header's promise holds past the names found by a scan: with twelve distinct
    /// names, each twice, and events without a name, equal names have equal offsets, each
    /// name is stored once, and every empty name is offset 0; copying and lending alike.
    #[test]
    fn a_batch_of_many_distinct_names_still_stores_each_once() {
        let names: Vec<String> = (0..12).map(|i| format!("command_{i:02}")).collect();
        let stream = || {
            let mut events = Vec::new();
            for round in 0..2 {
                for (i, n) in names.iter().enumerate() {
                    let mut e = message(round * 100 + i as i64, 1);
                    e.command = crate::event::command_name(n);
                    events.push(e);
                    events.push(Event::new(EventKind::Connecting));
                }
            }
            events
        };
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let c = client_with(Vec::new());
            for lends in [false, true] {
                (*c).client().queue().push_all(stream());
                let mut b = null_mut();
                let new = if lends {
                    tether_batch_new_lending
                } else {
                    tether_batch_new
                };
                assert_eq!(new(64, &mut b), TETHER_OK);
                let mut n = 0;
                assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
                assert_eq!(n, 48);
                let (e, buf) = view(b);
                let mut offsets = std::collections::HashMap::new();
                for x in e {
                    let at = x.command_offset as usize;
                    let name = &buf[at..at + x.command_len as usize];
                    if name.is_empty() {
                        assert_eq!(x.command_offset, 0);
                        continue;
                    }
                    let first = *offsets.entry(name.to_vec()).or_insert(x.command_offset);
                    assert_eq!(x.command_offset, first, "{}", String::from_utf8_lossy(name));
                }
                assert_eq!(offsets.len(), 12);
                // Each name once; the copying batch adds the 24 one-byte payloads.
                let name_bytes: usize = names.iter().map(String::len).sum();
                assert_eq!(buf.len(), name_bytes + if lends { 0 } else { 24 });
                tether_batch_free(b);
            }
            tether_client_free(c);
        }
    }

    /// Each entry's payload as `tether_batch_payloads` lends it.
    unsafe fn payloads(b: *const tether_batch) -> Vec<Vec<u8>> {
        let (mut p, mut n) = (std::ptr::null(), 0);
        assert_eq!(tether_batch_payloads(b, &mut p, &mut n), TETHER_OK);
        std::slice::from_raw_parts(p, n)
            .iter()
            .map(|x| {
                assert!(!x.ptr.is_null());
                std::slice::from_raw_parts(x.ptr, x.len).to_vec()
            })
            .collect()
    }

    fn distinct(id: i64, len: usize) -> Event {
        let mut e = message(id, len);
        e.data = bytes::Bytes::from(
            (0..len)
                .map(|i| (id as usize + i) as u8)
                .collect::<Vec<_>>(),
        );
        e
    }

    /// A lending batch packs only the command names and lends the events' own payload bytes
    /// (the pointers `tether_event_data` would give), while a copying batch's payloads point
    /// into its buffer: both hand the same bytes to the reader.
    #[test]
    fn a_lending_batch_lends_the_payloads_in_place() {
        let events = || {
            let mut v: Vec<Event> = (1..=4).map(|i| distinct(i, 10 * i as usize)).collect();
            v.push(Event::new(EventKind::Connecting));
            v
        };
        let expected: Vec<Vec<u8>> = events().iter().map(|e| e.data().to_vec()).collect();
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            for lending in [false, true] {
                let evs = events();
                let origins: Vec<*const u8> = evs.iter().map(|e| e.data().as_ptr()).collect();
                let c = client_with(evs);
                let mut b = null_mut();
                let new = if lending {
                    tether_batch_new_lending
                } else {
                    tether_batch_new
                };
                assert_eq!(new(16, &mut b), TETHER_OK);
                let mut n = 0;
                assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
                assert_eq!(payloads(b), expected);
                let (e, buf) = view(b);
                let (mut p, mut pn) = (std::ptr::null(), 0);
                assert_eq!(tether_batch_payloads(b, &mut p, &mut pn), TETHER_OK);
                let p = std::slice::from_raw_parts(p, pn);
                assert_eq!(pn, e.len());
                for (i, (x, lent)) in e.iter().zip(p).enumerate() {
                    assert_eq!(x.data_len as usize, lent.len);
                    if lending {
                        assert_eq!(x.data_offset, TETHER_BATCH_DATA_LENT);
                        if lent.len > 0 {
                            assert_eq!(lent.ptr, origins[i], "lent where it was received");
                        }
                    } else {
                        assert_eq!(lent.ptr, buf.as_ptr().add(x.data_offset as usize));
                    }
                }
                // Lending: only the one command name (the events carry none but "").
                let payload_bytes: usize = expected.iter().map(Vec::len).sum();
                assert_eq!(buf.len(), if lending { 0 } else { payload_bytes });
                // An empty poll empties the payloads as it does the entries.
                assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_TIMEOUT);
                assert!(payloads(b).is_empty());
                tether_batch_free(b);
                tether_client_free(c);
            }
        }
    }

    /// The 4 GiB limit counts what the buffer holds: a lending batch takes payloads however
    /// large, since they stay where they are.
    #[test]
    fn a_lending_batch_counts_only_names_against_the_buffer_limit() {
        TEST_MAX_BATCH_BYTES.with(|m| m.set(100));
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let c = client_with(vec![message(1, 400), message(2, 400), message(3, 400)]);
            let mut b = null_mut();
            assert_eq!(tether_batch_new_lending(16, &mut b), TETHER_OK);
            let mut n = 0;
            assert_eq!(tether_client_poll_batch(c, 0, b, &mut n), TETHER_OK);
            assert_eq!(n, 3);
            assert_eq!(payloads(b), vec![vec![b'x'; 400]; 3]);
            tether_batch_free(b);
            tether_client_free(c);
        }
    }

    /// Misuse of the payload view: NULL anywhere fails and writes nothing.
    #[test]
    fn batch_payloads_rejects_null_and_writes_nothing() {
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let mut b = null_mut();
            assert_eq!(tether_batch_new_lending(1, &mut b), TETHER_OK);
            let keep = 0x10 as *const tether_bytes;
            let (mut p, mut n) = (keep, 7usize);
            assert_eq!(
                tether_batch_payloads(std::ptr::null(), &mut p, &mut n),
                TETHER_ERR_NULL
            );
            assert_eq!(
                tether_batch_payloads(b, null_mut(), &mut n),
                TETHER_ERR_NULL
            );
            assert_eq!(
                tether_batch_payloads(b, &mut p, null_mut()),
                TETHER_ERR_NULL
            );
            assert_eq!((p, n), (keep, 7));
            assert_eq!(tether_batch_payloads(b, &mut p, &mut n), TETHER_OK);
            assert!(!p.is_null() && n == 0);
            let mut none = 0x10 as *mut tether_batch;
            assert_eq!(
                tether_batch_new_lending(0, &mut none),
                TETHER_ERR_INVALID_ARGUMENT
            );
            assert_eq!(none, 0x10 as *mut tether_batch);
            tether_batch_free(b);
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
