//! gomuks wire codec: per-connection raw inflater, newline splitter and envelope parser.
//!
//! Spec §3.2 and §5: compressed mode sends binary messages that continue one raw-deflate
//! stream (sync-flushed per message); the output is JSON objects each ending in `\n`.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status as ZStatus};
use serde::Deserialize;
use serde_json::value::RawValue;

use tokio_tungstenite::tungstenite::Message;

use crate::status::{Error, Status};

/// One raw-deflate stream for the lifetime of a connection (spec §5: never reset).
pub struct Inflater {
    z: Decompress,
    cap: usize,
}

impl Inflater {
    /// A fresh inflater; `cap` bounds one message's decompressed size.
    pub fn new(cap: usize) -> Inflater {
        Inflater {
            z: Decompress::new(false),
            cap,
        }
    }

    /// Inflates one websocket message, appending to `out`.
    ///
    /// Keeps calling the decoder while it fills the output buffer, because a small
    /// compressed message may expand to many times its size.
    pub fn inflate(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        let start_len = out.len();
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 4096 {
                let grow = (out.len() - start_len)
                    .max(input.len() * 4)
                    .clamp(16 * 1024, 4 << 20);
                out.reserve(grow);
            }
            let before_in = self.z.total_in();
            let before_out = self.z.total_out();
            // Straight into the spare capacity, uninitialised (no zeroing first).
            let spare = out.spare_capacity_mut();
            let spare_len = spare.len();
            let status = self
                .z
                .decompress_uninit(&input[consumed..], spare, FlushDecompress::Sync)
                .map_err(|e| {
                    Error::new(Status::ErrInflate, format!("invalid deflate data: {e}"))
                })?;
            let read = (self.z.total_in() - before_in) as usize;
            let written = (self.z.total_out() - before_out) as usize;
            // SAFETY: zlib initialised the first `written` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + written) };
            consumed += read;
            if out.len() - start_len > self.cap {
                return Err(Error::new(
                    Status::ErrMessageTooLarge,
                    format!(
                        "decompressed message exceeds {} bytes (max_message_bytes)",
                        self.cap
                    ),
                ));
            }
            let output_full = written == spare_len;
            match status {
                ZStatus::StreamEnd if consumed < input.len() => {
                    return Err(Error::new(
                        Status::ErrInflate,
                        "data after the end of the deflate stream",
                    ))
                }
                ZStatus::StreamEnd => return Ok(()),
                _ => {}
            }
            if consumed == input.len() && !output_full {
                return Ok(());
            }
            if read == 0 && written == 0 && !output_full {
                return Err(Error::new(
                    Status::ErrInflate,
                    "deflate stream made no progress",
                ));
            }
        }
    }
}

/// The compressed side of one connection (spec §5): the raw inflater, the buffer it inflates
/// into and the splitter that carries a partial line over to the next message.
///
/// A decoded message of up to [`Decompressor::KEEP_DECODED`] bytes is handed over as it is:
/// its lines are slices of it, and the buffer goes with them. A larger one is copied into a
/// buffer of the connection's [`MessagePool`], which gets it back when the app drops the last
/// event of that message, so the inflate buffer stays ours and a stream of large messages
/// cycles through the same memory. Handing each 160 KB message (16 events of 10 KB) over in a
/// fresh buffer, freed on the app's thread, made glibc give that memory back to the kernel and
/// fault it in again: 8,000-23,000 page faults per 10,000 events for the batch consumers of
/// the C API (bench/NOTES.md, "Compressed 10 KB events: page faults").
pub struct Decompressor {
    inflater: Inflater,
    splitter: LineSplitter,
    scratch: BytesMut,
    pool: Arc<MessagePool>,
    /// Messages of up to `KEEP_DECODED` since the last larger one.
    small_run: u32,
}

impl Decompressor {
    /// Decoded messages up to this size keep their lines in place: a buffer this small is an
    /// allocation the allocator recycles (the faults came with buffers of 128 KiB and more,
    /// glibc's mmap and trim thresholds), and copying 1 KB events out of 17 KB messages cost
    /// a few per cent.
    const KEEP_DECODED: usize = 64 * 1024;
    /// After this many smaller messages in a row a burst of large ones is over: the pool's
    /// spare buffers are freed.
    const BURST_OVER: u32 = 64;

    /// A fresh stream; `cap` bounds one decoded message and one carried partial line.
    pub fn new(cap: usize) -> Decompressor {
        Decompressor {
            inflater: Inflater::new(cap),
            splitter: LineSplitter::new(cap),
            scratch: BytesMut::new(),
            pool: Arc::default(),
            small_run: 0,
        }
    }

    /// Inflates one websocket message; returns the decoded size. Its lines go out with the
    /// next [`Decompressor::lines`].
    pub fn inflate(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.scratch.clear();
        self.inflater.inflate(data, &mut self.scratch)?;
        Ok(self.scratch.len())
    }

    /// Calls `f` with each complete line (without the `\n`) of the message just inflated.
    pub fn lines(&mut self, f: impl FnMut(Bytes) -> Result<(), Error>) -> Result<(), Error> {
        let decoded = if self.scratch.len() <= Self::KEEP_DECODED {
            self.small_run = self.small_run.saturating_add(1);
            if self.small_run == Self::BURST_OVER {
                self.pool.clear();
            }
            self.scratch.split().freeze()
        } else {
            self.small_run = 0;
            let copy = self.pool.copy(&self.scratch);
            self.scratch.clear();
            copy
        };
        self.splitter.feed(decoded, f)
    }
}

/// Buffers for decoded large messages, each given back when the last slice of the message it
/// holds is dropped. Spare buffers of up to [`MessagePool::SPARE_BYTES`] in all wait for the
/// next large message: enough for the 16-32 messages of 160 KB that an app taking events in
/// batches of 256-1,024 gives back at once, or two of the largest gomuks batches (about
/// 256 KiB compressed, spec §5). Buffers beyond that are freed, and so are the spares once
/// smaller messages follow (`Decompressor::BURST_OVER`) or the connection is gone.
#[derive(Default)]
pub struct MessagePool {
    spare: Mutex<Spare>,
}

/// The buffers waiting in a [`MessagePool`] and their capacity in all.
#[derive(Default)]
struct Spare {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl MessagePool {
    const SPARE_BYTES: usize = 4 << 20;

    /// `src` in a buffer of the pool, as bytes that give the buffer back once dropped.
    fn copy(self: &Arc<Self>, src: &[u8]) -> Bytes {
        let mut bytes = {
            let mut spare = self.lock();
            let buffer = spare.buffers.pop().unwrap_or_default();
            spare.bytes -= buffer.capacity();
            buffer
        };
        bytes.clear();
        bytes.extend_from_slice(src);
        Bytes::from_owner(Pooled {
            bytes,
            pool: self.clone(),
        })
    }

    /// Takes `buffer` back if the spares have room for it.
    fn give(&self, buffer: Vec<u8>) {
        let mut spare = self.lock();
        if spare.bytes + buffer.capacity() <= Self::SPARE_BYTES {
            spare.bytes += buffer.capacity();
            spare.buffers.push(buffer);
        }
    }

    /// Frees the spare buffers.
    fn clear(&self) {
        *self.lock() = Spare::default();
    }

    fn lock(&self) -> MutexGuard<'_, Spare> {
        // A panic elsewhere cannot leave the list of spare buffers inconsistent.
        crate::lock(&self.spare)
    }

    /// Spare buffers waiting and their capacity in all (tests).
    #[cfg(test)]
    fn spares(&self) -> (usize, usize) {
        let spare = self.lock();
        (spare.buffers.len(), spare.bytes)
    }
}

/// One decoded message in a buffer of a [`MessagePool`].
struct Pooled {
    bytes: Vec<u8>,
    pool: Arc<MessagePool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.bytes));
    }
}

/// Splits decompressed (or text) bytes into newline-terminated lines, carrying a partial last
/// line over to the next message (the TS client parses across messages; so do we).
pub struct LineSplitter {
    partial: BytesMut,
    cap: usize,
}

impl LineSplitter {
    /// A splitter whose carried partial line may not exceed `cap`.
    pub fn new(cap: usize) -> LineSplitter {
        LineSplitter {
            partial: BytesMut::new(),
            cap,
        }
    }

    /// Feeds one decoded message; calls `f` with each complete line (without the `\n`).
    pub fn feed(
        &mut self,
        data: Bytes,
        mut f: impl FnMut(Bytes) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut rest = data;
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', &rest) {
                None => {
                    self.partial.extend_from_slice(&rest);
                    return self.check_partial();
                }
                Some(i) => {
                    self.partial.extend_from_slice(&rest[..i]);
                    let line = std::mem::take(&mut self.partial).freeze();
                    rest = rest.slice(i + 1..);
                    f(line)?;
                }
            }
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', &rest) {
            if i > start {
                f(rest.slice(start..i))?;
            }
            start = i + 1;
        }
        if start < rest.len() {
            self.partial.extend_from_slice(&rest[start..]);
            self.check_partial()?;
        }
        Ok(())
    }

    fn check_partial(&self) -> Result<(), Error> {
        if self.partial.len() > self.cap {
            return Err(Error::new(
                Status::ErrMessageTooLarge,
                format!(
                    "unterminated server message exceeds {} bytes (max_message_bytes)",
                    self.cap
                ),
            ));
        }
        Ok(())
    }

    /// Bytes of an unfinished line waiting for the next message.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    command: Cow<'a, str>,
    request_id: i64,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A parsed server message: the command, its id and where `data` sits in the line.
#[derive(Debug)]
pub struct Envelope {
    /// `response`, `error`, `pong` or an event name.
    pub command: Cow<'static, str>,
    /// The id: request id for replies, negative or 0 for events.
    pub request_id: i64,
    /// The raw `data` JSON, a zero-copy slice of the line (`null` when absent).
    pub data: Bytes,
}

/// Which kind of server message an envelope is (spec §3.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// `response`.
    Response,
    /// `error`.
    Error,
    /// `pong`.
    Pong,
    /// Anything else is an event.
    Event,
}

impl Envelope {
    /// Classifies the message.
    pub fn kind(&self) -> Kind {
        match &*self.command {
            "response\0" => Kind::Response,
            "error\0" => Kind::Error,
            "pong\0" => Kind::Pong,
            _ => Kind::Event,
        }
    }
}

static NULL: &[u8] = b"null";

/// Parses one line; `data` borrows from `line` without re-serialising.
pub fn parse_envelope(line: &Bytes) -> Result<Envelope, Error> {
    let env: RawEnvelope<'_> = serde_json::from_slice(line).map_err(|e| {
        let status = if e.is_data() {
            Status::ErrProtocol
        } else {
            Status::ErrJson
        };
        Error::new(status, format!("bad server message: {e}"))
    })?;
    let data = match env.data {
        Some(raw) => {
            let s = raw.get().as_bytes();
            let off = s.as_ptr() as usize - line.as_ptr() as usize;
            line.slice(Range {
                start: off,
                end: off + s.len(),
            })
        }
        None => Bytes::from_static(NULL),
    };
    let command = match &*env.command {
        "response" => Cow::Borrowed("response\0"),
        "error" => Cow::Borrowed("error\0"),
        "pong" => Cow::Borrowed("pong\0"),
        other => crate::event::command_name(other),
    };
    Ok(Envelope {
        command,
        request_id: env.request_id,
        data,
    })
}

/// A request envelope (spec §3.1). `data` is JSON the client already validated; empty means
/// `{}`.
pub(crate) fn request_message(id: i64, command: &str, data: &[u8]) -> Message {
    let cmd = serde_json::to_string(command).unwrap_or_else(|_| "\"\"".to_owned());
    let data = match std::str::from_utf8(data) {
        Ok(d) if !d.is_empty() => d,
        _ => "{}",
    };
    Message::text(format!(
        r#"{{"command":{cmd},"request_id":{id},"data":{data}}}"#
    ))
}

/// A `cancel` of request `target` (spec §3.5).
pub(crate) fn cancel_message(id: i64, target: i64, reason: &str) -> Message {
    let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".to_owned());
    Message::text(format!(
        r#"{{"command":"cancel","request_id":{id},"data":{{"request_id":{target},"reason":{reason}}}}}"#
    ))
}

/// A keepalive `ping` acknowledging event `ack` (0: none; spec §6).
pub(crate) fn ping_message(id: i64, ack: i64) -> Message {
    Message::text(format!(
        r#"{{"command":"ping","request_id":{id},"data":{{"last_received_id":{ack}}}}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate_messages(msgs: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut c = Compress::new(Compression::default(), false);
        msgs.iter()
            .map(|m| {
                let mut out = Vec::with_capacity(m.len() + 64);
                let mut consumed = 0;
                loop {
                    out.reserve(1024);
                    let before = c.total_in();
                    c.compress_vec(&m[consumed..], &mut out, FlushCompress::Sync)
                        .unwrap();
                    consumed += (c.total_in() - before) as usize;
                    if consumed == m.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                out
            })
            .collect()
    }

    /// Spec §5: one inflater across messages; each message decodes completely on its own.
    #[test]
    fn spec5_stream_across_messages() {
        let a = br#"{"command":"typing","request_id":0,"data":{"room_id":"!a"}}
"#;
        let b = br#"{"command":"sync_complete","request_id":-1,"data":{"rooms":{}}}
{"command":"sync_complete","request_id":-2,"data":{}}
"#;
        let frames = deflate_messages(&[a, b, a]);
        let mut inf = Inflater::new(1 << 20);
        let mut split = LineSplitter::new(1 << 20);
        let mut ids = Vec::new();
        for f in frames {
            let mut out = BytesMut::new();
            inf.inflate(&f, &mut out).unwrap();
            split
                .feed(out.freeze(), |line| {
                    let env = parse_envelope(&line)?;
                    ids.push((env.command.to_string(), env.request_id, env.data.clone()));
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[1].1, -1);
        assert_eq!(&ids[1].2[..], br#"{"rooms":{}}"#);
        assert_eq!(ids[0].0, "typing\0");
        assert_eq!(split.pending(), 0);
    }

    /// Spec §3.2: `data` is handed over as the server wrote it, so a number no f64 holds
    /// (valid JSON, RFC 8259 §6) reaches the app intact instead of failing the message.
    #[test]
    fn spec3_2_data_keeps_numbers_beyond_f64() {
        let line = Bytes::from_static(
            br#"{"command":"typing","request_id":-3,"data":[1,2e1000000,-123456789012345678901234567890]}"#,
        );
        let env = parse_envelope(&line).unwrap();
        assert_eq!(env.request_id, -3);
        assert_eq!(
            &env.data[..],
            b"[1,2e1000000,-123456789012345678901234567890]"
        );
        // A request id out of range is still refused: it must match a request.
        let line = Bytes::from_static(br#"{"command":"response","request_id":1e400,"data":1}"#);
        assert!(parse_envelope(&line).is_err());
    }

    /// `n` event lines of about `size` bytes each, numbered from `first`.
    fn event_lines(first: i64, n: usize, size: usize) -> Vec<u8> {
        let mut text = Vec::new();
        for i in 0..n as i64 {
            let pad = "x".repeat(size);
            let line = format!(
                "{{\"command\":\"sync_complete\",\"request_id\":{},\"data\":{{\"pad\":\"{pad}\"}}}}\n",
                -(first + i)
            );
            text.extend_from_slice(line.as_bytes());
        }
        text
    }

    /// Inflates `frame` and returns its complete lines.
    fn feed(dec: &mut Decompressor, frame: &[u8]) -> Vec<Bytes> {
        dec.inflate(frame).unwrap();
        let mut lines = Vec::new();
        dec.lines(|l| {
            lines.push(l);
            Ok(())
        })
        .unwrap();
        lines
    }

    /// Spec §5 with messages larger than `KEEP_DECODED`: every line arrives whole (one is cut
    /// across two messages), the lines held from earlier messages keep their bytes, and none
    /// of them lies in the buffer, which inflates every message in the same place.
    #[test]
    fn spec5_large_messages_are_copied_out_and_the_buffer_reused() {
        // Lines of 1 KB and of 6 KB, in messages of 72-95 KB.
        let mut text = event_lines(1, 60, 1000);
        text.extend(event_lines(61, 20, 6000));
        text.extend(event_lines(81, 60, 1000));
        // The first message is the largest, so the buffer never has to grow after it.
        let cut = [0, 95_000, 175_000, text.len()];
        assert!((240_000..260_000).contains(&text.len()));
        let parts: Vec<&[u8]> = cut.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        assert!(parts.iter().all(|p| p.len() > Decompressor::KEEP_DECODED));
        let frames = deflate_messages(&parts);

        let mut dec = Decompressor::new(1 << 20);
        let mut held: Vec<Bytes> = Vec::new();
        let mut starts = Vec::new();
        for f in &frames {
            dec.inflate(f).unwrap();
            starts.push(dec.scratch.as_ptr());
            dec.lines(|line| {
                held.push(line);
                Ok(())
            })
            .unwrap();
        }
        // The lines are the text's, in order, whole, including the ones cut at 95,000 and 175,000.
        let want: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(held.len(), 140);
        assert!(held.iter().zip(&want).all(|(got, want)| &got[..] == *want));
        assert_eq!(dec.splitter.pending(), 0);
        // Each message was inflated where the first one was, although every line is still held.
        assert!(starts.iter().all(|&p| p == starts[0]), "{starts:?}");
        let buffer = starts[0] as usize..starts[0] as usize + dec.scratch.capacity();
        assert!(held
            .iter()
            .all(|l| !buffer.contains(&(l.as_ptr() as usize))));
    }

    /// The pool: a large message's buffer comes back when the last of its lines is dropped,
    /// the next large message is copied into that same buffer, spare buffers never add up to
    /// more than `SPARE_BYTES`, and they are freed once smaller messages follow.
    #[test]
    fn large_message_buffers_come_back_when_their_last_line_is_dropped() {
        let text = event_lines(1, 600, 1000);
        let size = text.len();
        assert!(size > Decompressor::KEEP_DECODED);
        let fit = MessagePool::SPARE_BYTES / size;
        assert!((2..8).contains(&fit));
        let frames = deflate_messages(&vec![&text[..]; fit + 2]);
        let mut dec = Decompressor::new(1 << 20);
        let first = feed(&mut dec, &frames[0]);
        let at = first[0].as_ptr();
        let last = first[599].clone();
        drop(first);
        assert_eq!(dec.pool.spares(), (0, 0), "one line still holds the buffer");
        drop(last);
        assert_eq!(dec.pool.spares(), (1, size));
        let second = feed(&mut dec, &frames[1]);
        assert_eq!(second[0].as_ptr(), at, "the same buffer again");
        assert_eq!(dec.pool.spares(), (0, 0));
        // More messages held at once than the spares take: all of them intact, and once they
        // are dropped only what fits in SPARE_BYTES waits.
        let mut held = vec![second];
        for f in &frames[2..] {
            held.push(feed(&mut dec, f));
        }
        assert!(held
            .iter()
            .all(|m| m.len() == 600 && m[5][..] == held[0][5][..]));
        drop(held);
        assert_eq!(dec.pool.spares(), (fit, fit * size));
        // Once smaller messages follow, the burst is over and the spares are freed.
        let small = event_lines(5000, 1, 100);
        let frames = deflate_messages(&vec![&small[..]; Decompressor::BURST_OVER as usize]);
        let mut dec2 = Decompressor::new(1 << 20);
        std::mem::swap(&mut dec2.pool, &mut dec.pool);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(dec2.pool.spares().0, fit, "after {i} small messages");
            drop(feed(&mut dec2, f));
        }
        assert_eq!(dec2.pool.spares(), (0, 0));
        // A message larger than all the spares may hold is freed, not kept.
        let big = event_lines(1, 4200, 1000);
        assert!(big.len() > MessagePool::SPARE_BYTES);
        let frame = deflate_messages(&[&big]);
        let mut dec = Decompressor::new(8 << 20);
        drop(feed(&mut dec, &frame[0]));
        assert_eq!(dec.pool.spares(), (0, 0));
    }

    /// A message up to `KEEP_DECODED` is handed over as it is: its lines are slices of it.
    #[test]
    fn small_messages_keep_their_lines_in_place() {
        let text = event_lines(1, 5, 300);
        assert!(text.len() <= Decompressor::KEEP_DECODED);
        let frames = deflate_messages(&[&text]);
        let held = feed(&mut Decompressor::new(1 << 20), &frames[0]);
        assert_eq!(held.len(), 5);
        // Back to back in the decoded message, one newline apart.
        for w in held.windows(2) {
            assert_eq!(w[1].as_ptr(), w[0].as_ptr().wrapping_add(w[0].len() + 1));
        }
    }

    /// §10 / ARCHITECTURE.md "Errors": a decompression bomb stops at the cap.
    #[test]
    fn spec5_bomb_hits_cap() {
        let big = vec![b'a'; 4 << 20];
        let frames = deflate_messages(&[&big]);
        assert!(frames[0].len() < 64 * 1024);
        let mut inf = Inflater::new(1 << 20);
        let err = inf.inflate(&frames[0], &mut BytesMut::new()).unwrap_err();
        assert_eq!(err.status(), Status::ErrMessageTooLarge);
        let mut inf = Inflater::new(8 << 20);
        let mut out = BytesMut::new();
        inf.inflate(&frames[0], &mut out).unwrap();
        assert_eq!(out.len(), big.len());
    }

    #[test]
    fn spec5_invalid_deflate_is_an_error() {
        let mut inf = Inflater::new(1 << 20);
        let err = inf
            .inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], &mut BytesMut::new())
            .unwrap_err();
        assert_eq!(err.status(), Status::ErrInflate);
    }

    /// Differential: every chunking of the stream yields the same lines as one-shot decoding.
    #[test]
    fn spec5_chunking_is_transparent() {
        let body: Vec<u8> = (0..300)
            .flat_map(|i| {
                format!(
                    "{{\"command\":\"e\",\"request_id\":-{},\"data\":{{\"n\":{i}}}}}\n",
                    i + 1
                )
                .into_bytes()
            })
            .collect();
        let mut split = LineSplitter::new(1 << 20);
        let mut count = 0;
        for chunk in body.chunks(37) {
            split
                .feed(Bytes::copy_from_slice(chunk), |l| {
                    let e = parse_envelope(&l)?;
                    assert_eq!(e.request_id, -(count + 1));
                    count += 1;
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(count, 300);
    }

    /// §3.2: the envelope fields are typed; a mistyped or missing field is a protocol error.
    #[test]
    fn spec3_bad_envelopes() {
        let cases: &[(&[u8], Status)] = &[
            (b"{", Status::ErrJson),
            (b"not json", Status::ErrJson),
            (br#"{"request_id":1,"data":null}"#, Status::ErrProtocol),
            (
                br#"{"command":"x","request_id":"5","data":null}"#,
                Status::ErrProtocol,
            ),
            (br#"{"command":5,"request_id":1}"#, Status::ErrProtocol),
            (b"{\"command\":\"\xff\",\"request_id\":1}", Status::ErrJson),
        ];
        for (line, st) in cases {
            let e = parse_envelope(&Bytes::copy_from_slice(line)).unwrap_err();
            assert_eq!(e.status(), *st, "{}", String::from_utf8_lossy(line));
        }
        let ok =
            parse_envelope(&Bytes::from_static(br#"{"command":"pong","request_id":7}"#)).unwrap();
        assert_eq!(ok.kind(), Kind::Pong);
        assert_eq!(&ok.data[..], b"null");
    }

    #[test]
    fn oversize_partial_line_is_rejected() {
        let mut split = LineSplitter::new(1024);
        let err = split
            .feed(Bytes::from(vec![b'x'; 2000]), |_| Ok(()))
            .unwrap_err();
        assert_eq!(err.status(), Status::ErrMessageTooLarge);
    }
}
