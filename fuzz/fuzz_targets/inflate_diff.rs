//! Differential inflate (gomuks-rpc.md §5: one raw-deflate stream per connection, sync-flushed
//! per message). A payload is deflated with sync flushes at fuzzer-chosen frame boundaries; the
//! library's streaming `Inflater`, fed the compressed bytes at different fuzzer-chosen chunk
//! boundaries, must produce exactly what a one-shot decode of the whole stream produces, and
//! both must equal the payload. Arbitrary (corrupt) bytes must give an error, never a panic.
#![no_main]

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use tether::internals::Inflater;

const CAP: usize = 1 << 20;

/// Splits `len` bytes into pieces whose sizes cycle through `sizes` (0 means 1).
fn pieces(len: usize, sizes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < len {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(u8::MAX) as usize;
        let end = (at + n.max(1) * 7).min(len);
        out.push(at..end);
        at = end;
        i += 1;
    }
    out
}

fn deflate_framed(payload: &[u8], frames: &[std::ops::Range<usize>], level: u32) -> Vec<u8> {
    let mut z = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    for f in frames {
        let mut input = &payload[f.clone()];
        loop {
            out.reserve(input.len() + 64);
            let before = z.total_in();
            z.compress_vec(input, &mut out, FlushCompress::Sync)
                .unwrap();
            input = &input[(z.total_in() - before) as usize..];
            // Sync flush is complete once all input is taken and output had spare room left.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0];
    let level = u32::from(data[1] % 10);
    let split = (data[2] as usize).min(data.len() - 3);
    let ctl = &data[3..3 + split];
    let payload = &data[3 + split..];
    let (frame_sizes, chunk_sizes) = ctl.split_at(ctl.len() / 2);

    if mode & 1 == 1 {
        // Raw bytes as a compressed stream: any result but a panic or a cap overrun is fine.
        let mut inf = Inflater::new(CAP);
        for c in pieces(payload.len(), chunk_sizes) {
            let mut out = BytesMut::new();
            match inf.inflate(&payload[c], &mut out) {
                Ok(()) => assert!(out.len() <= CAP),
                Err(_) => break,
            }
        }
        return;
    }

    let frames = pieces(payload.len(), frame_sizes);
    let stream = deflate_framed(payload, &frames, level);

    let mut one_shot = BytesMut::new();
    Inflater::new(CAP)
        .inflate(&stream, &mut one_shot)
        .expect("one-shot decode of a valid stream");
    assert_eq!(
        &one_shot[..],
        payload,
        "one-shot decode differs from payload"
    );

    let mut streamed = BytesMut::new();
    let mut inf = Inflater::new(CAP);
    for c in pieces(stream.len(), chunk_sizes) {
        inf.inflate(&stream[c], &mut streamed)
            .expect("streamed decode of a valid stream");
    }
    assert_eq!(
        &streamed[..],
        &one_shot[..],
        "streamed decode differs from one-shot"
    );
});
